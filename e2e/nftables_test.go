package e2e_test

import (
	"context"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/flanneld-go/flannel/e2e/testbed"
)

const nftNetconf = `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","EnableNFTables":true,"Backend":{"Type":"host-gw"}}`

// noIPTablesPath is a PATH directory holding nft and nothing else: a daemon
// started with it runs as on a host without iptables.
func noIPTablesPath(t *testing.T) string {
	t.Helper()
	nft, err := exec.LookPath("nft")
	if err != nil {
		t.Skip("nft not installed (Debian package nftables; make deps installs it)")
	}
	dir := t.TempDir()
	if err := os.Symlink(nft, filepath.Join(dir, "nft")); err != nil {
		t.Fatal(err)
	}
	return "PATH=" + dir
}

func nftRuleset(t *testing.T, ctx context.Context, h *testbed.Host) string {
	t.Helper()
	out, err := h.Exec(ctx, "nft", "list", "ruleset")
	if err != nil {
		t.Fatalf("%s: nft list ruleset: %v: %s", h.Name, err, out)
	}
	return out
}

// TestNFTables: EnableNFTables on one dual-stack cluster. h1 has no
// iptables on its PATH, h2 ran upstream flanneld in nftables mode before
// ours, h3 is plain. All masquerade with nftables only.
func TestNFTables(t *testing.T) {
	requireTestbed(t)
	up := upstreamBin(t)
	noIPT := noIPTablesPath(t)
	ctx := ctxFor(t, 2*time.Minute)
	tb := testbed.NewT(t, testbed.Options{Hosts: 3, IPv6: true})
	if err := tb.PutNetConfig(ctx, nftNetconf); err != nil {
		t.Fatal(err)
	}
	h1, h2, h3 := tb.Hosts()[0], tb.Hosts()[1], tb.Hosts()[2]
	args := []string{"--ip-masq", "--iptables-resync", "1", "--healthz-port", "9100", "--healthz-ip", "127.0.0.1"}

	// h2 runs upstream first; its tables must be in place before the move.
	if err := h2.StartDaemonBin(ctx, up, "--ip-masq"); err != nil {
		t.Fatal(err)
	}
	if err := h1.StartDaemonEnv(ctx, []string{noIPT}, args...); err != nil {
		t.Fatal(err)
	}
	// h3 has chains of an earlier iptables-mode run.
	for _, argv := range [][]string{
		{"iptables", "-t", "nat", "-N", "FLANNEL-POSTRTG"},
		{"iptables", "-t", "nat", "-I", "POSTROUTING", "-m", "comment", "--comment", "flanneld masq", "-j", "FLANNEL-POSTRTG"},
		{"ip6tables", "-t", "filter", "-N", "FLANNEL-FWD"},
		{"ip6tables", "-t", "filter", "-I", "FORWARD", "-m", "comment", "--comment", "flanneld forward", "-j", "FLANNEL-FWD"},
	} {
		if out, err := h3.Exec(ctx, argv...); err != nil {
			t.Fatalf("%s: %v: %s", strings.Join(argv, " "), err, out)
		}
	}
	if err := h3.StartDaemon(ctx, args...); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "upstream's nftables rules on h2", 20*time.Second, func() bool {
		out, _ := h2.Exec(ctx, "nft", "list", "table", "ip6", "flannel-ipv6")
		return strings.Contains(out, "masquerade")
	})
	upstreamRules := nftRuleset(t, ctx, h2)
	if err := h2.StopDaemon(); err != nil {
		t.Fatal(err)
	}
	os.Remove(h2.SubnetFile())
	if err := h2.StartDaemon(ctx, args...); err != nil {
		t.Fatal(err)
	}
	for _, h := range tb.Hosts() {
		if _, err := h.WaitSubnetFile(ctx); err != nil {
			t.Fatalf("%s: %v\n%s", h.Name, err, h.Log())
		}
	}
	if err := tb.AddPodsAll(ctx, 1); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, h := range tb.Hosts() {
				t.Logf("%s log:\n%s", h.Name, lastLines(h.Log(), 30))
			}
		}
	})

	t.Run("masquerade", func(t *testing.T) { nftMasquerade(t, ctx, tb) })
	t.Run("no iptables", func(t *testing.T) {
		rules := nftRuleset(t, ctx, h1)
		t.Logf("h1 (no iptables) nft list ruleset:\n%s", rules)
		if !strings.Contains(rules, "table ip flannel-ipv4") || !strings.Contains(rules, "table ip6 flannel-ipv6") || strings.Contains(rules, "FLANNEL-") {
			t.Errorf("h1 ruleset is not our two tables only")
		}
		if strings.Contains(h1.Log(), "level=ERROR") || strings.Contains(h1.Log(), "level=WARN") {
			t.Errorf("h1 logged a problem:\n%s", h1.Log())
		}
	})
	t.Run("repair", func(t *testing.T) { nftRepair(t, ctx, h1) })
	t.Run("from upstream", func(t *testing.T) {
		t.Logf("h2 under upstream flanneld:\n%s", upstreamRules)
		for _, l := range strings.Split(h2.Log(), "\n") {
			if strings.Contains(l, "msg=\"firewall") {
				t.Logf("h2: %s", l)
			}
		}
		rules := nftRuleset(t, ctx, h2)
		for what, n := range map[string]int{"table ": 2, "table ip flannel-ipv4": 1, "table ip6 flannel-ipv6": 1, "chain postrtg": 2,
			"chain forward": 2, "masquerade fully-random": 4, "kube-proxy masquerades what it marked": 2, "FLANNEL-": 0} {
			if got := strings.Count(rules, what); got != n {
				t.Errorf("h2 after the move holds %q %d times, want %d:\n%s", what, got, n, rules)
			}
		}
	})
	t.Run("from iptables mode", func(t *testing.T) {
		left, _ := h3.Exec(ctx, "sh", "-c", "iptables-save; ip6tables-save")
		if strings.Contains(left, "FLANNEL") {
			t.Errorf("h3 kept iptables chains of the other mode:\n%s", left)
		}
		if n := strings.Count(h3.Log(), `msg="firewall rules removed" removed="iptables chain`); n != 2 {
			t.Errorf("h3 logged %d iptables removals, want 2 (one per chain):\n%s", n, h3.Log())
		}
	})
	t.Run("cleanup", func(t *testing.T) { nftCleanup(t, ctx, tb, h1, noIPT) })
	t.Run("iptables mode without iptables", func(t *testing.T) { noIPTablesError(t, ctx, tb, h1, noIPT) })
}

