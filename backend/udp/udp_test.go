package udp

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	"github.com/flanneld-go/flannel/backend"
	"github.com/flanneld-go/flannel/backend/dataplane"
	"github.com/flanneld-go/flannel/subnet"
)

func lease(sn, ip, typ string) subnet.Lease {
	return subnet.Lease{Subnet: netip.MustParsePrefix(sn), Attrs: subnet.LeaseAttrs{PublicIP: netip.MustParseAddr(ip), BackendType: typ}}
}

// TestReconcileTable: the table follows the lease set; a lease the
// backend cannot serve is skipped with one log line, however often
// Reconcile runs.
func TestReconcileTable(t *testing.T) {
	var logs bytes.Buffer
	ext := &backend.ExternalInterface{Name: "eth0", MTU: 1500, Addr: netip.MustParseAddr("192.168.50.11")}
	cfg := &subnet.Config{Network: netip.MustParsePrefix("10.244.0.0/16")}
	b, k := fakeBackend(cfg, &logs)
	b.ext = ext
	if b.MTU() != 1472 {
		t.Errorf("MTU %d", b.MTU())
	}
	ctx := context.Background()
	if _, err := b.Start(ctx, lease("10.244.1.0/24", "192.168.50.11", TypeName)); err != nil {
		t.Fatal(err)
	}
	peers := []subnet.Lease{
		lease("10.244.2.0/24", "192.168.50.12", TypeName),
		{Subnet: netip.MustParsePrefix("10.244.3.0/24"), Attrs: subnet.LeaseAttrs{PublicIP: netip.MustParseAddr("fd00:50::13"), BackendType: TypeName}}, // no IPv4 address
		lease("10.244.4.0/24", "192.168.50.14", ""), // upstream's udp writes no type
	}
	for range 3 {
		if _, err := b.Reconcile(ctx, peers); err != nil {
			t.Fatal(err)
		}
	}
	// The kernel holds flannel0's address and the Network route, whatever the peers.
	if got, want := k.Dump(), "ip addr add 10.244.1.0/32 dev flannel0\nip route 10.244.0.0/16 dev flannel0 proto 98"; got != want {
		t.Errorf("kernel:\n%s\nwant:\n%s", got, want)
	}
	tb := b.table.Load()
	if p := tb.lookup(netip.MustParseAddr("10.244.2.7")); p == nil || p.addr.String() != "192.168.50.12:9000" {
		t.Errorf("lookup 10.244.2.7: %v", p)
	}
	if p := tb.lookup(netip.MustParseAddr("10.244.4.7")); p == nil || p.addr.String() != "192.168.50.14:9000" {
		t.Errorf("an upstream udp peer (no BackendType) is not in the table: %v", p)
	}
	if p := tb.lookup(netip.MustParseAddr("10.244.3.7")); p != nil {
		t.Errorf("a peer without an IPv4 PublicIP is in the table: %v", p)
	}
	if !tb.isPeer(netip.MustParseAddr("192.168.50.12")) || tb.isPeer(netip.MustParseAddr("192.168.50.13")) {
		t.Error("allowed sources are wrong")
	}
	// Peers send from the net-conf's port, the one they listen on.
	if o, _ := tb.origin(netip.MustParseAddrPort("192.168.50.12:9000")); o == nil || !o.owns(netip.MustParseAddr("10.244.2.7")) || o.owns(netip.MustParseAddr("10.244.4.7")) {
		t.Errorf("origin of 192.168.50.12:9000: %+v", o)
	}
	if _, reason := tb.origin(netip.MustParseAddrPort("192.168.50.12:8285")); reason != dropWrongPort {
		t.Errorf("from the default port while the net-conf says 9000: %s", dropNames[reason])
	}
	if !tb.ours(netip.MustParseAddr("10.244.1.9")) || tb.ours(netip.MustParseAddr("10.244.2.9")) {
		t.Error("own subnet is wrong")
	}
	if n := strings.Count(logs.String(), "ignoring peer without an IPv4 subnet and PublicIP"); n != 1 {
		t.Errorf("logged %d times, want once:\n%s", n, logs.String())
	}
	// The peer leaves: its route and its right to send go at once.
	if _, err := b.Reconcile(ctx, peers[1:]); err != nil {
		t.Fatal(err)
	}
	tb = b.table.Load()
	if tb.lookup(netip.MustParseAddr("10.244.2.7")) != nil || tb.isPeer(netip.MustParseAddr("192.168.50.12")) || !tb.isPeer(netip.MustParseAddr("192.168.50.14")) {
		t.Error("departed peer still in the table")
	}
}

