package firewall

import (
	"bytes"
	"context"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flanneld-go/flannel/internal/netnstest"
)

// Fast tests of the pure logic.

func ruleKeys(rules [][]string) []string {
	var out []string
	for _, r := range rules {
		out = append(out, ruleKey(r))
	}
	return out
}

func TestRuleSpecs(t *testing.T) {
	mp := netip.MustParsePrefix
	for _, tc := range []struct {
		name string
		spec chainSpec
		jump string
		want []string
	}{{
		name: "masq v4",
		spec: masqSpec(mp("10.244.0.0/16"), mp("10.244.3.0/24"), multicastV4, true, true),
		jump: `-m comment --comment "flanneld masq" -j FLANNEL-POSTRTG`,
		want: []string{
			`-m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN`,
			`-s 10.244.3.0/24 -d 10.244.0.0/16 -m comment --comment "flanneld masq" -j RETURN`,
			`-s 10.244.0.0/16 -d 10.244.3.0/24 -m comment --comment "flanneld masq" -j RETURN`,
			`! -s 10.244.0.0/16 -d 10.244.3.0/24 -m comment --comment "flanneld masq" -j RETURN`,
			`-s 10.244.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully`,
			`! -s 10.244.0.0/16 -d 10.244.0.0/16 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully`,
		},
	}, {
		name: "masq v4, subnet given as its gateway address, old iptables",
		spec: masqSpec(mp("10.244.0.0/16"), mp("10.244.3.1/24"), multicastV4, false, true),
		jump: `-m comment --comment "flanneld masq" -j FLANNEL-POSTRTG`,
		want: []string{
			`-m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN`,
			`-s 10.244.3.0/24 -d 10.244.0.0/16 -m comment --comment "flanneld masq" -j RETURN`,
			`-s 10.244.0.0/16 -d 10.244.3.0/24 -m comment --comment "flanneld masq" -j RETURN`,
			`! -s 10.244.0.0/16 -d 10.244.3.0/24 -m comment --comment "flanneld masq" -j RETURN`,
			`-s 10.244.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "flanneld masq" -j MASQUERADE`,
			`! -s 10.244.0.0/16 -d 10.244.0.0/16 -m comment --comment "flanneld masq" -j MASQUERADE`,
		},
	}, {
		name: "masq v6",
		spec: masqSpec(mp("fd00:10:244::/56"), mp("fd00:10:244:3::/64"), multicastV6, true, true),
		jump: `-m comment --comment "flanneld masq" -j FLANNEL-POSTRTG`,
		want: []string{
			`-m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN`,
			`-s fd00:10:244:3::/64 -d fd00:10:244::/56 -m comment --comment "flanneld masq" -j RETURN`,
			`-s fd00:10:244::/56 -d fd00:10:244:3::/64 -m comment --comment "flanneld masq" -j RETURN`,
			`! -s fd00:10:244::/56 -d fd00:10:244:3::/64 -m comment --comment "flanneld masq" -j RETURN`,
			`-s fd00:10:244::/56 ! -d ff00::/8 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully`,
			`! -s fd00:10:244::/56 -d fd00:10:244::/56 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully`,
		},
	}, {
		name: "masq off",
		spec: masqSpec(netip.Prefix{}, netip.Prefix{}, multicastV4, true, false),
		jump: `-m comment --comment "flanneld masq" -j FLANNEL-POSTRTG`,
	}, {
		name: "forward v4",
		spec: forwardSpec(mp("10.244.0.0/16"), true),
		jump: `-m comment --comment "flanneld forward" -j FLANNEL-FWD`,
		want: []string{
			`-s 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT`,
			`-d 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT`,
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ruleKey(tc.spec.jump); got != tc.jump {
				t.Errorf("jump:\n got %s\nwant %s", got, tc.jump)
			}
			if got := ruleKeys(tc.spec.rules); !slices.Equal(got, tc.want) {
				t.Errorf("rules:\n got %s\nwant %s", strings.Join(got, "\n     "), strings.Join(tc.want, "\n     "))
			}
		})
	}
}

