package udp

import (
	"bytes"
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	"github.com/flanneld-go/flannel/backend"
	"github.com/flanneld-go/flannel/subnet"
)

func lease(sn, ip, typ string) subnet.Lease {
	return subnet.Lease{Subnet: netip.MustParsePrefix(sn), Attrs: subnet.LeaseAttrs{PublicIP: netip.MustParseAddr(ip), BackendType: typ}}
}

// TestReconcileTable: the table follows the lease set; peers of another
// backend type are skipped with one log line each, however often Reconcile
// runs.
func TestReconcileTable(t *testing.T) {
	var logs bytes.Buffer
	ext := &backend.ExternalInterface{Name: "eth0", MTU: 1500, Addr: netip.MustParseAddr("192.168.50.11")}
	cfg := &subnet.Config{Network: netip.MustParsePrefix("10.244.0.0/16")}
	b := New(ext, cfg, Options{Type: TypeName, Port: 9000}, Tuning{}, slog.New(slog.NewTextHandler(&logs, nil)))
	if b.MTU() != 1472 {
		t.Errorf("MTU %d", b.MTU())
	}
	b.mu.Lock()
	b.own = lease("10.244.1.0/24", "192.168.50.11", TypeName)
	peers := []subnet.Lease{
		lease("10.244.2.0/24", "192.168.50.12", TypeName),
		lease("10.244.3.0/24", "192.168.50.13", "vxlan"),
		lease("10.244.4.0/24", "192.168.50.14", ""), // upstream's udp writes no type
	}
	for range 3 {
		b.peers = b.desired(peers)
		b.publish()
	}
	b.mu.Unlock()
	tb := b.table.Load()
	if p := tb.lookup(netip.MustParseAddr("10.244.2.7")); p == nil || p.addr.String() != "192.168.50.12:9000" {
		t.Errorf("lookup 10.244.2.7: %v", p)
	}
	if p := tb.lookup(netip.MustParseAddr("10.244.4.7")); p == nil || p.addr.String() != "192.168.50.14:9000" {
		t.Errorf("an upstream udp peer (no BackendType) is not in the table: %v", p)
	}
	if p := tb.lookup(netip.MustParseAddr("10.244.3.7")); p != nil {
		t.Errorf("a vxlan peer is in the table: %v", p)
	}
	if !tb.isPeer(netip.MustParseAddr("192.168.50.12")) || tb.isPeer(netip.MustParseAddr("192.168.50.13")) {
		t.Error("allowed sources are wrong")
	}
	if !tb.ours(netip.MustParseAddr("10.244.1.9")) || tb.ours(netip.MustParseAddr("10.244.2.9")) {
		t.Error("own subnet is wrong")
	}
	if n := strings.Count(logs.String(), "ignoring peer of another backend type"); n != 1 {
		t.Errorf("logged %d times, want once:\n%s", n, logs.String())
	}
	// The peer leaves: its route and its right to send go at once.
	b.mu.Lock()
	b.peers = b.desired(peers[1:])
	b.publish()
	b.mu.Unlock()
	tb = b.table.Load()
	if tb.lookup(netip.MustParseAddr("10.244.2.7")) != nil || tb.isPeer(netip.MustParseAddr("192.168.50.12")) || !tb.isPeer(netip.MustParseAddr("192.168.50.14")) {
		t.Error("departed peer still in the table")
	}
}
