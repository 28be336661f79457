package firewall

import (
	"context"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/knftables"
)

var (
	fwCfgNFT = RuleConfig{
		Network: netip.MustParsePrefix("10.244.0.0/16"), Subnet: netip.MustParsePrefix("10.244.3.0/24"),
		IPv6Network: netip.MustParsePrefix("fd00:10:244::/56"), IPv6Subnet: netip.MustParsePrefix("fd00:10:244:3::/64"),
		Masquerade: true, Forward: true,
	}
	fwCfgNFTv4 = RuleConfig{Network: fwCfgNFT.Network, Subnet: fwCfgNFT.Subnet, Masquerade: true, Forward: true}
)

// countingNFT counts the transactions run, to check there is one per pass.
type countingNFT struct {
	*knftables.Fake
	runs int
}

func (c *countingNFT) Run(ctx context.Context, tx *knftables.Transaction) error {
	c.runs++
	return c.Fake.Run(ctx, tx)
}

func newFakeNFT(t *testing.T) (*Firewall, *countingNFT) {
	t.Helper()
	fake := &countingNFT{Fake: knftables.NewFake("", "")}
	m := newFakeNFTMode(slog.New(slog.DiscardHandler), fake.Fake)
	m.nft = fake
	return newWithMode(slog.New(slog.DiscardHandler), NFTables, m), fake
}

// dumpNFT is the fake's ruleset in nft -f syntax, without the handles.
func dumpNFT(fake *knftables.Fake) string { return fake.Dump() }

func mustEnsureNFT(t *testing.T, f *Firewall, cfg RuleConfig, wantChange bool) []string {
	t.Helper()
	why, err := f.ensure(cfg)
	if err != nil {
		t.Fatalf("ensure: %v", err)
	}
	if (len(why) > 0) != wantChange {
		t.Fatalf("ensure changed %q, want a change: %v", why, wantChange)
	}
	return why
}

const wantNFTv4 = `add table ip flannel-ipv4 { comment "flanneld: ip-masq and forwarding rules" ; }
add chain ip flannel-ipv4 forward { type filter hook forward priority 0 ; comment "flanneld: forward rules" ; }
add chain ip flannel-ipv4 postrtg { type nat hook postrouting priority 100 ; comment "flanneld: ip-masq" ; }
add rule ip flannel-ipv4 forward ip saddr 10.244.0.0/16 accept comment "from the pod network"
add rule ip flannel-ipv4 forward ip daddr 10.244.0.0/16 accept comment "to the pod network"
add rule ip flannel-ipv4 postrtg meta mark & 0x4000 == 0x4000 return comment "kube-proxy masquerades what it marked"
add rule ip flannel-ipv4 postrtg ip saddr 10.244.3.0/24 ip daddr 10.244.0.0/16 return comment "pod to pod keeps its address"
add rule ip flannel-ipv4 postrtg ip saddr 10.244.0.0/16 ip daddr 10.244.3.0/24 return comment "pod to pod keeps its address"
add rule ip flannel-ipv4 postrtg ip saddr != 10.244.0.0/16 ip daddr 10.244.3.0/24 return comment "outside to a local pod keeps its source"
add rule ip flannel-ipv4 postrtg ip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random comment "pod to the outside, multicast excepted"
add rule ip flannel-ipv4 postrtg ip saddr != 10.244.0.0/16 ip daddr 10.244.0.0/16 masquerade fully-random comment "host or outside to a remote pod"
`

func TestNFTRules(t *testing.T) {
	f, fake := newFakeNFT(t)
	mustEnsureNFT(t, f, fwCfgNFTv4, true)
	if got := dumpNFT(fake.Fake); got != wantNFTv4 {
		t.Errorf("IPv4 ruleset:\n%s\nwant:\n%s", got, wantNFTv4)
	}
	mustEnsureNFT(t, f, fwCfgNFTv4, false)
	if fake.runs != 1 {
		t.Errorf("%d transactions for an install and a check, want 1", fake.runs)
	}
}

