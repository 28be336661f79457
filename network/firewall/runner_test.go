package firewall

import (
	"context"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/flanneld-go/flannel/internal/netnstest"
)

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

	// Two commands: a resync may run between them (under load), so the
	// two repairs come in one line or in two.
	iptCmd(t, "iptables", "-t", "nat", "-D", "POSTROUTING", "1")
	iptCmd(t, "ip6tables", "-t", "filter", "-D", fwdChain, "1")
	deadline := time.Now().Add(3 * time.Second)
	for restored := restoredLines(buf.String()); !strings.Contains(restored, "IPv4 nat/FLANNEL-POSTRTG: jump from POSTROUTING missing") ||
		!strings.Contains(restored, "IPv6 filter/FLANNEL-FWD"); restored = restoredLines(buf.String()) {
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
	restored := strings.Count(log, "firewall rules restored")
	if restored < 1 || restored > 2 {
		t.Errorf("%d lines 'firewall rules restored', want 1 or 2 (one per resync that found a repair):\n%s", restored, log)
	}
	if n := strings.Count(log, "\n"); n != 1+restored {
		t.Errorf("%d log lines, want %d:\n%s", n, 1+restored, log)
	}
}

// restoredLines are the "firewall rules restored" lines of a log.
func restoredLines(log string) string {
	var out []string
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "firewall rules restored") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
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

func TestFirewallRunFailure(t *testing.T) {
	netnstest.Require(t)
	resetIPTables(t, nftBackend)
	f, buf := newTestFirewall(t, nftBackend)
	restore := ipt(f).v4.restore
	ipt(f).v4.restore = "/bin/false" // before Run: no race
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
	ipt(f).v4.restore = restore
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

func newTestRunner(t *testing.T) (*Runner, *syncBuffer) {
	t.Helper()
	buf := &syncBuffer{}
	r, err := NewRunner(slog.New(slog.NewTextHandler(buf, nil)), 100*time.Millisecond, IPTables)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		r.Stop()
		if t.Failed() {
			t.Logf("firewall log:\n%s", buf)
		}
	})
	return r, buf
}

// waitFor polls cond every resync-ish period until it holds or 3s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(3 * time.Second); !cond(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 3s", what)
		}
	}
}

func TestRunnerApply(t *testing.T) {
	netnstest.Require(t)
	resetIPTables(t, nftBackend)
	r, _ := newTestRunner(t)
	r.Stop() // no loop yet: nothing to stop
	if r.Status() == nil {
		t.Error("Status() = nil before the first Apply")
	}
	if err := r.Apply(t.Context(), fwCfgDual); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	// Apply returns only once the rules are in place.
	checkRules(t, r.fw, nftBackend, fwCfgDual, false)
	checkRules(t, r.fw, nftBackend, fwCfgDual, true)
	if err := r.Status(); err != nil {
		t.Errorf("Status() = %v after Apply", err)
	}

	// A new lease: the loop restarts with the new subnet.
	moved := fwCfgDual
	moved.Subnet = netip.MustParsePrefix("10.244.7.0/24")
	if err := r.Apply(t.Context(), moved); err != nil {
		t.Fatalf("Apply of a new subnet: %v", err)
	}
	// Again Apply returns only once the new subnet's rules are in place.
	if nat := listTable(t, "iptables", "nat"); !strings.Contains(nat, "10.244.7.0/24") || strings.Contains(nat, "10.244.3.0/24") {
		t.Errorf("Apply of a new subnet returned before its rules were in place:\n%s", nat)
	}
	checkRules(t, r.fw, nftBackend, moved, false)

	// The loop repairs what someone deleted, and counts it.
	iptCmd(t, "iptables", "-t", "nat", "-D", "POSTROUTING", "1")
	waitFor(t, "jump restored", func() bool { _, repairs := r.Counts(); return repairs > 0 })
	checkRules(t, r.fw, nftBackend, moved, false)
	if resyncs, _ := r.Counts(); resyncs < 2 {
		t.Errorf("Counts: %d resyncs, want at least 2", resyncs)
	}

	// After Stop nothing is repaired any more, and the rules stay.
	r.Stop()
	iptCmd(t, "iptables", "-t", "filter", "-D", "FORWARD", "1")
	_, before := r.Counts()
	time.Sleep(400 * time.Millisecond) // several resync periods
	if _, after := r.Counts(); after != before {
		t.Errorf("repairs went from %d to %d after Stop", before, after)
	}
	if !strings.Contains(listTable(t, "iptables", "nat"), "-j FLANNEL-POSTRTG") {
		t.Error("Stop removed the masq jump; rules must stay")
	}
}

func TestRunnerApplyInvalid(t *testing.T) {
	netnstest.Require(t)
	r, _ := newTestRunner(t)
	if err := r.Apply(t.Context(), RuleConfig{}); err == nil || !strings.HasPrefix(err.Error(), "iptables rules: ") {
		t.Errorf("Apply of an empty config: %v, want an iptables rules error", err)
	}
}
