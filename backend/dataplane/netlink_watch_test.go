package dataplane

import (
	"regexp"
	"testing"
	"time"
)

// TestNetlinkWatch: the kernel's notifications come back as the entries
// the reconciler sets and lists, for our changes and for changes made
// with ip(8), in a private network namespace.
func TestNetlinkWatch(t *testing.T) {
	b := newNHBed(t)
	k := freshNetlink(nil)
	done := make(chan struct{})
	ch, err := k.Watch(done)
	if err != nil {
		t.Fatal(err)
	}
	expect := func(what string, want Change) {
		t.Helper()
		deadline := time.After(5 * time.Second)
		for {
			select {
			case batch, ok := <-ch:
				if !ok {
					t.Fatalf("%s: the watch ended", what)
				}
				for _, c := range batch {
					if c == want {
						return
					}
				}
			case <-deadline:
				t.Fatalf("%s: no change %s", what, want)
			}
		}
	}
	r := Route{Dst: pfx("10.244.2.0/24"), Gw: ip4("10.244.2.0"), LinkIndex: b.vx, OnLink: true, Proto: Proto}
	if err := k.RouteReplace(r); err != nil {
		t.Fatal(err)
	}
	expect("a route through a nexthop of ours", Change{Kind: RouteChanged, Route: r})
	ip(t, "route", "del", "10.244.2.0/24")
	expect("the route deleted by hand", Change{Kind: RouteChanged, Deleted: true, Route: r})

	n := Neigh{b.vx, ip4("10.244.2.0"), mac("0a:00:00:00:00:02")}
	if err := k.NeighReplace(n); err != nil {
		t.Fatal(err)
	}
	expect("a neighbour", Change{Kind: NeighChanged, Neigh: n})
	ip(t, "neigh", "del", "10.244.2.0", "dev", "vx0")
	expect("the neighbour deleted by hand", Change{Kind: NeighChanged, Deleted: true, Neigh: Neigh{LinkIndex: n.LinkIndex, IP: n.IP}})

	f := FDB{b.vx, mac("0a:00:00:00:00:02"), ip4("192.168.50.12")}
	if err := k.FDBReplace(f); err != nil {
		t.Fatal(err)
	}
	expect("an FDB entry", Change{Kind: FDBChanged, FDB: f})
	sh(t, "bridge fdb del 0a:00:00:00:00:02 dev vx0 dst 192.168.50.12 self")
	expect("the FDB entry deleted by hand", Change{Kind: FDBChanged, Deleted: true, FDB: f})

	a := Addr{b.vx, pfx("10.244.1.0/32")}
	if err := k.AddrAdd(a); err != nil {
		t.Fatal(err)
	}
	expect("an address", Change{Kind: AddrChanged, Addr: a})

	if err := k.RouteReplace(r); err != nil {
		t.Fatal(err)
	}
	expect("the route again", Change{Kind: RouteChanged, Route: r})
	id := regexp.MustCompile(`nhid ([0-9]+)`).FindStringSubmatch(ip(t, "route", "show", "10.244.2.0/24"))
	if id == nil {
		t.Fatal("the route goes through no nexthop")
	}
	ip(t, "nexthop", "del", "id", id[1])
	expect("a nexthop of ours in use deleted by hand", Change{Kind: NexthopChanged, Deleted: true, Nexthop: mustAtoi(t, id[1])})

	ip(t, "route", "replace", "unreachable", "10.244.2.0/24")
	expect("an unreachable route in our route's place", Change{Kind: RouteChanged, Route: Route{Dst: pfx("10.244.2.0/24"), Type: OtherRoute, Proto: 3}})
	ip(t, "-6", "route", "add", "fd00:10:244:9::/64", "via", "fd00:50::14", "dev", "ul0")
	expect("an IPv6 route at the kernel's default metric", Change{Kind: RouteChanged,
		Route: Route{Dst: pfx("fd00:10:244:9::/64"), Gw: ip4("fd00:50::14"), LinkIndex: b.ul, Proto: 3}, Metric: 1024})

	ip(t, "link", "set", "ul0p", "down")
	expect("the underlay without a carrier", Change{Kind: LinkChanged, Link: b.ul})
	ip(t, "link", "set", "vx0", "down")
	expect("our device down", Change{Kind: LinkChanged, Link: b.vx})
	ip(t, "link", "set", "vx0", "up")
	expect("our device up", Change{Kind: LinkChanged, Link: b.vx, Up: true})

	close(done)
	for range ch { // drained and closed once done
	}
}

func mustAtoi(t *testing.T, s string) uint32 {
	t.Helper()
	var n uint32
	for _, c := range s {
		if c < '0' || c > '9' {
			t.Fatalf("%q is not a number", s)
		}
		n = n*10 + uint32(c-'0')
	}
	return n
}