func TestNFTRulesByConfig(t *testing.T) {
	noFR := fwCfgNFT
	noFR.FullyRandomDisable = true
	masqOnly, fwdOnly, off := fwCfgNFT, fwCfgNFT, fwCfgNFT
	masqOnly.Forward, fwdOnly.Masquerade = false, false
	off.Masquerade, off.Forward = false, false
	for _, tc := range []struct {
		name       string
		cfg        RuleConfig
		want, lack []string
	}{
		{"dual-stack", fwCfgNFT,
			[]string{"add table ip6 flannel-ipv6", "add chain ip6 flannel-ipv6 postrtg", "add chain ip6 flannel-ipv6 forward",
				"ip6 saddr fd00:10:244:3::/64 ip6 daddr fd00:10:244::/56 return",
				"ip6 saddr != fd00:10:244::/56 ip6 daddr fd00:10:244:3::/64 return",
				"ip6 saddr fd00:10:244::/56 ip6 daddr != ff00::/8 masquerade fully-random",
				"ip6 daddr fd00:10:244::/56 accept", "ip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random"},
			[]string{"ip6 saddr 10.", "ip saddr fd00"}},
		{"IPv4 only", fwCfgNFTv4, []string{"add table ip flannel-ipv4"}, []string{"ip6"}},
		{"fully random off", noFR,
			[]string{"ip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade comment", "ip6 saddr != fd00:10:244::/56 ip6 daddr fd00:10:244::/56 masquerade comment"},
			[]string{"fully-random"}},
		{"masquerade only", masqOnly, []string{"add chain ip flannel-ipv4 postrtg", "add chain ip6 flannel-ipv6 postrtg"}, []string{"add chain ip flannel-ipv4 forward", "add chain ip6 flannel-ipv6 forward", " accept"}},
		{"forward only", fwdOnly, []string{"add chain ip flannel-ipv4 forward", "add chain ip6 flannel-ipv6 forward"}, []string{"postrtg", "masquerade"}},
		{"both off", off, nil, []string{"table"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, fake := newFakeNFT(t)
			mustEnsureNFT(t, f, fwCfgNFT, true)
			mustEnsureNFT(t, f, tc.cfg, tc.cfg != fwCfgNFT)
			dump := dumpNFT(fake.Fake)
			for _, w := range tc.want {
				if !strings.Contains(dump, w) {
					t.Errorf("ruleset lacks %q:\n%s", w, dump)
				}
			}
			for _, l := range tc.lack {
				if strings.Contains(dump, l) {
					t.Errorf("ruleset has %q:\n%s", l, dump)
				}
			}
			mustEnsureNFT(t, f, tc.cfg, false)
		})
	}
}

// nftRun runs one change on the fake as someone editing the ruleset by hand.
func nftRun(t *testing.T, fake *knftables.Fake, ops func(tx *knftables.Transaction)) {
	t.Helper()
	tx := fake.NewTransaction()
	ops(tx)
	if err := fake.Run(t.Context(), tx); err != nil {
		t.Fatal(err)
	}
}