func TestRuleKey(t *testing.T) {
	for _, tc := range []struct{ line, want string }{
		{`-A X -s 10.244.0.0/16 -j ACCEPT`, `-s 10.244.0.0/16 -j ACCEPT`},
		{`-A X -s 10.0.0.1 -d 10.1.2.3/16 -j RETURN`, `-s 10.0.0.1/32 -d 10.1.0.0/16 -j RETURN`},
		{`-A X --source 10.0.0.1/32 --destination fd00:0010::1 -j RETURN`, `-s 10.0.0.1/32 -d fd00:10::1/128 -j RETURN`},
		{`-A X -m comment --comment "flanneld masq" -j RETURN`, `-m comment --comment "flanneld masq" -j RETURN`},
		{`-A X -m comment --comment flanneld -j RETURN`, `-m comment --comment flanneld -j RETURN`},
		{`-A X -m comment --comment "say \"hi\"" -j RETURN`, `-m comment --comment "say \"hi\"" -j RETURN`},
		{`-A X  -s 10.0.0.0/8   -j ACCEPT -c 12 3400`, `-s 10.0.0.0/8 -j ACCEPT`},
		{`-A X ! -d 224.0.0.0/4 -j MASQUERADE --random-fully`, `! -d 224.0.0.0/4 -j MASQUERADE --random-fully`},
	} {
		args := splitArgs(tc.line)
		if got := ruleKey(args[2:]); got != tc.want {
			t.Errorf("ruleKey(%s)\n got %s\nwant %s", tc.line, got, tc.want)
		}
	}
}

