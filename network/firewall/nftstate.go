package firewall

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"

	"sigs.k8s.io/knftables"
)

// nftTableState is what the kernel holds for one of our tables.
type nftTableState struct {
	exists bool
	chains map[string]nftChainState
	other  []string // objects other than chains ("set x"): never ours
}

// nftChainState is one listed chain.
type nftChainState struct {
	base  string   // as nftBaseKey, "" for a regular chain
	rules []string // rule keys, in order
}

// nftDiff says why the kernel's st is not t, nothing when it is.
func nftDiff(t nftTable, st nftTableState, al ruleAliases) []string {
	if !t.on {
		if st.exists {
			return []string{nftNotWanted}
		}
		return nil
	}
	if !st.exists {
		return []string{"table missing"}
	}
	var why []string
	for _, o := range st.other {
		why = append(why, o+" is not ours")
	}
	wanted := map[string]bool{}
	for _, c := range t.chains {
		wanted[c.name] = true
		got, ok := st.chains[c.name]
		switch {
		case !ok:
			why = append(why, "chain "+c.name+" missing")
		case got.base != c.base(t.family):
			why = append(why, fmt.Sprintf("chain %s is %q, want %q", c.name, got.base, c.base(t.family)))
		case !sameNFTRules(c.rules, got.rules, al):
			why = append(why, fmt.Sprintf("chain %s holds %d rules that differ from the %d desired", c.name, len(got.rules), len(c.rules)))
		}
	}
	var extra []string
	for name := range st.chains {
		if !wanted[name] {
			extra = append(extra, "chain "+name+" not wanted")
		}
	}
	sort.Strings(extra)
	return append(why, extra...)
}

func sameNFTRules(want []nftRule, got []string, al ruleAliases) bool {
	if len(want) != len(got) {
		return false
	}
	for i, w := range want {
		if !al.same(w.key(), got[i]) {
			return false
		}
	}
	return true
}

// learnNFTAliases records in al how nft listed the rules of t just written,
// where that differs from our keys, and returns the new aliases as "ours =>
// listed" (see the iptables learnAliases).
func learnNFTAliases(t nftTable, st nftTableState, al ruleAliases) []string {
	var learned []string
	for _, c := range t.chains {
		got, ok := st.chains[c.name]
		if !ok || len(got.rules) != len(c.rules) {
			continue
		}
		for i, r := range c.rules {
			if want := r.key(); got.rules[i] != want && al[want] != got.rules[i] {
				al[want] = got.rules[i]
				learned = append(learned, want+" => "+got.rules[i])
			}
		}
	}
	return learned
}

// fakeTableState reads a table of knftables' Fake (for tests) as the real
// reader reads the kernel's.
func fakeTableState(fake *knftables.Fake, family knftables.Family, name string) nftTableState {
	fake.RLock()
	defer fake.RUnlock()
	ft := fake.Tables[family][name]
	if ft == nil {
		return nftTableState{}
	}
	st := nftTableState{exists: true, chains: map[string]nftChainState{}}
	for cname, fc := range ft.Chains {
		var cs nftChainState
		if fc.Type != nil && fc.Hook != nil && fc.Priority != nil {
			prio, err := knftables.ParsePriority(family, string(*fc.Priority))
			if err != nil {
				prio = math.MinInt32
			}
			policy := "accept"
			if fc.Policy != nil {
				policy = string(*fc.Policy)
			}
			cs.base = nftBaseKey(string(*fc.Type), string(*fc.Hook), prio, policy)
		}
		for _, r := range fc.Rules {
			comment := ""
			if r.Comment != nil {
				comment = *r.Comment
			}
			cs.rules = append(cs.rules, nftRuleKey(r.Rule, comment))
		}
		st.chains[cname] = cs
	}
	for kind, names := range map[string][]string{"set": keys(ft.Sets), "map": keys(ft.Maps),
		"flowtable": keys(ft.Flowtables), "counter": keys(ft.Counters)} {
		for _, n := range names {
			st.other = append(st.other, kind+" "+n)
		}
	}
	sort.Strings(st.other)
	return st
}

func keys[V any](m map[string]V) []string {
	k := make([]string, 0, len(m))
	for n := range m {
		k = append(k, n)
	}
	return slices.Sorted(slices.Values(k))
}

// String renders st for test failures and logs.
func (st nftTableState) String() string {
	if !st.exists {
		return "(no table)"
	}
	var b strings.Builder
	for _, name := range keys(st.chains) {
		c := st.chains[name]
		fmt.Fprintf(&b, "chain %s { %s\n", name, c.base)
		for _, r := range c.rules {
			fmt.Fprintf(&b, "\t%s\n", r)
		}
		b.WriteString("}\n")
	}
	for _, o := range st.other {
		fmt.Fprintf(&b, "%s\n", o)
	}
	return b.String()
}

// nftNotWanted is why a table of ours is deleted.
const nftNotWanted = "not wanted, removed"