func TestNFTRepair(t *testing.T) {
	ruleHandle := func(fake *knftables.Fake, family knftables.Family, table, chain string, i int) *int {
		fake.RLock()
		defer fake.RUnlock()
		return fake.Tables[family][table].Chains[chain].Rules[i].Handle
	}
	for _, tc := range []struct {
		name, why string
		edit      func(fake *knftables.Fake) func(tx *knftables.Transaction)
	}{
		{"rule deleted", "chain postrtg holds 5 rules that differ from the 6 desired", func(fake *knftables.Fake) func(tx *knftables.Transaction) {
			h := ruleHandle(fake, knftables.IPv4Family, nftTableV4, nftMasqChain, 4)
			return func(tx *knftables.Transaction) {
				tx.Delete(&knftables.Rule{Family: knftables.IPv4Family, Table: nftTableV4, Chain: nftMasqChain, Handle: h})
			}
		}},
		{"rule changed", "chain forward holds 2 rules that differ from the 2 desired", func(fake *knftables.Fake) func(tx *knftables.Transaction) {
			h := ruleHandle(fake, knftables.IPv6Family, nftTableV6, nftFwdChain, 0)
			return func(tx *knftables.Transaction) {
				tx.Replace(&knftables.Rule{Family: knftables.IPv6Family, Table: nftTableV6, Chain: nftFwdChain, Handle: h,
					Rule: "ip6 saddr fd00:10:244::/56 drop"})
			}
		}},
		{"chain deleted", "chain forward missing", func(*knftables.Fake) func(tx *knftables.Transaction) {
			return func(tx *knftables.Transaction) {
				tx.Delete(&knftables.Chain{Family: knftables.IPv4Family, Table: nftTableV4, Name: nftFwdChain})
			}
		}},
		{"table deleted", "table missing", func(*knftables.Fake) func(tx *knftables.Transaction) {
			return func(tx *knftables.Transaction) {
				tx.Delete(&knftables.Table{Family: knftables.IPv6Family, Name: nftTableV6})
			}
		}},
		{"chain added", "chain extra not wanted", func(*knftables.Fake) func(tx *knftables.Transaction) {
			return func(tx *knftables.Transaction) {
				tx.Add(&knftables.Chain{Family: knftables.IPv4Family, Table: nftTableV4, Name: "extra"})
			}
		}},
		{"set added", "set s is not ours", func(*knftables.Fake) func(tx *knftables.Transaction) {
			return func(tx *knftables.Transaction) {
				tx.Add(&knftables.Set{Family: knftables.IPv4Family, Table: nftTableV4, Name: "s", Type: "ipv4_addr"})
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, fake := newFakeNFT(t)
			mustEnsureNFT(t, f, fwCfgNFT, true)
			want := dumpNFT(fake.Fake)
			nftRun(t, fake.Fake, tc.edit(fake.Fake))
			runs := fake.runs
			why := mustEnsureNFT(t, f, fwCfgNFT, true)
			if len(why) != 1 || !strings.Contains(why[0], tc.why) {
				t.Errorf("repairs %q, want one naming %q", why, tc.why)
			}
			if fake.runs != runs+1 {
				t.Errorf("repair ran %d transactions, want 1", fake.runs-runs)
			}
			if got := dumpNFT(fake.Fake); got != want {
				t.Errorf("after the repair:\n%s\nwant:\n%s", got, want)
			}
			mustEnsureNFT(t, f, fwCfgNFT, false)
		})
	}
}

// upstreamLayout writes the tables as upstream flanneld's nftables mode
// leaves them for an IPv4-only network: chains without comments, rules
// without comments, and an empty flannel-ipv6.
func upstreamLayout(tx *knftables.Transaction) {
	for _, t := range []struct {
		family knftables.Family
		name   string
	}{{knftables.IPv4Family, nftTableV4}, {knftables.IPv6Family, nftTableV6}} {
		tx.Add(&knftables.Table{Family: t.family, Name: t.name, Comment: knftables.PtrTo("rules for " + t.name)})
	}
	v4 := knftables.IPv4Family
	tx.Add(&knftables.Chain{Family: v4, Table: nftTableV4, Name: nftFwdChain, Type: knftables.PtrTo(knftables.FilterType),
		Hook: knftables.PtrTo(knftables.ForwardHook), Priority: knftables.PtrTo(knftables.FilterPriority)})
	tx.Add(&knftables.Chain{Family: v4, Table: nftTableV4, Name: nftMasqChain, Type: knftables.PtrTo(knftables.NATType),
		Hook: knftables.PtrTo(knftables.PostroutingHook), Priority: knftables.PtrTo(knftables.SNATPriority)})
	for _, r := range []string{"ip saddr 10.244.0.0/16 accept", "ip daddr 10.244.0.0/16 accept"} {
		tx.Add(&knftables.Rule{Family: v4, Table: nftTableV4, Chain: nftFwdChain, Rule: r})
	}
	for _, r := range []string{"meta mark 0x4000 return", "ip saddr 10.244.3.0/24 ip daddr 10.244.0.0/16 return",
		"ip saddr 10.244.0.0/16 ip daddr 10.244.3.0/24 return", "ip saddr != 10.244.3.0/24 ip daddr 10.244.0.0/16 return",
		"ip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random",
		"ip saddr != 10.244.0.0/16 ip daddr 10.244.0.0/16 masquerade fully-random"} {
		tx.Add(&knftables.Rule{Family: v4, Table: nftTableV4, Chain: nftMasqChain, Rule: r})
	}
}

// A host moved from upstream flanneld's nftables mode ends with our tables
// only: upstream's are replaced (not doubled), the empty IPv6 one goes.
func TestNFTAdoptsUpstream(t *testing.T) {
	f, fake := newFakeNFT(t)
	nftRun(t, fake.Fake, upstreamLayout)
	why := mustEnsureNFT(t, f, fwCfgNFTv4, true)
	if len(why) != 2 || !strings.Contains(why[0], "ip flannel-ipv4: chain postrtg holds 6 rules that differ") ||
		!strings.Contains(why[1], "ip6 flannel-ipv6: "+nftNotWanted) {
		t.Errorf("repairs %q, want flannel-ipv4 rewritten and flannel-ipv6 removed", why)
	}
	if got := dumpNFT(fake.Fake); got != wantNFTv4 {
		t.Errorf("after adopting upstream's tables:\n%s\nwant:\n%s", got, wantNFTv4)
	}
}

func TestNFTRemove(t *testing.T) {
	f, fake := newFakeNFT(t)
	nftRun(t, fake.Fake, func(tx *knftables.Transaction) { // a table of someone else stays
		tx.Add(&knftables.Table{Family: knftables.InetFamily, Name: "other"})
	})
	mustEnsureNFT(t, f, fwCfgNFT, true)
	removed, err := f.Remove()
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"nftables table ip flannel-ipv4", "nftables table ip6 flannel-ipv6"}; !slices.Equal(removed, want) {
		t.Errorf("Remove() = %q, want %q", removed, want)
	}
	if got := dumpNFT(fake.Fake); got != "add table inet other\n" {
		t.Errorf("after Remove:\n%s", got)
	}
	if f.Status() == nil {
		t.Error("Status() = nil after Remove")
	}
	if removed, err := f.Remove(); err != nil || len(removed) > 0 {
		t.Errorf("second Remove() = %q, %v; want nothing", removed, err)
	}
}

