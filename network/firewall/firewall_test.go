package firewall

import (
	"bytes"
	"log/slog"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/flanneld-go/flannel/internal/netnstest"
)

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
	fam := ipt(f).v4
	if v6 {
		fam = ipt(f).v6
	}
	bin := b.bin(v6)
	wantMasq, wantFwd := wantChains(cfg, v6, fam.ipt.HasRandomFully() && !cfg.FullyRandomDisable)
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
	if ipt(f).v6.err != nil {
		t.Fatal(ipt(f).v6.err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("firewall log:\n%s", buf)
		}
	})
	return f, buf
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
	if len(ipt(f).v4.alias)+len(ipt(f).v6.alias) > 0 {
		t.Errorf("ruleAliases learned, ruleKey does not match this iptables: %v %v", ipt(f).v4.alias, ipt(f).v6.alias)
	}
}

// TestFirewallNoRandomFully: --ip-masq-fully-random-disable drops
// --random-fully from the MASQUERADE rules, and a change of the flag
// rewrites the chain.
func TestFirewallNoRandomFully(t *testing.T) {
	netnstest.Require(t)
	resetIPTables(t, nftBackend)
	f, _ := newTestFirewall(t, nftBackend)
	if !ipt(f).v4.ipt.HasRandomFully() {
		t.Skip("this iptables has no --random-fully: nothing to drop")
	}
	off := fwCfgDual
	off.FullyRandomDisable = true
	for _, step := range []struct {
		cfg    RuleConfig
		random bool
	}{{off, false}, {fwCfgDual, true}, {off, false}} {
		mustEnsure(t, f, step.cfg, true)
		for _, bin := range []string{"iptables", "ip6tables"} {
			masq := 0
			for _, l := range listChain(t, bin, "nat", masqChain) {
				if strings.Contains(l, "-j MASQUERADE") {
					masq++
					if strings.Contains(l, "--random-fully") != step.random {
						t.Errorf("FullyRandomDisable=%v: %s rule %q", step.cfg.FullyRandomDisable, bin, l)
					}
				}
			}
			if masq != 2 {
				t.Errorf("%s: %d MASQUERADE rules, want 2", bin, masq)
			}
		}
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
	if _, err := f.Remove(); err != nil {
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
	if _, err := f.Remove(); err != nil {
		t.Errorf("second Remove: %v", err)
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
	if _, err := f.Remove(); err != nil {
		t.Errorf("Remove: %v", err)
	}
	if _, err := newFirewall(nil, "no-such-iptables", "ip6tables"); err == nil {
		t.Error("newFirewall without iptables: no error")
	}
}

// ipt is f's iptables mode.
func ipt(f *Firewall) *iptMode { return f.impl.(*iptMode) }
