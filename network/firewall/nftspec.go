package firewall

import (
	"fmt"
	"net/netip"
	"strconv"

	"sigs.k8s.io/knftables"
)

// The nftables layout is upstream flannel's (so its tables are recognised
// and replaced, not doubled): one table per family, each holding up to two
// base chains. Rule comments are ours.
const (
	nftTableV4   = "flannel-ipv4"
	nftTableV6   = "flannel-ipv6"
	nftMasqChain = "postrtg"
	nftFwdChain  = "forward"

	nftTableComment = "flanneld: ip-masq and forwarding rules"
)

// nftTable is one family's table of ours. With on false the table must not
// exist (the family is off, or both features are).
type nftTable struct {
	family knftables.Family
	name   string
	on     bool
	chains []nftChain
}

// nftChain is one base chain of ours.
type nftChain struct {
	name     string
	typ      knftables.BaseChainType
	hook     knftables.BaseChainHook
	priority knftables.BaseChainPriority
	comment  string
	rules    []nftRule
}

// nftRule is one rule in nft syntax, written in the form nftStmtText
// prints listed rules in, so the two compare as strings.
type nftRule struct{ rule, comment string }

// key is how rules are compared: the rule and its comment.
func (r nftRule) key() string { return nftRuleKey(r.rule, r.comment) }

func nftRuleKey(rule, comment string) string {
	if comment == "" {
		return rule
	}
	return rule + " comment " + strconv.Quote(comment)
}

// base is how a base chain's kernel attributes are compared, e.g. "type nat
// hook postrouting priority 100 policy accept".
func (c nftChain) base(family knftables.Family) string {
	prio, err := knftables.ParsePriority(family, string(c.priority))
	if err != nil {
		panic(fmt.Sprintf("nft chain %s: %v", c.name, err)) // our constants only
	}
	return nftBaseKey(string(c.typ), string(c.hook), prio, "accept")
}

func nftBaseKey(typ, hook string, prio int, policy string) string {
	return fmt.Sprintf("type %s hook %s priority %d policy %s", typ, hook, prio, policy)
}

// nftTables is the whole desired nftables state for cfg: the IPv4 table,
// then the IPv6 one. randomFully says whether nft and the kernel support
// "masquerade fully-random".
func nftTables(cfg RuleConfig, randomFully bool) []nftTable {
	rf := randomFully && !cfg.FullyRandomDisable
	return []nftTable{
		nftFamilyTable(knftables.IPv4Family, nftTableV4, cfg.Network, cfg.Subnet, multicastV4, cfg, rf),
		nftFamilyTable(knftables.IPv6Family, nftTableV6, cfg.IPv6Network, cfg.IPv6Subnet, multicastV6, cfg, rf),
	}
}

func nftFamilyTable(family knftables.Family, name string, network, subnet, multicast netip.Prefix, cfg RuleConfig, randomFully bool) nftTable {
	t := nftTable{family: family, name: name}
	if !network.IsValid() {
		return t // upstream leaves an empty flannel-ipv6 when IPv6 is off; we remove it
	}
	if cfg.Masquerade {
		t.chains = append(t.chains, nftMasq(family, network, subnet, multicast, randomFully))
	}
	if cfg.Forward {
		t.chains = append(t.chains, nftForward(family, network))
	}
	t.on = len(t.chains) > 0
	return t
}

// nftMasq is ip-masq for the pair network, subnet, with the meaning of the
// iptables chain FLANNEL-POSTRTG, rule by rule.
func nftMasq(family knftables.Family, network, subnet, multicast netip.Prefix, randomFully bool) nftChain {
	n, s, m := network.Masked().String(), subnet.Masked().String(), multicast.String()
	src, dst := string(family)+" saddr ", string(family)+" daddr "
	masq := "masquerade"
	if randomFully {
		masq += " fully-random"
	}
	return nftChain{
		name: nftMasqChain, typ: knftables.NATType, hook: knftables.PostroutingHook, priority: knftables.SNATPriority,
		comment: "flanneld: ip-masq",
		rules: []nftRule{
			{"meta mark & 0x4000 == 0x4000 return", "kube-proxy masquerades what it marked"},
			{src + s + " " + dst + n + " return", "pod to pod keeps its address"},
			{src + n + " " + dst + s + " return", "pod to pod keeps its address"},
			{src + "!= " + n + " " + dst + s + " return", "outside to a local pod keeps its source"},
			{src + n + " " + dst + "!= " + m + " " + masq, "pod to the outside, multicast excepted"},
			{src + "!= " + n + " " + dst + n + " " + masq, "host or outside to a remote pod"},
		},
	}
}

// nftForward accepts forwarded traffic from and to network, as the iptables
// chain FLANNEL-FWD does.
func nftForward(family knftables.Family, network netip.Prefix) nftChain {
	n := network.Masked().String()
	return nftChain{
		name: nftFwdChain, typ: knftables.FilterType, hook: knftables.ForwardHook, priority: knftables.FilterPriority,
		comment: "flanneld: forward rules",
		rules: []nftRule{
			{string(family) + " saddr " + n + " accept", "from the pod network"},
			{string(family) + " daddr " + n + " accept", "to the pod network"},
		},
	}
}

// nftWrite adds to tx what replaces the kernel's table with t: the table is
// added (a no-op when it exists) and deleted, so whatever it held goes,
// then, when t is on, created anew with its chains and rules. The kernel
// applies the transaction at once: no packet sees the table half-written.
func nftWrite(tx *knftables.Transaction, t nftTable) {
	tx.Add(&knftables.Table{Family: t.family, Name: t.name})
	tx.Delete(&knftables.Table{Family: t.family, Name: t.name})
	if !t.on {
		return
	}
	tx.Add(&knftables.Table{Family: t.family, Name: t.name, Comment: knftables.PtrTo(nftTableComment)})
	for _, c := range t.chains {
		tx.Add(&knftables.Chain{Family: t.family, Table: t.name, Name: c.name,
			Type: knftables.PtrTo(c.typ), Hook: knftables.PtrTo(c.hook), Priority: knftables.PtrTo(c.priority),
			Comment: knftables.PtrTo(c.comment)})
		for _, r := range c.rules {
			tx.Add(&knftables.Rule{Family: t.family, Table: t.name, Chain: c.name, Rule: r.rule, Comment: knftables.PtrTo(r.comment)})
		}
	}
}