// The resync loop restores what was deleted by hand and counts it as a
// repair, as in iptables mode.
func TestNFTRunRepairs(t *testing.T) {
	f, fake := newFakeNFT(t)
	buf := &syncBuffer{}
	f.log = slog.New(slog.NewTextHandler(buf, nil))
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx, fwCfgNFT, 20*time.Millisecond) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	<-f.Ready()
	fake.Lock() // the loop runs the fake concurrently: edit it under its lock
	delete(fake.Tables[knftables.IPv4Family][nftTableV4].Chains, nftMasqChain)
	fake.Unlock()
	waitFor(t, "repair counted", func() bool { _, r := f.Counts(); return r == 1 })
	fake.RLock()
	_, ok := fake.Tables[knftables.IPv4Family][nftTableV4].Chains[nftMasqChain]
	fake.RUnlock()
	if !ok {
		t.Error("postrtg not restored")
	}
	log := buf.String()
	if !strings.Contains(log, "firewall rules installed") || !strings.Contains(log, `msg="firewall rules restored" repairs="ip flannel-ipv4: chain postrtg missing"`) {
		t.Errorf("log lacks the installation and the restoration:\n%s", log)
	}
}

// Missing binaries: each mode says what to install or which mode to pick,
// and removing the rules of a mode that cannot be there is no error.
func TestModeWithoutBinaries(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, err := New(nil, IPTables)
	if err == nil || !strings.Contains(err.Error(), `set "EnableNFTables": true`) {
		t.Errorf("iptables mode without iptables: %v, want a hint at EnableNFTables", err)
	}
	_, err = New(nil, NFTables)
	if err == nil || !strings.Contains(err.Error(), "install the nftables package") || !strings.Contains(err.Error(), "EnableNFTables false") {
		t.Errorf("nftables mode without nft: %v, want a hint at the package and the other mode", err)
	}
	if _, err := New(nil, "ebpf"); err == nil {
		t.Error("unknown mode: no error")
	}
	if removed, err := RemoveAll(slog.New(slog.DiscardHandler)); err != nil || len(removed) > 0 {
		t.Errorf("RemoveAll without binaries = %q, %v; want nothing, no error", removed, err)
	}
}
