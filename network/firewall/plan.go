package firewall

import (
	"fmt"
	"strings"
)

// chainState is what the kernel holds for one chainSpec, as rule keys.
type chainState struct {
	exists bool
	rules  []string // our chain, in order
	hook   []string // the built-in chain, in order
}

// ruleAliases maps the key of one of our rules to the form some iptables binary
// prints it in, when the two differ (see the design notes).
type ruleAliases map[string]string

func (al ruleAliases) same(want, got string) bool {
	return got == want || (al[want] != "" && al[want] == got)
}

// jumpsTo returns the positions of the rules of hook that jump to chain.
func jumpsTo(hook []string, chain string) []int {
	var idx []int
	for i, r := range hook {
		if strings.Contains(" "+r+" ", " -j "+chain+" ") {
			idx = append(idx, i)
		}
	}
	return idx
}

// planChain returns the iptables-restore commands (without the table header and
// COMMIT) that turn st into spec, and why they are needed; both are empty
// when st already matches spec.
func planChain(spec chainSpec, st chainState, al ruleAliases) (cmds, why []string) {
	jump := ruleKey(spec.jump)
	jumps := jumpsTo(st.hook, spec.chain)
	if !spec.on {
		for _, i := range jumps {
			cmds = append(cmds, "-D "+spec.hook+" "+st.hook[i])
		}
		if st.exists {
			cmds = append(cmds, ":"+spec.chain+" - [0:0]", "-X "+spec.chain)
		}
		if len(cmds) > 0 {
			why = append(why, "feature off: removing chain and jump")
		}
		return cmds, why
	}

	switch {
	case !st.exists:
		why = append(why, "chain missing")
	case !sameRules(spec.rules, st.rules, al):
		why = append(why, fmt.Sprintf("chain holds %d rules that differ from the %d desired", len(st.rules), len(spec.rules)))
	}
	if len(why) > 0 {
		cmds = append(cmds, ":"+spec.chain+" - [0:0]")
		for _, r := range spec.rules {
			cmds = append(cmds, "-A "+spec.chain+" "+ruleKey(r))
		}
	}

	switch {
	case len(jumps) == 0:
		why = append(why, "jump from "+spec.hook+" missing")
	case jumps[0] != 0:
		why = append(why, "jump not first in "+spec.hook)
	case len(jumps) > 1:
		why = append(why, fmt.Sprintf("%d jumps in %s", len(jumps), spec.hook))
	case !al.same(jump, st.hook[0]):
		why = append(why, "jump differs: "+st.hook[0])
	default:
		return cmds, why
	}
	for _, i := range jumps {
		cmds = append(cmds, "-D "+spec.hook+" "+st.hook[i])
	}
	cmds = append(cmds, "-I "+spec.hook+" 1 "+jump)
	return cmds, why
}

func sameRules(want [][]string, got []string, al ruleAliases) bool {
	if len(want) != len(got) {
		return false
	}
	for i, w := range want {
		if !al.same(ruleKey(w), got[i]) {
			return false
		}
	}
	return true
}

// learnAliases records in al how iptables printed the rules we just wrote, where
// that differs from our keys, and returns the new aliases as "ours => printed".
func learnAliases(spec chainSpec, st chainState, al ruleAliases) []string {
	if !spec.on {
		return nil
	}
	var learned []string
	add := func(want, got string) {
		if got != want && al[want] != got {
			al[want] = got
			learned = append(learned, want+" => "+got)
		}
	}
	if len(st.rules) == len(spec.rules) {
		for i, r := range spec.rules {
			add(ruleKey(r), st.rules[i])
		}
	}
	if j := jumpsTo(st.hook, spec.chain); len(j) == 1 && j[0] == 0 {
		add(ruleKey(spec.jump), st.hook[0])
	}
	return learned
}