// TestPeersOrigins: with dual-stack a peer may send from both of its
// subnets, and a PublicIP holding two leases (a host moving to a new
// lease) from all of them; nothing else.
func TestPeersOrigins(t *testing.T) {
	cfg := &subnet.Config{Network: netip.MustParsePrefix("10.244.0.0/16"), EnableIPv6: true, IPv6Network: netip.MustParsePrefix("fd00:244::/56")}
	a := lease("10.244.2.0/24", "192.168.50.12", TypeName)
	a.IPv6Subnet = netip.MustParsePrefix("fd00:244:0:2::/64")
	peers, _ := Peers(cfg, Options{Port: DefaultPort}, []subnet.Lease{a, lease("10.244.5.0/24", "192.168.50.12", TypeName), lease("10.244.3.0/24", "192.168.50.13", TypeName)})
	tb := newTable(cfg.Network, cfg.IPv6Network, netip.MustParsePrefix("10.244.1.0/24"), netip.MustParsePrefix("fd00:244:0:1::/64"), peers)
	o, _ := tb.origin(peer12)
	if o == nil {
		t.Fatal("no origin for peer12")
	}
	for addr, want := range map[string]bool{"10.244.2.9": true, "fd00:244:0:2::9": true, "10.244.5.1": true,
		"10.244.3.9": false, "fd00:244:0:3::9": false, "10.244.1.9": false, "192.168.50.12": false} {
		if got := o.owns(netip.MustParseAddr(addr)); got != want {
			t.Errorf("peer12 owns %s: %v, want %v", addr, got, want)
		}
	}
	if o13, _ := tb.origin(peer13); o13 == nil || len(o13.subnets) != 1 {
		t.Errorf("origin of peer13: %+v", o13)
	}
}

// fakeBackend is a backend over a fake kernel holding flannel0.
func fakeBackend(cfg *subnet.Config, logs *bytes.Buffer) (*Backend, *dataplane.Fake) {
	ext := &backend.ExternalInterface{Name: "eth0", MTU: 1500, Addr: netip.MustParseAddr("192.168.50.11")}
	b := New(ext, cfg, Options{Type: TypeName, Port: 9000}, Tuning{}, slog.New(slog.NewTextHandler(logs, nil)))
	k := dataplane.NewFake()
	k.AddLink(dataplane.Link{Name: "eth0"})
	k.AddLink(dataplane.Link{Name: DeviceName, Type: "tun"})
	b.k = k
	return b, k
}

// TestStartDualStack: flannel0's device settings and State with IPv6; a
// route of another backend is left by Start (it may serve peers beside
// udp in a switch) and removed by the next full pass; a refused IPv6
// switch reported.
func TestStartDualStack(t *testing.T) {
	cfg := &subnet.Config{Network: netip.MustParsePrefix("10.244.0.0/16"), EnableIPv6: true, IPv6Network: netip.MustParsePrefix("fd00:10:244::/56")}
	var logs bytes.Buffer
	b, k := fakeBackend(cfg, &logs)
	stale := netip.MustParsePrefix("10.244.7.0/24") // host-gw's, before a switch
	k.Routes[stale] = dataplane.Route{Dst: stale, Gw: netip.MustParseAddr("192.168.50.17"), LinkIndex: 2, Proto: dataplane.Proto}
	own := lease("10.244.1.0/24", "192.168.50.11", TypeName)
	own.IPv6Subnet = netip.MustParsePrefix("fd00:10:244:1::/64")
	if mtu, err := b.Start(context.Background(), own); err != nil || mtu != 1472 {
		t.Fatalf("Start: %d %v", mtu, err)
	}
	want := strings.Join([]string{
		"ip addr add 10.244.1.0/32 dev flannel0",
		"ip addr add fd00:10:244:1::/128 dev flannel0",
		"ip route 10.244.0.0/16 dev flannel0 proto 98",
		"ip route fd00:10:244::/56 dev flannel0 proto 98",
	}, "\n")
	staleLine := "ip route 10.244.7.0/24 via 192.168.50.17 dev eth0 proto 98"
	if got := k.Dump(); !strings.Contains(got, staleLine) || strings.Replace(got, staleLine+"\n", "", 1) != want {
		t.Errorf("kernel after Start:\n%s\nwant:\n%s\nand %s", got, want, staleLine)
	}
	if _, err := b.Reconcile(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if got := k.Dump(); got != want {
		t.Errorf("kernel after Reconcile:\n%s\nwant:\n%s", got, want)
	}
	if k.Sysctls["net/ipv6/conf/flannel0/disable_ipv6"] != "0" || k.Sysctls["net/ipv6/conf/flannel0/accept_ra"] != "0" {
		t.Errorf("sysctls %v", k.Sysctls)
	}
	if l, _ := k.LinkByName(DeviceName); !l.Up || l.MTU != 1472 {
		t.Errorf("flannel0 %+v, want up with MTU 1472", l)
	}
	k.Fail["disable_ipv6=0"] = errors.New("permission denied")
	if _, err := b.Start(context.Background(), own); err == nil || !strings.Contains(err.Error(), "turning IPv6 on for flannel0") {
		t.Errorf("a refused IPv6 switch: %v", err)
	}
}
