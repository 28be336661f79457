package dataplane

import (
	"testing"
)

// TestTableExplains: which kernel changes leave the desired state in
// place (echoes of ours, entries of others) and which are drift.
func TestTableExplains(t *testing.T) {
	const vx, ext = 5, 2
	tbl := NewTable()
	peer := tunnel(vx, "10.244.2.0/24", "192.168.50.12", "0a:00:00:00:00:02")
	host := State{Addrs: []Addr{{vx, pfx("10.244.1.0/32")}}}
	tbl.Update(map[string]*State{"": &host, "p2": &peer})
	owned := func(l int) bool { return l == vx }
	route, neigh, fdb := peer.Routes[0], peer.Neighs[0], peer.FDBs[0]
	other := route
	other.Gw, other.OnLink, other.LinkIndex = ip4("192.168.50.99"), false, ext

	cases := []struct {
		name     string
		c        Change
		explains bool
	}{
		{"our route set (echo)", Change{Kind: RouteChanged, Route: route}, true},
		{"our route deleted", Change{Kind: RouteChanged, Deleted: true, Route: route}, false},
		{"our route replaced by another", Change{Kind: RouteChanged, Route: other}, false},
		{"another route to our destination deleted", Change{Kind: RouteChanged, Deleted: true, Route: other}, true},
		{"a route of someone else", Change{Kind: RouteChanged, Route: Route{Dst: pfx("10.9.0.0/16"), LinkIndex: ext}}, true},
		{"a stray route marked as ours", Change{Kind: RouteChanged, Route: Route{Dst: pfx("10.244.7.0/24"), LinkIndex: ext, Proto: Proto}}, false},
		{"a stray route of ours deleted", Change{Kind: RouteChanged, Deleted: true, Route: Route{Dst: pfx("10.244.7.0/24"), LinkIndex: ext, Proto: Proto}}, true},
		{"a blackhole of ours is not the table's", Change{Kind: RouteChanged, Deleted: true, Route: Route{Dst: pfx("10.244.2.0/24"), Type: Blackhole, Proto: Proto}, Metric: BlackholeMetric}, true},
		{"someone's blackhole in our route's place", Change{Kind: RouteChanged, Route: Route{Dst: pfx("10.244.2.0/24"), Type: Blackhole, Proto: 3}}, false},
		{"an unreachable route in our route's place", Change{Kind: RouteChanged, Route: Route{Dst: pfx("10.244.2.0/24"), Type: OtherRoute, Proto: 3}}, false},
		{"another route beside ours (another metric)", Change{Kind: RouteChanged, Route: other, Metric: 100}, true},
		{"our neighbour set (echo)", Change{Kind: NeighChanged, Neigh: neigh}, true},
		{"our neighbour deleted", Change{Kind: NeighChanged, Deleted: true, Neigh: neigh}, false},
		{"our neighbour with another MAC", Change{Kind: NeighChanged, Neigh: Neigh{vx, neigh.IP, mac("0a:00:00:00:00:09")}}, false},
		{"a stray neighbour on our device", Change{Kind: NeighChanged, Neigh: Neigh{vx, ip4("10.244.9.0"), mac("0a:00:00:00:00:09")}}, false},
		{"a neighbour on the underlay", Change{Kind: NeighChanged, Neigh: Neigh{ext, ip4("192.168.50.1"), mac("0a:00:00:00:00:09")}}, true},
		{"a neighbour of the underlay gone", Change{Kind: NeighChanged, Deleted: true, Neigh: Neigh{LinkIndex: ext, IP: ip4("192.168.50.1")}}, true},
		{"our FDB entry set (echo)", Change{Kind: FDBChanged, FDB: fdb}, true},
		{"our FDB entry deleted", Change{Kind: FDBChanged, Deleted: true, FDB: fdb}, false},
		{"a second remote for our MAC", Change{Kind: FDBChanged, FDB: FDB{vx, fdb.MAC, ip4("192.168.50.77")}}, false},
		{"the second remote deleted", Change{Kind: FDBChanged, Deleted: true, FDB: FDB{vx, fdb.MAC, ip4("192.168.50.77")}}, true},
		{"a bridge's learned MAC", Change{Kind: FDBChanged, FDB: FDB{ext, mac("0a:00:00:00:00:33"), ip4("192.168.50.1")}}, true},
		{"our address added (echo)", Change{Kind: AddrChanged, Addr: host.Addrs[0]}, true},
		{"our address deleted", Change{Kind: AddrChanged, Deleted: true, Addr: host.Addrs[0]}, false},
		{"a stray address on our device", Change{Kind: AddrChanged, Addr: Addr{vx, pfx("10.1.1.1/24")}}, false},
		{"a link-local address on our device", Change{Kind: AddrChanged, Addr: Addr{vx, pfx("fe80::1/64")}}, true},
		{"an address elsewhere", Change{Kind: AddrChanged, Addr: Addr{ext, pfx("10.1.1.1/24")}}, true},
	}
	for _, tc := range cases {
		if got := tbl.Explains(tc.c, owned); got != tc.explains {
			t.Errorf("%s: Explains(%s) = %v, want %v", tc.name, tc.c, got, tc.explains)
		}
	}

	// Once the peer is gone from the table, the echo of its deletion is
	// explained and the echo of its (late) setting is not.
	tbl.Update(map[string]*State{"p2": nil})
	if !tbl.Explains(Change{Kind: RouteChanged, Deleted: true, Route: route}, owned) {
		t.Error("the deletion of a route nobody wants is drift")
	}
	if tbl.Explains(Change{Kind: RouteChanged, Route: route}, owned) {
		t.Error("a route of ours nobody wants is explained")
	}
}

func TestChangeKey(t *testing.T) {
	r := Route{Dst: pfx("10.244.2.0/24"), LinkIndex: 3, Proto: Proto}
	moved := r
	moved.LinkIndex = 4
	if (Change{Kind: RouteChanged, Route: r}).Key() != (Change{Kind: RouteChanged, Deleted: true, Route: moved}).Key() {
		t.Error("two changes of the route to one destination have different keys")
	}
	bh := Route{Dst: r.Dst, Type: Blackhole, Proto: Proto, Metric: BlackholeMetric}
	if (Change{Kind: RouteChanged, Route: r}).Key() == (Change{Kind: RouteChanged, Route: bh, Metric: BlackholeMetric}).Key() {
		t.Error("our blackhole and our unicast route to one destination share a key")
	}
	bh.Proto, bh.Metric = 3, 0
	if (Change{Kind: RouteChanged, Route: r}).Key() != (Change{Kind: RouteChanged, Route: bh}).Key() {
		t.Error("a blackhole in our route's place has another key")
	}
	f := FDB{3, mac("0a:00:00:00:00:02"), ip4("192.168.50.12")}
	g := f
	g.Dst = ip4("192.168.50.13")
	if (Change{Kind: FDBChanged, FDB: f}).Key() == (Change{Kind: FDBChanged, FDB: g}).Key() {
		t.Error("two remotes of one MAC share a key")
	}
	n := Neigh{3, ip4("10.244.2.0"), mac("0a:00:00:00:00:02")}
	if (Change{Kind: NeighChanged, Neigh: n}).Key() == (Change{Kind: NeighChanged, Neigh: Neigh{4, n.IP, n.MAC}}).Key() {
		t.Error("neighbours on two links share a key")
	}
	if got := (Change{Kind: RouteChanged, Deleted: true, Route: r}).String(); got != "Deleted 10.244.2.0/24 dev #3 proto 98" {
		t.Errorf("String = %q", got)
	}
}