func TestRuleListedKeys(t *testing.T) {
	lines := []string{
		"-P POSTROUTING ACCEPT",
		"-N FLANNEL-POSTRTG",
		`-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG`,
		"-A FLANNEL-POSTRTG -s 10.0.0.1/32 -j RETURN",
		"-A POSTROUTING -s 192.0.2.0/24 -j MASQUERADE",
	}
	want := []string{`-m comment --comment "flanneld masq" -j FLANNEL-POSTRTG`, "-s 192.0.2.0/24 -j MASQUERADE"}
	if got := listedKeys(lines, "POSTROUTING"); !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestRuleConfigValidate(t *testing.T) {
	mp := netip.MustParsePrefix
	for _, tc := range []struct {
		name string
		cfg  RuleConfig
		ok   bool
	}{
		{"v4", RuleConfig{Network: mp("10.244.0.0/16"), Subnet: mp("10.244.3.0/24")}, true},
		{"v4 gateway form", RuleConfig{Network: mp("10.244.0.0/16"), Subnet: mp("10.244.3.1/24")}, true},
		{"dual", RuleConfig{Network: mp("10.244.0.0/16"), Subnet: mp("10.244.3.0/24"),
			IPv6Network: mp("fd00::/56"), IPv6Subnet: mp("fd00:0:0:3::/64")}, true},
		{"no v4", RuleConfig{IPv6Network: mp("fd00::/56"), IPv6Subnet: mp("fd00:0:0:3::/64")}, false},
		{"subnet outside", RuleConfig{Network: mp("10.244.0.0/16"), Subnet: mp("10.245.3.0/24")}, false},
		{"subnet wider", RuleConfig{Network: mp("10.244.0.0/16"), Subnet: mp("10.0.0.0/8")}, false},
		{"v6 in v4 fields", RuleConfig{Network: mp("fd00::/56"), Subnet: mp("fd00:0:0:3::/64")}, false},
		{"v6 half set", RuleConfig{Network: mp("10.244.0.0/16"), Subnet: mp("10.244.3.0/24"), IPv6Network: mp("fd00::/56")}, false},
		{"v4 in v6 fields", RuleConfig{Network: mp("10.244.0.0/16"), Subnet: mp("10.244.3.0/24"),
			IPv6Network: mp("10.0.0.0/8"), IPv6Subnet: mp("10.0.0.0/24")}, false},
	} {
		if err := tc.cfg.validate(); (err == nil) != tc.ok {
			t.Errorf("%s: validate() = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

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

// Privileged tests, in the private namespace of TestMain.

// backend names the binaries of one iptables backend.
type ipBackend struct{ v4, v6 string }

var (
	nftBackend    = ipBackend{"iptables", "ip6tables"}
	legacyBackend = ipBackend{"iptables-legacy", "ip6tables-legacy"}
)

func (b ipBackend) bin(v6 bool) string {
	if v6 {
		return b.v6
	}
	return b.v4
}

func iptCmd(t *testing.T, bin string, args ...string) string {
	t.Helper()
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", bin, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// resetIPTables empties the nat and filter tables of b now and when t ends.
func resetIPTables(t *testing.T, b ipBackend) {
	t.Helper()
	reset := func() {
		for _, bin := range []string{b.v4, b.v6} {
			for _, table := range []string{"nat", "filter"} {
				iptCmd(t, bin, "-t", table, "-F")
				iptCmd(t, bin, "-t", table, "-X")
			}
		}
	}
	reset()
	t.Cleanup(reset)
}

// listChain returns iptables -S CHAIN, nil when the chain does not exist.
func listChain(t *testing.T, bin, table, chain string) []string {
	t.Helper()
	if err := exec.Command(bin, "-t", table, "-S", chain, "1").Run(); err != nil {
		return nil
	}
	out, err := exec.Command(bin, "-t", table, "-S", chain).Output() // stdout: no legacy-tables warning
	if err != nil {
		t.Fatalf("%s -t %s -S %s: %v", bin, table, chain, err)
	}
	return strings.Split(strings.TrimSpace(string(out)), "\n")
}

// listTable returns iptables -t TABLE -S.
func listTable(t *testing.T, bin, table string) string {
	t.Helper()
	out, err := exec.Command(bin, "-t", table, "-S").Output()
	if err != nil {
		t.Fatalf("%s -t %s -S: %v", bin, table, err)
	}
	return string(out)
}

var (
	fwCfgV4 = RuleConfig{
		Network: netip.MustParsePrefix("10.244.0.0/16"), Subnet: netip.MustParsePrefix("10.244.3.0/24"),
		Masquerade: true, Forward: true,
	}
	fwCfgDual = RuleConfig{
		Network: netip.MustParsePrefix("10.244.0.0/16"), Subnet: netip.MustParsePrefix("10.244.3.0/24"),
		IPv6Network: netip.MustParsePrefix("fd00:10:244::/56"), IPv6Subnet: netip.MustParsePrefix("fd00:10:244:3::/64"),
		Masquerade: true, Forward: true,
	}
)

// wantChains is the iptables -S output our chains must show for one family
// of cfg (the family given by v6).
func wantChains(cfg RuleConfig, v6, randomFully bool) (masq, fwd []string) {
	n, s, m := cfg.Network.String(), cfg.Subnet.String(), "224.0.0.0/4"
	if v6 {
		n, s, m = cfg.IPv6Network.String(), cfg.IPv6Subnet.String(), "ff00::/8"
	}
	rf := ""
	if randomFully {
		rf = " --random-fully"
	}
	c := ` -m comment --comment "flanneld masq"`
	if cfg.Masquerade {
		masq = []string{
			"-N FLANNEL-POSTRTG",
			"-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000" + c + " -j RETURN",
			"-A FLANNEL-POSTRTG -s " + s + " -d " + n + c + " -j RETURN",
			"-A FLANNEL-POSTRTG -s " + n + " -d " + s + c + " -j RETURN",
			"-A FLANNEL-POSTRTG ! -s " + n + " -d " + s + c + " -j RETURN",
			"-A FLANNEL-POSTRTG -s " + n + " ! -d " + m + c + " -j MASQUERADE" + rf,
			"-A FLANNEL-POSTRTG ! -s " + n + " -d " + n + c + " -j MASQUERADE" + rf,
		}
	}
	if cfg.Forward {
		fwd = []string{
			"-N FLANNEL-FWD",
			"-A FLANNEL-FWD -s " + n + ` -m comment --comment "flanneld forward" -j ACCEPT`,
			"-A FLANNEL-FWD -d " + n + ` -m comment --comment "flanneld forward" -j ACCEPT`,
		}
	}
	return masq, fwd
}

const (
	masqJump = `-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG`
	fwdJump  = `-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD`
)

// checkRules fails t unless the kernel holds exactly cfg's rules for one
// family, with each jump the first rule of its hook, once.
func checkRules(t *testing.T, f *Firewall, b ipBackend, cfg RuleConfig, v6 bool) {
	t.Helper()
	fam := f.v4
	if v6 {
		fam = f.v6
	}
	bin := b.bin(v6)
	wantMasq, wantFwd := wantChains(cfg, v6, fam.ipt.HasRandomFully())
	if got := listChain(t, bin, "nat", masqChain); !slices.Equal(got, wantMasq) {
		t.Errorf("%s -t nat -S %s:\n%s\nwant:\n%s", bin, masqChain, strings.Join(got, "\n"), strings.Join(wantMasq, "\n"))
	}
	if got := listChain(t, bin, "filter", fwdChain); !slices.Equal(got, wantFwd) {
		t.Errorf("%s -t filter -S %s:\n%s\nwant:\n%s", bin, fwdChain, strings.Join(got, "\n"), strings.Join(wantFwd, "\n"))
	}
	for _, h := range []struct {
		table, hook, jump string
		on                bool
	}{{"nat", "POSTROUTING", masqJump, cfg.Masquerade}, {"filter", "FORWARD", fwdJump, cfg.Forward}} {
		got := listChain(t, bin, h.table, h.hook)
		n := 0
		for _, l := range got {
			if strings.Contains(l, "FLANNEL-") {
				n++
			}
		}
		switch {
		case h.on && (n != 1 || len(got) < 2 || got[1] != h.jump):
			t.Errorf("%s -t %s -S %s: want %q once and first:\n%s", bin, h.table, h.hook, h.jump, strings.Join(got, "\n"))
		case !h.on && n != 0:
			t.Errorf("%s -t %s -S %s: want no jump of ours:\n%s", bin, h.table, h.hook, strings.Join(got, "\n"))
		}
	}
}

func mustEnsure(t *testing.T, f *Firewall, cfg RuleConfig, wantChanged bool) {
	t.Helper()
	changed, err := f.Ensure(cfg)
	if err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	if changed != wantChanged {
		t.Errorf("Ensure changed = %v, want %v", changed, wantChanged)
	}
}

// syncBuffer is a log sink the Run goroutine and the test share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newTestFirewall(t *testing.T, b ipBackend) (*Firewall, *syncBuffer) {
	t.Helper()
	buf := &syncBuffer{}
	f, err := newFirewall(slog.New(slog.NewTextHandler(buf, nil)), b.v4, b.v6)
	if err != nil {
		t.Fatal(err)
	}
	if f.v6.err != nil {
		t.Fatal(f.v6.err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("firewall log:\n%s", buf)
		}
	})
	return f, buf
}

// TestRuleKeysMatchIPTables checks ruleKey against what real iptables
// binaries print for our rules, without any alias.
func TestRuleKeysMatchIPTables(t *testing.T) {
	netnstest.Require(t)
	for _, b := range []ipBackend{nftBackend, legacyBackend} {
		for _, v6 := range []bool{false, true} {
			bin := b.bin(v6)
			t.Run(bin, func(t *testing.T) {
				if _, err := exec.LookPath(bin); err != nil {
					t.Skip(err)
				}
				resetIPTables(t, b)
				n, s, m := fwCfgDual.Network, fwCfgDual.Subnet, multicastV4
				if v6 {
					n, s, m = fwCfgDual.IPv6Network, fwCfgDual.IPv6Subnet, multicastV6
				}
				for _, spec := range []chainSpec{masqSpec(n, s, m, true, true), forwardSpec(n, true)} {
					iptCmd(t, bin, "-t", spec.table, "-N", spec.chain)
					for _, r := range spec.rules {
						iptCmd(t, bin, append([]string{"-t", spec.table, "-A", spec.chain}, r...)...)
					}
					iptCmd(t, bin, append([]string{"-t", spec.table, "-I", spec.hook, "1"}, spec.jump...)...)
					if got, want := listedKeys(listChain(t, bin, spec.table, spec.chain), spec.chain), ruleKeys(spec.rules); !slices.Equal(got, want) {
						t.Errorf("%s: listed\n%s\nwant\n%s", spec.chain, strings.Join(got, "\n"), strings.Join(want, "\n"))
					}
					if got := listedKeys(listChain(t, bin, spec.table, spec.hook), spec.hook); !slices.Equal(got, []string{ruleKey(spec.jump)}) {
						t.Errorf("%s: listed %q, want the jump %q", spec.hook, got, ruleKey(spec.jump))
					}
				}
			})
		}
	}
}

func TestFirewallEnsure(t *testing.T) {
	netnstest.Require(t)
	for _, b := range []ipBackend{nftBackend, legacyBackend} {
		t.Run(b.v4, func(t *testing.T) {
			if _, err := exec.LookPath(b.v4 + "-restore"); err != nil {
				t.Skip(err)
			}
			resetIPTables(t, b)
			// Rules of others, there before us: our jumps must still come first.
			for _, v6 := range []bool{false, true} {
				iptCmd(t, b.bin(v6), "-t", "nat", "-A", "POSTROUTING", "-o", "eth9", "-j", "MASQUERADE")
				iptCmd(t, b.bin(v6), "-t", "filter", "-A", "FORWARD", "-i", "eth9", "-j", "DROP")
			}
			f, _ := newTestFirewall(t, b)
			mustEnsure(t, f, fwCfgDual, true)
			checkRules(t, f, b, fwCfgDual, false)
			checkRules(t, f, b, fwCfgDual, true)
			mustEnsure(t, f, fwCfgDual, false)
			for _, v6 := range []bool{false, true} {
				if got := listChain(t, b.bin(v6), "nat", "POSTROUTING"); len(got) != 3 || got[2] != "-A POSTROUTING -o eth9 -j MASQUERADE" {
					t.Errorf("%s: others' rule lost: %q", b.bin(v6), got)
				}
			}
		})
	}
}

func TestFirewallRestores(t *testing.T) {
	netnstest.Require(t)
	resetIPTables(t, nftBackend)
	f, _ := newTestFirewall(t, nftBackend)
	mustEnsure(t, f, fwCfgDual, true)
	for _, tc := range []struct {
		name string
		v6   bool
		args []string
	}{
		{"masq rule deleted", false, []string{"-t", "nat", "-D", masqChain, "-s", "10.244.3.0/24", "-d", "10.244.0.0/16", "-m", "comment", "--comment", "flanneld masq", "-j", "RETURN"}},
		{"first masq rule deleted by number", false, []string{"-t", "nat", "-D", masqChain, "1"}},
		{"masq jump deleted", false, []string{"-t", "nat", "-D", "POSTROUTING", "-m", "comment", "--comment", "flanneld masq", "-j", masqChain}},
		{"rule put before the masq jump", false, []string{"-t", "nat", "-I", "POSTROUTING", "1", "-o", "eth9", "-j", "ACCEPT"}},
		{"masq jump duplicated", false, []string{"-t", "nat", "-A", "POSTROUTING", "-m", "comment", "--comment", "flanneld masq", "-j", masqChain}},
		{"extra rule in forward chain", false, []string{"-t", "filter", "-A", fwdChain, "-s", "192.0.2.0/24", "-j", "ACCEPT"}},
		{"forward chain flushed", false, []string{"-t", "filter", "-F", fwdChain}},
		{"forward jump deleted", false, []string{"-t", "filter", "-D", "FORWARD", "1"}},
		{"v6 masq rule deleted", true, []string{"-t", "nat", "-D", masqChain, "4"}},
		{"v6 forward jump deleted", true, []string{"-t", "filter", "-D", "FORWARD", "1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			iptCmd(t, nftBackend.bin(tc.v6), tc.args...)
			mustEnsure(t, f, fwCfgDual, true)
			checkRules(t, f, nftBackend, fwCfgDual, false)
			checkRules(t, f, nftBackend, fwCfgDual, true)
			mustEnsure(t, f, fwCfgDual, false)
		})
	}
	if len(f.v4.alias)+len(f.v6.alias) > 0 {
		t.Errorf("ruleAliases learned, ruleKey does not match this iptables: %v %v", f.v4.alias, f.v6.alias)
	}
}

func TestFirewallConfigChange(t *testing.T) {
	netnstest.Require(t)
	resetIPTables(t, nftBackend)
	f, _ := newTestFirewall(t, nftBackend)
	mustEnsure(t, f, fwCfgDual, true)

	moved := fwCfgDual
	moved.Subnet = netip.MustParsePrefix("10.244.7.0/24")
	moved.IPv6Subnet = netip.MustParsePrefix("fd00:10:244:7::/64")
	mustEnsure(t, f, moved, true)
	checkRules(t, f, nftBackend, moved, false)
	checkRules(t, f, nftBackend, moved, true)
	for _, bin := range []string{"iptables", "ip6tables"} {
		for _, table := range []string{"nat", "filter"} {
			if out := listTable(t, bin, table); strings.Contains(out, "10.244.3.") || strings.Contains(out, "fd00:10:244:3:") {
				t.Errorf("%s -t %s -S still mentions the old subnet:\n%s", bin, table, out)
			}
		}
	}

	renumbered := moved
	renumbered.Network, renumbered.Subnet = netip.MustParsePrefix("10.42.0.0/16"), netip.MustParsePrefix("10.42.1.0/24")
	mustEnsure(t, f, renumbered, true)
	checkRules(t, f, nftBackend, renumbered, false)
	if out := listTable(t, "iptables", "filter"); strings.Contains(out, "10.244.") {
		t.Errorf("iptables -t filter -S still mentions the old network:\n%s", out)
	}
}

func TestFirewallFeaturesOff(t *testing.T) {
	netnstest.Require(t)
	resetIPTables(t, nftBackend)
	f, _ := newTestFirewall(t, nftBackend)
	mustEnsure(t, f, fwCfgDual, true)

	noMasq := fwCfgDual
	noMasq.Masquerade = false
	mustEnsure(t, f, noMasq, true)
	checkRules(t, f, nftBackend, noMasq, false)
	checkRules(t, f, nftBackend, noMasq, true)
	mustEnsure(t, f, noMasq, false)

	none := noMasq
	none.Forward = false
	mustEnsure(t, f, none, true)
	checkRules(t, f, nftBackend, none, false)
	checkRules(t, f, nftBackend, none, true)
	mustEnsure(t, f, none, false)

	// Back on, IPv4 only: ip6tables is left alone.
	mustEnsure(t, f, fwCfgV4, true)
	checkRules(t, f, nftBackend, fwCfgV4, false)
	if out := listTable(t, "ip6tables", "nat"); strings.Contains(out, "FLANNEL") {
		t.Errorf("ip6tables touched without IPv6:\n%s", out)
	}
}

func TestFirewallRemove(t *testing.T) {
	netnstest.Require(t)
	resetIPTables(t, nftBackend)
	f, _ := newTestFirewall(t, nftBackend)
	mustEnsure(t, f, fwCfgDual, true)
	if err := f.Remove(); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	for _, bin := range []string{"iptables", "ip6tables"} {
		for _, table := range []string{"nat", "filter"} {
			if out := listTable(t, bin, table); strings.Contains(out, "FLANNEL") || strings.Contains(out, "flanneld") {
				t.Errorf("%s -t %s -S after Remove:\n%s", bin, table, out)
			}
		}
	}
	if f.Status() == nil {
		t.Error("Status() = nil after Remove")
	}
	if err := f.Remove(); err != nil {
		t.Errorf("second Remove: %v", err)
	}
}

func TestFirewallRun(t *testing.T) {
	netnstest.Require(t)
	resetIPTables(t, nftBackend)
	f, buf := newTestFirewall(t, nftBackend)
	if f.Status() == nil {
		t.Error("Status() = nil before the first Ensure")
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx, fwCfgDual, 200*time.Millisecond) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	select {
	case <-f.Ready():
	case <-time.After(5 * time.Second):
		t.Fatalf("not ready after 5s; log:\n%s", buf)
	}
	if err := f.Status(); err != nil {
		t.Fatalf("Status() = %v after Ready", err)
	}
	checkRules(t, f, nftBackend, fwCfgDual, false)

	iptCmd(t, "iptables", "-t", "nat", "-D", "POSTROUTING", "1")
	iptCmd(t, "ip6tables", "-t", "filter", "-D", fwdChain, "1")
	deadline := time.Now().Add(3 * time.Second)
	for strings.Count(buf.String(), "firewall rules restored") == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("rules not restored within 3s; log:\n%s", buf)
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // a few more resyncs, which must not log
	checkRules(t, f, nftBackend, fwCfgDual, false)
	checkRules(t, f, nftBackend, fwCfgDual, true)
	log := buf.String()
	if n := strings.Count(log, "firewall rules installed"); n != 1 {
		t.Errorf("%d lines 'firewall rules installed', want 1:\n%s", n, log)
	}
	if n := strings.Count(log, "firewall rules restored"); n != 1 {
		t.Errorf("%d lines 'firewall rules restored', want 1:\n%s", n, log)
	}
	if n := strings.Count(log, "\n"); n != 2 {
		t.Errorf("%d log lines, want 2:\n%s", n, log)
	}
}

func TestFirewallRunInvalid(t *testing.T) {
	f := &Firewall{log: slog.Default(), ready: make(chan struct{})}
	if err := f.Run(t.Context(), RuleConfig{}, time.Second); err == nil {
		t.Error("Run with an empty config: no error")
	}
	if err := f.Run(t.Context(), fwCfgV4, 0); err == nil {
		t.Error("Run with resync 0: no error")
	}
}

func TestForwardingEnable(t *testing.T) {
	netnstest.Require(t)
	keys := []string{"/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"}
	for _, k := range keys {
		if err := os.WriteFile(k, []byte("0\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	if err := EnableForwarding(log, false); err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(buf.String(), "enabled forwarding"); got != 1 || !strings.Contains(buf.String(), "sysctl=net.ipv4.ip_forward") {
		t.Errorf("log after enabling IPv4:\n%s", buf.String())
	}
	if b, _ := os.ReadFile(keys[1]); strings.TrimSpace(string(b)) != "0" {
		t.Errorf("IPv6 forwarding set without v6: %q", b)
	}
	if err := EnableForwarding(log, true); err != nil {
		t.Fatal(err)
	}
	if err := EnableForwarding(log, true); err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if b, _ := os.ReadFile(k); strings.TrimSpace(string(b)) != "1" {
			t.Errorf("%s = %q, want 1", k, b)
		}
	}
	if got := strings.Count(buf.String(), "enabled forwarding"); got != 2 {
		t.Errorf("%d log lines, want 2 (each change once):\n%s", got, buf.String())
	}
}

func TestFirewallRunFailure(t *testing.T) {
	netnstest.Require(t)
	resetIPTables(t, nftBackend)
	f, buf := newTestFirewall(t, nftBackend)
	restore := f.v4.restore
	f.v4.restore = "/bin/false" // before Run: no race
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx, fwCfgV4, 100*time.Millisecond) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	time.Sleep(500 * time.Millisecond) // several failing resyncs
	if f.Status() == nil {
		t.Error("Status() = nil while failing")
	}
	select {
	case <-f.Ready():
		t.Error("Ready while failing")
	default:
	}
	f.mu.Lock()
	f.v4.restore = restore
	f.mu.Unlock()
	select {
	case <-f.Ready():
	case <-time.After(3 * time.Second):
		t.Fatalf("not ready 3s after the fix; log:\n%s", buf)
	}
	time.Sleep(300 * time.Millisecond)
	checkRules(t, f, nftBackend, fwCfgV4, false)
	log := buf.String()
	if n := strings.Count(log, "level=ERROR"); n != 1 {
		t.Errorf("%d error lines, want 1 for the whole failure:\n%s", n, log)
	}
	if !strings.Contains(log, "check=") || !strings.Contains(log, "/bin/false") {
		t.Errorf("error line does not say what failed and what to check:\n%s", log)
	}
	if n := strings.Count(log, "firewall rules installed"); n != 1 {
		t.Errorf("%d 'installed' lines, want 1 for the recovery:\n%s", n, log)
	}
	if n := strings.Count(log, "\n"); n != 2 {
		t.Errorf("%d log lines, want 2 (failure, recovery):\n%s", n, log)
	}
}

func TestFirewallNoIP6Tables(t *testing.T) {
	netnstest.Require(t)
	resetIPTables(t, nftBackend)
	f, err := newFirewall(slog.New(slog.DiscardHandler), "iptables", "no-such-ip6tables")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Ensure(fwCfgDual); err == nil || !strings.Contains(err.Error(), "no-such-ip6tables") {
		t.Errorf("Ensure with IPv6 and no ip6tables: %v, want an error naming the binary", err)
	}
	mustEnsure(t, f, fwCfgV4, false) // IPv4 was done by the call above
	checkRules(t, f, nftBackend, fwCfgV4, false)
	if err := f.Remove(); err != nil {
		t.Errorf("Remove: %v", err)
	}
	if _, err := newFirewall(nil, "no-such-iptables", "ip6tables"); err == nil {
		t.Error("newFirewall without iptables: no error")
	}
}

func TestFirewallApplyError(t *testing.T) {
	netnstest.Require(t)
	resetIPTables(t, nftBackend)
	f, _ := newTestFirewall(t, nftBackend)
	err := f.v4.apply("nat", []string{":FLANNEL-TEST - [0:0]", "-D POSTROUTING -s 192.0.2.1 -j FLANNEL-TEST"})
	if err == nil || !strings.Contains(err.Error(), "(line 3: -D POSTROUTING -s 192.0.2.1 -j FLANNEL-TEST)") {
		t.Errorf("apply error %q does not name the failing line", err)
	}
	if strings.Contains(listTable(t, "iptables", "nat"), "FLANNEL-TEST") {
		t.Error("a failed transaction left its chain behind")
	}
}