// nftMasquerade: pod to outside leaves with the host's address, pod to pod
// keeps the pod's, over IPv4 and IPv6, from the host without iptables.
func nftMasquerade(t *testing.T, ctx context.Context, tb *testbed.Testbed) {
	out, err := tb.AddOutside(ctx)
	if err != nil {
		t.Fatal(err)
	}
	h1 := tb.Hosts()[0]
	p1, p2 := h1.Pods[0], tb.Hosts()[1].Pods[0]
	for _, c := range []struct {
		name              string
		filter            string
		capture           func(context.Context, string, int) (func() ([]netip.Addr, error), error)
		src, dst, wantSrc netip.Addr
	}{
		{"IPv4 pod to outside", "icmp[icmptype] == icmp-echo", out.CaptureSources, p1.Addr, out.Addr, h1.Addr},
		{"IPv6 pod to outside", "icmp6 and ip6[40] == 128", out.CaptureSources, p1.Addr6, out.Addr6, h1.Addr6},
		{"IPv4 pod to pod", "icmp[icmptype] == icmp-echo", p2.CaptureSources, p1.Addr, p2.Addr, p1.Addr},
		{"IPv6 pod to pod", "icmp6 and ip6[40] == 128", p2.CaptureSources, p1.Addr6, p2.Addr6, p1.Addr6},
	} {
		wait, err := c.capture(ctx, c.filter, 1)
		if err != nil {
			t.Fatal(err)
		}
		if err := p1.WaitPing(ctx, c.dst); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if srcs, err := wait(); err != nil || len(srcs) != 1 || srcs[0] != c.wantSrc {
			t.Errorf("%s: %s saw sources %v (%v), want %s", c.name, c.dst, srcs, err, c.wantSrc)
		}
	}
}

