package firewall

import (
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/flanneld-go/flannel/internal/netnstest"
)

func newTestRunner(t *testing.T) (*Runner, *syncBuffer) {
	t.Helper()
	buf := &syncBuffer{}
	r, err := NewRunner(slog.New(slog.NewTextHandler(buf, nil)), 100*time.Millisecond)
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
	waitFor(t, "rules of the new subnet", func() bool {
		return strings.Contains(listTable(t, "iptables", "nat"), "10.244.7.0/24") &&
			!strings.Contains(listTable(t, "iptables", "nat"), "10.244.3.0/24")
	})
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
