package firewall

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestRulePlan(t *testing.T) {
	mp := netip.MustParsePrefix
	spec := forwardSpec(mp("10.244.0.0/16"), true)
	off := forwardSpec(netip.Prefix{}, false)
	const (
		jump  = `-m comment --comment "flanneld forward" -j FLANNEL-FWD`
		ruleS = `-s 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT`
		ruleD = `-d 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT`
		other = `-i eth9 -j DROP`
	)
	rewrite := []string{
		":FLANNEL-FWD - [0:0]",
		"-A FLANNEL-FWD " + ruleS,
		"-A FLANNEL-FWD " + ruleD,
	}
	good := []string{ruleS, ruleD}
	for _, tc := range []struct {
		name string
		spec chainSpec
		st   chainState
		al   ruleAliases
		cmds []string
		why  []string
	}{{
		name: "in place",
		spec: spec,
		st:   chainState{exists: true, rules: good, hook: []string{jump, other}},
	}, {
		name: "empty",
		spec: spec,
		st:   chainState{hook: []string{other}},
		cmds: append(slices.Clone(rewrite), "-I FORWARD 1 "+jump),
		why:  []string{"chain missing", "jump from FORWARD missing"},
	}, {
		name: "rule deleted",
		spec: spec,
		st:   chainState{exists: true, rules: []string{ruleD}, hook: []string{jump}},
		cmds: rewrite,
		why:  []string{"chain holds 1 rules that differ from the 2 desired"},
	}, {
		name: "old network",
		spec: spec,
		st:   chainState{exists: true, rules: []string{ruleS, `-d 10.9.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT`}, hook: []string{jump}},
		cmds: rewrite,
		why:  []string{"chain holds 2 rules that differ from the 2 desired"},
	}, {
		name: "reordered",
		spec: spec,
		st:   chainState{exists: true, rules: []string{ruleD, ruleS}, hook: []string{jump}},
		cmds: rewrite,
		why:  []string{"chain holds 2 rules that differ from the 2 desired"},
	}, {
		name: "jump not first",
		spec: spec,
		st:   chainState{exists: true, rules: good, hook: []string{other, jump}},
		cmds: []string{"-D FORWARD " + jump, "-I FORWARD 1 " + jump},
		why:  []string{"jump not first in FORWARD"},
	}, {
		name: "duplicate jump",
		spec: spec,
		st:   chainState{exists: true, rules: good, hook: []string{jump, other, jump}},
		cmds: []string{"-D FORWARD " + jump, "-D FORWARD " + jump, "-I FORWARD 1 " + jump},
		why:  []string{"2 jumps in FORWARD"},
	}, {
		name: "foreign jump to our chain",
		spec: spec,
		st:   chainState{exists: true, rules: good, hook: []string{"-i eth0 -j FLANNEL-FWD"}},
		cmds: []string{"-D FORWARD -i eth0 -j FLANNEL-FWD", "-I FORWARD 1 " + jump},
		why:  []string{"jump differs: -i eth0 -j FLANNEL-FWD"},
	}, {
		name: "printed differently, alias known",
		spec: spec,
		st:   chainState{exists: true, rules: []string{ruleS, "-d 10.244.0.0/16 -m comment --comment flanneld-forward -j ACCEPT"}, hook: []string{jump}},
		al:   ruleAliases{ruleD: "-d 10.244.0.0/16 -m comment --comment flanneld-forward -j ACCEPT"},
	}, {
		name: "off, in place",
		spec: off,
		st:   chainState{exists: true, rules: good, hook: []string{other, jump}},
		cmds: []string{"-D FORWARD " + jump, ":FLANNEL-FWD - [0:0]", "-X FLANNEL-FWD"},
		why:  []string{"feature off: removing chain and jump"},
	}, {
		name: "off, nothing there",
		spec: off,
		st:   chainState{hook: []string{other}},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			al := tc.al
			if al == nil {
				al = ruleAliases{}
			}
			cmds, why := planChain(tc.spec, tc.st, al)
			if !slices.Equal(cmds, tc.cmds) {
				t.Errorf("cmds:\n got %s\nwant %s", strings.Join(cmds, "\n     "), strings.Join(tc.cmds, "\n     "))
			}
			if !slices.Equal(why, tc.why) {
				t.Errorf("why: got %q, want %q", why, tc.why)
			}
		})
	}
}

func TestRuleLearn(t *testing.T) {
	spec := forwardSpec(netip.MustParsePrefix("10.244.0.0/16"), true)
	printed := "-d 10.244.0.0/16 -m comment --comment flanneld-forward -j ACCEPT"
	st := chainState{exists: true, rules: []string{ruleKey(spec.rules[0]), printed}, hook: []string{ruleKey(spec.jump)}}
	al := ruleAliases{}
	if cmds, _ := planChain(spec, st, al); len(cmds) == 0 {
		t.Fatal("plan found nothing to do before learning")
	}
	if got := learnAliases(spec, st, al); len(got) != 1 {
		t.Fatalf("learned %q, want one alias", got)
	}
	if cmds, why := planChain(spec, st, al); len(cmds) > 0 {
		t.Errorf("plan after learning: %q (%q)", cmds, why)
	}
	if got := learnAliases(spec, st, al); len(got) != 0 {
		t.Errorf("learned again: %q", got)
	}
}