// nftRepair: a chain and a rule deleted by hand come back within the
// resync period (1 s), counted in /metrics.
func nftRepair(t *testing.T, ctx context.Context, h *testbed.Host) {
	want := nftRuleset(t, ctx, h)
	handles, _ := h.Exec(ctx, "nft", "-a", "list", "chain", "ip6", "flannel-ipv6", "forward")
	m := regexp.MustCompile(`accept comment "to the pod network" # handle (\d+)`).FindStringSubmatch(handles)
	if m == nil {
		t.Fatalf("no handle for the IPv6 forward rule in:\n%s", handles)
	}
	for _, argv := range [][]string{{"nft", "delete", "chain", "ip", "flannel-ipv4", "postrtg"},
		{"nft", "delete", "rule", "ip6", "flannel-ipv6", "forward", "handle", m[1]}} {
		if out, err := h.Exec(ctx, argv...); err != nil {
			t.Fatalf("%s: %v: %s", strings.Join(argv, " "), err, out)
		}
	}
	took := waitFor(t, "rules restored", 5*time.Second, func() bool { return nftRuleset(t, ctx, h) == want })
	t.Logf("deleted chain and rule restored %v after the deletion", took.Round(10*time.Millisecond))
	if took > 3*time.Second {
		t.Errorf("restored after %v, want within the 1s resync period (plus slack)", took)
	}
	waitFor(t, "repair counted", 3*time.Second, func() bool {
		_, metrics := get(ctx, h, "/metrics")
		return regexp.MustCompile(`(?m)^flannel_nftables_repairs_total [1-9]`).MatchString(metrics)
	})
	if line := lastLine(h.Log(), `msg="firewall rules restored"`); line == "" {
		t.Errorf("no 'firewall rules restored' line:\n%s", lastLines(h.Log(), 10))
	} else {
		t.Logf("%s: %s", h.Name, line)
	}
}

// nftCleanup: flanneld cleanup, on the host without iptables, leaves no
// flannel table.
func nftCleanup(t *testing.T, ctx context.Context, tb *testbed.Testbed, h *testbed.Host, noIPT string) {
	if err := h.StopDaemon(); err != nil {
		t.Fatal(err)
	}
	out, err := h.Exec(ctx, "env", noIPT, tb.FlanneldBin(), "cleanup", "--etcd-endpoints", tb.EtcdEndpoint(), "--iface", "eth0", "--subnet-file", h.SubnetFile())
	t.Logf("flanneld cleanup:\n%s", out)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"removed nftables table ip flannel-ipv4", "removed nftables table ip6 flannel-ipv6"} {
		if !strings.Contains(out, want) {
			t.Errorf("cleanup output lacks %q", want)
		}
	}
	if rules := nftRuleset(t, ctx, h); strings.Contains(rules, "flannel") {
		t.Errorf("nft list ruleset after cleanup:\n%s", rules)
	}
}

// noIPTablesError: with EnableNFTables off, a host without iptables stops
// with one error line that suggests EnableNFTables, before taking a lease.
func noIPTablesError(t *testing.T, ctx context.Context, tb *testbed.Testbed, h *testbed.Host, noIPT string) {
	if err := tb.PutNetConfig(ctx, strings.Replace(nftNetconf, `"EnableNFTables":true,`, "", 1)); err != nil {
		t.Fatal(err)
	}
	before := len(h.Log())
	if err := h.StartDaemonEnv(ctx, []string{noIPT}, "--ip-masq"); err != nil {
		t.Fatal(err)
	}
	code, err := h.WaitDaemonExit(ctx)
	if err != nil || code == 0 {
		t.Fatalf("daemon without iptables exited %d (%v), want a failure", code, err)
	}
	log := h.Log()[before:]
	var errLines []string
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "iptables") && !strings.HasPrefix(l, "=== testbed") {
			errLines = append(errLines, l)
		}
	}
	t.Logf("daemon output: %q", errLines)
	if len(errLines) != 1 || !strings.Contains(errLines[0], `set "EnableNFTables": true`) {
		t.Errorf("want one line about the missing iptables suggesting EnableNFTables, got:\n%s", log)
	}
}
