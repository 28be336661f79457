package firewall

import (
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/flanneld-go/flannel/internal/netnstest"
)

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

func TestFirewallApplyError(t *testing.T) {
	netnstest.Require(t)
	resetIPTables(t, nftBackend)
	f, _ := newTestFirewall(t, nftBackend)
	err := ipt(f).v4.apply("nat", []string{":FLANNEL-TEST - [0:0]", "-D POSTROUTING -s 192.0.2.1 -j FLANNEL-TEST"})
	if err == nil || !strings.Contains(err.Error(), "(line 3: -D POSTROUTING -s 192.0.2.1 -j FLANNEL-TEST)") {
		t.Errorf("apply error %q does not name the failing line", err)
	}
	if strings.Contains(listTable(t, "iptables", "nat"), "FLANNEL-TEST") {
		t.Error("a failed transaction left its chain behind")
	}
}
