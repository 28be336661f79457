package udp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/flanneld-go/flannel/backend"
	"github.com/flanneld-go/flannel/backend/dataplane"
	"github.com/flanneld-go/flannel/subnet"
)

// dump prints a table's routes and origins, sorted, for comparisons.
func (t *table) dump() string {
	var lines []string
	for sn, p := range t.routes {
		lines = append(lines, fmt.Sprintf("route %s -> %s", sn, p.addr))
	}
	for _, o := range t.origins {
		subnets := slices.Clone(o.subnets)
		slices.SortFunc(subnets, func(a, b netip.Prefix) int { return strings.Compare(a.String(), b.String()) })
		lines = append(lines, fmt.Sprintf("origin %s %v", o.addr, subnets))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// mixedPeers: udp leases (typed, and upstream's without a type), a vxlan
// and a host-gw lease (hosts already switched away from udp), and a udp
// lease that cannot be served (no IPv4 PublicIP).
func mixedPeers() []subnet.Lease {
	return []subnet.Lease{
		lease("10.244.2.0/24", "192.168.50.12", TypeName),
		lease("10.244.4.0/24", "192.168.50.14", ""),
		lease("10.244.5.0/24", "192.168.50.15", "vxlan"),
		lease("10.244.6.0/24", "192.168.50.16", "host-gw"),
		{Subnet: netip.MustParsePrefix("10.244.3.0/24"), Attrs: subnet.LeaseAttrs{PublicIP: netip.MustParseAddr("fd00:50::13"), BackendType: TypeName}},
	}
}

const mixedTable = `origin 192.168.50.12:9000 [10.244.2.0/24]
origin 192.168.50.14:9000 [10.244.4.0/24]
origin 192.168.50.15:9000 [10.244.5.0/24]
origin 192.168.50.16:9000 [10.244.6.0/24]
route 10.244.2.0/24 -> 192.168.50.12:9000
route 10.244.4.0/24 -> 192.168.50.14:9000`

// TestReconcilerMixed: driven by the reconciler with peers of several
// types, udp forwards only to udp leases but accepts datagrams from all;
// the kernel holds flannel0's address and route alone, whatever the
// peers, and a vxlan peer coming and going changes the origins alone,
// without a kernel call.
func TestReconcilerMixed(t *testing.T) {
	var logs bytes.Buffer
	b, k := fakeBackend(&subnet.Config{Network: netip.MustParsePrefix("10.244.0.0/16")}, &logs)
	ctx := context.Background()
	if _, err := b.Start(ctx, lease("10.244.1.0/24", "192.168.50.11", TypeName)); err != nil {
		t.Fatal(err)
	}
	r := backend.NewReconciler(b)
	for range 3 {
		if _, err := r.Full(ctx, mixedPeers()); err != nil {
			t.Fatal(err)
		}
	}
	const kernel = "ip addr add 10.244.1.0/32 dev flannel0\nip route 10.244.0.0/16 dev flannel0 proto 98"
	if got := k.Dump(); got != kernel {
		t.Errorf("kernel:\n%s\nwant:\n%s", got, kernel)
	}
	if got := b.table.Load().dump(); got != mixedTable {
		t.Errorf("table:\n%s\nwant:\n%s", got, mixedTable)
	}
	if n := strings.Count(logs.String(), "ignoring peer without an IPv4 subnet and PublicIP"); n != 1 {
		t.Errorf("the unservable udp peer logged %d times, want once:\n%s", n, logs.String())
	}
	calls := len(k.Calls)
	vx := lease("10.244.7.0/24", "192.168.50.17", "vxlan")
	ch, err := r.Update([]subnet.Lease{vx}, nil)
	if err != nil || ch.Any() || len(k.Calls) != calls {
		t.Fatalf("a vxlan peer joins: %+v %v, kernel calls %v", ch, err, k.Calls[calls:])
	}
	tb := b.table.Load()
	if o, _ := tb.origin(netip.MustParseAddrPort("192.168.50.17:9000")); o == nil || !o.owns(netip.MustParseAddr("10.244.7.9")) {
		t.Errorf("the vxlan peer may not send: %+v", o)
	}
	if p := tb.lookup(netip.MustParseAddr("10.244.7.9")); p != nil {
		t.Errorf("packets for the vxlan peer go to %s over udp", p.addr)
	}
	if _, err := r.Update(nil, []string{vx.Key()}); err != nil {
		t.Fatal(err)
	}
	if got := b.table.Load().dump(); got != mixedTable {
		t.Errorf("after the vxlan peer left:\n%s\nwant:\n%s", got, mixedTable)
	}
	if _, reason := b.table.Load().origin(netip.MustParseAddrPort("192.168.50.17:9000")); reason != dropNotPeer {
		t.Errorf("the departed vxlan peer: %s, want not_peer", dropNames[reason])
	}
	// The udp peer switches to vxlan: no more packets to it over udp, but
	// what it still sends over udp is taken.
	switchToVXLAN(t, b, r)
	if got := k.Dump(); got != kernel || len(k.Calls) != calls {
		t.Errorf("the kernel changed with the peers:\n%s\ncalls %v", got, k.Calls[calls:])
	}
}

// switchToVXLAN updates peer 10.244.2.0/24 to a vxlan lease: for
// switchLinger packets still go to it over udp (those already in
// flannel0's queue), then its route goes; its right to send stays.
func switchToVXLAN(t *testing.T, b *Backend, r *backend.Reconciler) {
	t.Helper()
	now := time.Unix(1000, 0)
	b.now = func() time.Time { return now }
	moved := lease("10.244.2.0/24", "192.168.50.12", "vxlan")
	if _, err := r.Update([]subnet.Lease{moved}, nil); err != nil {
		t.Fatal(err)
	}
	if p := b.table.Load().lookup(netip.MustParseAddr("10.244.2.7")); p == nil {
		t.Error("a peer that just switched to vxlan no longer gets the packets still queued for udp")
	}
	now = now.Add(switchLinger)
	if _, err := r.Update(nil, nil); err != nil {
		t.Fatal(err)
	}
	tb := b.table.Load()
	if p := tb.lookup(netip.MustParseAddr("10.244.2.7")); p != nil {
		t.Errorf("a peer switched to vxlan %v ago still gets packets over udp: %s", switchLinger, p.addr)
	}
	if o, _ := tb.origin(netip.MustParseAddrPort("192.168.50.12:9000")); o == nil || !o.owns(netip.MustParseAddr("10.244.2.7")) {
		t.Errorf("a peer switched to vxlan may no longer send: %+v", o)
	}
}

// TestReconcileSameAsReconciler: the whole-set Reconcile gives the table
// and the kernel state of the reconciler, for the same peers, and forgets
// the peers it is no longer given.
func TestReconcileSameAsReconciler(t *testing.T) {
	cfg := &subnet.Config{Network: netip.MustParsePrefix("10.244.0.0/16"), EnableIPv6: true, IPv6Network: netip.MustParsePrefix("fd00:244::/56")}
	peers := mixedPeers()
	peers[0].IPv6Subnet = netip.MustParsePrefix("fd00:244:0:2::/64")
	peers[2].IPv6Subnet = netip.MustParsePrefix("fd00:244:0:5::/64")
	own := lease("10.244.1.0/24", "192.168.50.11", TypeName)
	own.IPv6Subnet = netip.MustParsePrefix("fd00:244:0:1::/64")
	ctx := context.Background()
	var dumps, kernels []string
	for _, whole := range []bool{true, false} {
		var logs bytes.Buffer
		b, k := fakeBackend(cfg, &logs)
		if _, err := b.Start(ctx, own); err != nil {
			t.Fatal(err)
		}
		var err error
		if whole {
			_, err = b.Reconcile(ctx, peers)
		} else {
			_, err = backend.NewReconciler(b).Full(ctx, peers)
		}
		if err != nil {
			t.Fatal(err)
		}
		dumps, kernels = append(dumps, b.table.Load().dump()), append(kernels, k.Dump())
		if whole {
			if _, err := b.Reconcile(ctx, peers[1:]); err != nil {
				t.Fatal(err)
			}
			if tb := b.table.Load(); tb.lookup(netip.MustParseAddr("fd00:244:0:2::1")) != nil || tb.isPeer(netip.MustParseAddr("192.168.50.12")) {
				t.Error("Reconcile kept a peer it was no longer given")
			}
		}
	}
	if dumps[0] != dumps[1] || kernels[0] != kernels[1] {
		t.Errorf("Reconcile:\n%s\n%s\nthe reconciler:\n%s\n%s", dumps[0], kernels[0], dumps[1], kernels[1])
	}
	if !strings.Contains(dumps[0], "origin 192.168.50.15:9000 [10.244.5.0/24 fd00:244:0:5::/64]") || strings.Contains(dumps[0], "route fd00:244:0:5::/64") {
		t.Errorf("the vxlan peer's IPv6 subnet is not an origin only:\n%s", dumps[0])
	}
}

// TestTrackCommit: Commit publishes a new table only when a tracked lease
// changed; a lease changed into one that cannot be served leaves.
func TestTrackCommit(t *testing.T) {
	b := testBackend(&bytes.Buffer{})
	p := lease("10.244.2.0/24", "192.168.50.12", TypeName)
	b.Track(p)
	b.Commit()
	first := b.table.Load()
	b.Track(p)
	b.Commit()
	if b.table.Load() != first {
		t.Error("an unchanged lease published a new table")
	}
	b.Forget("10.244.9.0-24") // never tracked
	b.Commit()
	if b.table.Load() != first {
		t.Error("forgetting an unknown key published a new table")
	}
	p.Attrs.PublicIP = netip.MustParseAddr("fd00:50::12")
	b.Track(p)
	b.Commit()
	if tb := b.table.Load(); tb == first || tb.lookup(netip.MustParseAddr("10.244.2.1")) != nil || len(tb.origins) != 0 {
		t.Errorf("a lease that lost its IPv4 PublicIP is still in the table:\n%s", tb.dump())
	}
}

// TestRefresh: Refresh reports a change on its first call and when
// flannel0's index changed; a missing flannel0 is an error (Run re-creates
// it), and so is any call once the backend is closed.
func TestRefresh(t *testing.T) {
	b, k := fakeBackend(&subnet.Config{Network: netip.MustParsePrefix("10.244.0.0/16")}, &bytes.Buffer{})
	ctx := context.Background()
	for i, want := range []bool{true, false} {
		if changed, err := b.Refresh(ctx); err != nil || changed != want {
			t.Fatalf("call %d: %v %v, want %v", i, changed, err, want)
		}
	}
	old, _ := k.LinkByName(DeviceName)
	k.DelLink(old.Index)
	if _, err := b.Refresh(ctx); err == nil || !strings.Contains(err.Error(), "flannel0 is missing") {
		t.Errorf("flannel0 missing: %v", err)
	}
	idx := k.AddLink(dataplane.Link{Index: old.Index + 10, Name: DeviceName, Type: "tun"})
	if changed, err := b.Refresh(ctx); err != nil || !changed || b.Links()[0] != idx {
		t.Errorf("flannel0 re-created: %v %v, links %v", changed, err, b.Links())
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Refresh(ctx); !errors.Is(err, errClosed) {
		t.Errorf("after Close: %v", err)
	}
}

// trackMixed gives a loop test's backend our lease and, through Track and
// Commit, peer12 as a udp peer and peer13 as a host-gw one.
func trackMixed(b *Backend) {
	own := lease("10.244.1.0/24", "192.168.50.11", TypeName)
	own.IPv6Subnet = netip.MustParsePrefix("fd00:244:0:1::/64")
	b.mu.Lock()
	b.own = own
	b.mu.Unlock()
	b.Track(lease("10.244.2.0/24", peer12.Addr().String(), TypeName))
	b.Track(lease("10.244.3.0/24", peer13.Addr().String(), "host-gw"))
	b.Commit()
}

// TestReceiveFromOtherType: a host-gw peer that still sends to us over
// udp (it is switching) is received like a udp peer: from its PublicIP
// and our port, with inner sources in its subnet; a stranger is not, and
// nothing goes to the host-gw peer over udp.
func TestReceiveFromOtherType(t *testing.T) {
	l := newLoopTest(t, true)
	trackMixed(l.b)
	l.startReceiver(true)
	pod13 := netip.MustParseAddr("10.244.3.9")
	echo := icmpEcho(pod13, podA, 56)
	for _, d := range []datagram{
		{addr: peer13, data: echo},                                   // accepted
		{addr: stranger, data: icmpEcho(pod13, podA, 56)},            // not_peer
		{addr: peer13, data: icmpEcho(podB, podA, 56)},               // spoofed_source: peer12's pod
		{addr: netip.AddrPortFrom(peer13.Addr(), 40000), data: echo}, // wrong_port
	} {
		l.conn.In <- d
	}
	l.recvMarker()
	if got := l.written(); len(got) != 1 || !bytes.Equal(got[0][vnetHdrLen:], echo) {
		t.Errorf("%d packets written, want the host-gw peer's echo", len(got))
	}
	l.stop()
	l.wantDrops(map[string]uint64{"not_peer": 1, "spoofed_source": 1, "wrong_port": 1})

	s := newLoopTest(t, true)
	trackMixed(s.b)
	s.startSender()
	s.tun.In <- withHdr(vnetHdr{}, icmpEcho(podA, pod13, 40))
	s.sendMarker()
	if dgs := s.sent(); len(dgs) != 0 {
		t.Errorf("%d datagrams sent to the host-gw peer", len(dgs))
	}
	s.stop()
	s.wantDrops(map[string]uint64{"no_route": 1})
}
