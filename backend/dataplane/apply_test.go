package dataplane

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func ip4(s string) netip.Addr   { return netip.MustParseAddr(s) }
func mac(s string) MAC {
	m, err := ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

// tunnel is the state a vxlan peer needs on the device dev.
func tunnel(dev int, sn, vtep, m string) State {
	gw := pfx(sn).Addr()
	return State{
		Neighs: []Neigh{{dev, gw, mac(m)}},
		FDBs:   []FDB{{dev, mac(m), ip4(vtep)}},
		Routes: []Route{{Dst: pfx(sn), Gw: gw, LinkIndex: dev, OnLink: true, Proto: Proto}},
	}
}

func direct(ext int, sn, gw string) State {
	return State{Routes: []Route{{Dst: pfx(sn), Gw: ip4(gw), LinkIndex: ext, Proto: Proto}}}
}

func merge(t *testing.T, s ...State) State {
	t.Helper()
	m, err := Merge(s...)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

type bed struct {
	k        *Fake
	ext, dev int
	links    []int
}

func newBed() *bed {
	k := NewFake()
	ext := k.AddLink(Link{Name: "eth0", Type: "veth"})
	dev := k.AddLink(Link{Name: "flannel.1", Type: "vxlan", MTU: 1450})
	// Someone else's routes: never touched.
	k.Routes[pfx("0.0.0.0/0")] = Route{Dst: pfx("0.0.0.0/0"), Gw: ip4("192.168.50.1"), LinkIndex: ext, Proto: 3}
	k.Routes[pfx("192.168.50.0/24")] = Route{Dst: pfx("192.168.50.0/24"), LinkIndex: ext, Proto: 2}
	return &bed{k: k, ext: ext, dev: dev, links: []int{dev}}
}

func (b *bed) apply(t *testing.T, want State) Changes {
	t.Helper()
	b.k.Calls = nil
	ch, err := Apply(b.k, b.links, want)
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

func checkDump(t *testing.T, k *Fake, want ...string) {
	t.Helper()
	if got := k.Dump(); got != strings.Join(want, "\n") {
		t.Errorf("kernel:\n%s\nwant:\n%s", got, strings.Join(want, "\n"))
	}
}

func checkCalls(t *testing.T, k *Fake, want ...string) {
	t.Helper()
	if got := strings.Join(k.Calls, "\n"); got != strings.Join(want, "\n") {
		t.Errorf("calls:\n%s\nwant:\n%s", got, strings.Join(want, "\n"))
	}
}

var base = []string{
	"ip route 0.0.0.0/0 via 192.168.50.1 dev eth0 proto 3",
	"ip route 192.168.50.0/24 dev eth0 proto 2",
}

func TestApplyOrderAndGolden(t *testing.T) {
	b := newBed()
	want := merge(t,
		State{Addrs: []Addr{{b.dev, pfx("10.244.3.0/32")}}},
		tunnel(b.dev, "10.244.2.0/24", "192.168.50.12", "0a:00:00:00:00:02"),
		tunnel(b.dev, "10.244.4.0/24", "192.168.60.14", "0a:00:00:00:00:04"))
	ch := b.apply(t, want)
	if ch != (Changes{RoutesSet: 2, NeighsSet: 2, FDBsSet: 2, AddrsAdded: 1}) {
		t.Errorf("changes %+v", ch)
	}
	// Adds: the address, then L2 entries, then the routes using them.
	checkCalls(t, b.k,
		"ip addr add 10.244.3.0/32 dev flannel.1",
		"ip neigh replace 10.244.2.0 lladdr 0a:00:00:00:00:02 dev flannel.1 nud permanent",
		"ip neigh replace 10.244.4.0 lladdr 0a:00:00:00:00:04 dev flannel.1 nud permanent",
		"bridge fdb replace 0a:00:00:00:00:02 dev flannel.1 dst 192.168.50.12 self permanent",
		"bridge fdb replace 0a:00:00:00:00:04 dev flannel.1 dst 192.168.60.14 self permanent",
		"ip route replace 10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink proto 98",
		"ip route replace 10.244.4.0/24 via 10.244.4.0 dev flannel.1 onlink proto 98")
	checkDump(t, b.k,
		"bridge fdb 0a:00:00:00:00:02 dev flannel.1 dst 192.168.50.12 self permanent",
		"bridge fdb 0a:00:00:00:00:04 dev flannel.1 dst 192.168.60.14 self permanent",
		"ip addr add 10.244.3.0/32 dev flannel.1",
		"ip neigh 10.244.2.0 lladdr 0a:00:00:00:00:02 dev flannel.1 nud permanent",
		"ip neigh 10.244.4.0 lladdr 0a:00:00:00:00:04 dev flannel.1 nud permanent",
		base[0],
		"ip route 10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink proto 98",
		"ip route 10.244.4.0/24 via 10.244.4.0 dev flannel.1 onlink proto 98",
		base[1])
	// In the desired state, Apply changes nothing.
	if ch := b.apply(t, want); ch.Any() || len(b.k.Calls) != 0 {
		t.Errorf("second apply: %+v %v", ch, b.k.Calls)
	}
	// The peer .4 leaves: its route goes before its L2 entries.
	want = merge(t, State{Addrs: want.Addrs}, tunnel(b.dev, "10.244.2.0/24", "192.168.50.12", "0a:00:00:00:00:02"))
	if ch := b.apply(t, want); ch != (Changes{RoutesDeleted: 1, NeighsDeleted: 1, FDBsDeleted: 1}) {
		t.Errorf("leave: %+v", ch)
	}
	checkCalls(t, b.k,
		"ip route del 10.244.4.0/24 via 10.244.4.0 dev flannel.1 onlink proto 98",
		"bridge fdb del 0a:00:00:00:00:04 dev flannel.1 dst 192.168.60.14 self permanent",
		"ip neigh del 10.244.4.0 lladdr 0a:00:00:00:00:04 dev flannel.1 nud permanent")
}

// A peer whose VtepMAC changes (its device was re-created elsewhere): the
// new entries go in before the route is touched, the old FDB entry goes
// after, and the neighbour entry is replaced in place (never missing).
func TestApplyVtepMACChange(t *testing.T) {
	b := newBed()
	b.apply(t, tunnel(b.dev, "10.244.2.0/24", "192.168.50.12", "0a:00:00:00:00:02"))
	ch := b.apply(t, tunnel(b.dev, "10.244.2.0/24", "192.168.50.12", "0a:00:00:00:00:22"))
	checkCalls(t, b.k,
		"ip neigh replace 10.244.2.0 lladdr 0a:00:00:00:00:22 dev flannel.1 nud permanent",
		"bridge fdb replace 0a:00:00:00:00:22 dev flannel.1 dst 192.168.50.12 self permanent",
		"bridge fdb del 0a:00:00:00:00:02 dev flannel.1 dst 192.168.50.12 self permanent")
	if ch != (Changes{NeighsSet: 1, FDBsSet: 1, FDBsDeleted: 1}) {
		t.Errorf("changes %+v", ch)
	}
	// A peer whose VTEP address moved keeps its MAC: the FDB entry is
	// replaced, nothing deleted.
	b.apply(t, tunnel(b.dev, "10.244.2.0/24", "192.168.60.12", "0a:00:00:00:00:22"))
	checkCalls(t, b.k, "bridge fdb replace 0a:00:00:00:00:22 dev flannel.1 dst 192.168.60.12 self permanent")
}

// A peer moving from the tunnel to a direct route (DirectRouting: it came
// onto our segment) and back: the route is replaced in place, so the
// subnet is routed at every instant, and the other kind's entries go
// after.
func TestApplyDirectRoutingMove(t *testing.T) {
	b := newBed()
	b.apply(t, tunnel(b.dev, "10.244.2.0/24", "192.168.60.12", "0a:00:00:00:00:02"))
	b.apply(t, direct(b.ext, "10.244.2.0/24", "192.168.50.12"))
	checkCalls(t, b.k,
		"ip route replace 10.244.2.0/24 via 192.168.50.12 dev eth0 proto 98",
		"bridge fdb del 0a:00:00:00:00:02 dev flannel.1 dst 192.168.60.12 self permanent",
		"ip neigh del 10.244.2.0 lladdr 0a:00:00:00:00:02 dev flannel.1 nud permanent")
	checkDump(t, b.k, base[0], "ip route 10.244.2.0/24 via 192.168.50.12 dev eth0 proto 98", base[1])
	b.apply(t, tunnel(b.dev, "10.244.2.0/24", "192.168.60.12", "0a:00:00:00:00:02"))
	checkCalls(t, b.k,
		"ip neigh replace 10.244.2.0 lladdr 0a:00:00:00:00:02 dev flannel.1 nud permanent",
		"bridge fdb replace 0a:00:00:00:00:02 dev flannel.1 dst 192.168.60.12 self permanent",
		"ip route replace 10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink proto 98")
}

func TestApplyIPv6Peer(t *testing.T) {
	b := newBed()
	dev6 := b.k.AddLink(Link{Name: "flannel-v6.1", Type: "vxlan"})
	b.links = append(b.links, dev6)
	gw := ip4("fd00:10:244:2::")
	want := merge(t,
		State{Addrs: []Addr{{b.dev, pfx("10.244.3.0/32")}, {dev6, pfx("fd00:10:244:3::/128")}}},
		tunnel(b.dev, "10.244.2.0/24", "192.168.50.12", "0a:00:00:00:00:02"),
		State{
			Neighs: []Neigh{{dev6, gw, mac("0a:00:00:00:06:02")}},
			FDBs:   []FDB{{dev6, mac("0a:00:00:00:06:02"), ip4("fd00:50::12")}},
			Routes: []Route{{Dst: pfx("fd00:10:244:2::/64"), Gw: gw, LinkIndex: dev6, OnLink: true, Proto: Proto}},
		})
	// An IPv6 link-local address of ours is never removed; a stray global one is.
	b.k.Addrs[Addr{dev6, pfx("fe80::1/64")}] = true
	b.k.Addrs[Addr{dev6, pfx("fd00:99::1/64")}] = true
	if ch := b.apply(t, want); ch != (Changes{RoutesSet: 2, NeighsSet: 2, FDBsSet: 2, AddrsAdded: 2, AddrsDeleted: 1}) {
		t.Errorf("changes %+v", ch)
	}
	checkDump(t, b.k,
		"bridge fdb 0a:00:00:00:00:02 dev flannel.1 dst 192.168.50.12 self permanent",
		"bridge fdb 0a:00:00:00:06:02 dev flannel-v6.1 dst fd00:50::12 self permanent",
		"ip addr add 10.244.3.0/32 dev flannel.1",
		"ip addr add fd00:10:244:3::/128 dev flannel-v6.1",
		"ip addr add fe80::1/64 dev flannel-v6.1",
		"ip neigh 10.244.2.0 lladdr 0a:00:00:00:00:02 dev flannel.1 nud permanent",
		"ip neigh fd00:10:244:2:: lladdr 0a:00:00:00:06:02 dev flannel-v6.1 nud permanent",
		base[0],
		"ip route 10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink proto 98",
		base[1],
		"ip route fd00:10:244:2::/64 via fd00:10:244:2:: dev flannel-v6.1 onlink proto 98")
}

// Routes of others are replaced only where we want their destination;
// ours elsewhere are removed; failures are collected and do not stop the
// rest; entries on links we do not own are left alone.
func TestApplyOwnershipAndErrors(t *testing.T) {
	b := newBed()
	other := b.k.AddLink(Link{Name: "cni0", Type: "bridge"})
	b.k.Neighs[neighKey{other, ip4("10.244.3.5")}] = Neigh{other, ip4("10.244.3.5"), mac("0a:58:0a:f4:03:05")}
	b.k.Routes[pfx("10.244.9.0/24")] = Route{Dst: pfx("10.244.9.0/24"), Gw: ip4("192.168.50.19"), LinkIndex: b.ext, Proto: Proto}
	b.k.Routes[pfx("10.244.2.0/24")] = Route{Dst: pfx("10.244.2.0/24"), Gw: ip4("192.168.50.99"), LinkIndex: b.ext, Proto: 3}
	b.k.Fail["10.244.5.0/24"] = errors.New("boom")
	want := merge(t, direct(b.ext, "10.244.2.0/24", "192.168.50.12"), direct(b.ext, "10.244.5.0/24", "192.168.50.15"),
		direct(b.ext, "10.244.6.0/24", "192.168.50.16"))
	b.k.Calls = nil
	ch, err := Apply(b.k, b.links, want)
	if err == nil || !strings.Contains(err.Error(), "ip route replace 10.244.5.0/24 via 192.168.50.15 dev #2 proto 98: boom") {
		t.Fatalf("error %v", err)
	}
	if ch != (Changes{RoutesSet: 2, RoutesDeleted: 1}) {
		t.Errorf("changes %+v", ch)
	}
	checkDump(t, b.k,
		"ip neigh 10.244.3.5 lladdr 0a:58:0a:f4:03:05 dev cni0 nud permanent", base[0],
		"ip route 10.244.2.0/24 via 192.168.50.12 dev eth0 proto 98",
		"ip route 10.244.6.0/24 via 192.168.50.16 dev eth0 proto 98",
		base[1])
}

// A missing device fails the reconcile with a message naming the link.
func TestApplyMissingLink(t *testing.T) {
	b := newBed()
	b.k.DelLink(b.dev)
	_, err := Apply(b.k, b.links, tunnel(b.dev, "10.244.2.0/24", "192.168.50.12", "0a:00:00:00:00:02"))
	if err == nil || !IsNotFound(err) || !strings.Contains(err.Error(), "link 3") {
		t.Fatalf("error %v", err)
	}
}

func TestApplyAddrsOnly(t *testing.T) {
	b := newBed()
	b.apply(t, tunnel(b.dev, "10.244.2.0/24", "192.168.50.12", "0a:00:00:00:00:02"))
	b.k.Addrs[Addr{b.dev, pfx("10.244.7.0/32")}] = true // an earlier lease's
	b.k.Calls = nil
	ch, err := ApplyAddrs(b.k, b.links, []Addr{{b.dev, pfx("10.244.3.0/32")}})
	if err != nil || ch != (Changes{AddrsAdded: 1, AddrsDeleted: 1}) {
		t.Fatalf("%+v %v", ch, err)
	}
	checkCalls(t, b.k, "ip addr add 10.244.3.0/32 dev flannel.1", "ip addr del 10.244.7.0/32 dev flannel.1")
}

func TestMerge(t *testing.T) {
	a := merge(t, tunnel(3, "10.244.2.0/24", "192.168.50.12", "0a:00:00:00:00:02"), State{Addrs: []Addr{{3, pfx("10.244.3.0/32")}}})
	m, err := Merge(a, a, direct(2, "10.244.4.0/24", "192.168.50.14"))
	if err != nil || m.Len() != a.Len()+1 {
		t.Fatalf("identical entries not merged: %d entries, %v\n%s", m.Len(), err, m)
	}
	m, err = Merge(a, direct(2, "10.244.2.0/24", "192.168.50.12"), tunnel(3, "10.244.9.0/24", "192.168.50.19", "0a:00:00:00:00:02"))
	if err == nil || !strings.Contains(err.Error(), `conflicting entries "10.244.2.0/24 via 10.244.2.0 dev #3 onlink proto 98" and "10.244.2.0/24 via 192.168.50.12 dev #2 proto 98"`) {
		t.Fatalf("conflict not reported: %v", err)
	}
	if !strings.Contains(err.Error(), "0a:00:00:00:00:02 dev #3 dst 192.168.50.12") {
		t.Errorf("FDB conflict not reported: %v", err)
	}
	// The first state's entries win.
	if !m.Equal(merge(t, a, State{Neighs: []Neigh{{3, ip4("10.244.9.0"), mac("0a:00:00:00:00:02")}},
		Routes: []Route{{Dst: pfx("10.244.9.0/24"), Gw: ip4("10.244.9.0"), LinkIndex: 3, OnLink: true, Proto: Proto}}})) {
		t.Errorf("merged:\n%s", m)
	}
}

// Two wanted FDB entries under one key (two leases claiming one VtepMAC):
// the first wins, and the next apply is a no-op, not a replace forever.
func TestApplyDuplicateKeysConverge(t *testing.T) {
	b := newBed()
	want := State{FDBs: []FDB{{b.dev, mac("0a:00:00:00:00:02"), ip4("192.168.50.12")}, {b.dev, mac("0a:00:00:00:00:02"), ip4("192.168.50.13")}}}
	if ch := b.apply(t, want); ch != (Changes{FDBsSet: 1}) {
		t.Errorf("first apply: %+v", ch)
	}
	if ch := b.apply(t, want); ch.Any() {
		t.Errorf("second apply changed %+v: %v", ch, b.k.Calls)
	}
	checkDump(t, b.k, "bridge fdb 0a:00:00:00:00:02 dev flannel.1 dst 192.168.50.12 self permanent", base[0], base[1])
}

// Entries wanted on a link we do not own are compared with the kernel
// (no replace once they are there) and nothing else there is deleted.
func TestApplyUnownedLinkCompared(t *testing.T) {
	b := newBed()
	b.k.Neighs[neighKey{b.ext, ip4("192.168.50.99")}] = Neigh{b.ext, ip4("192.168.50.99"), mac("0a:00:00:00:00:99")}
	want := State{Neighs: []Neigh{{b.ext, ip4("192.168.50.12"), mac("0a:00:00:00:00:12")}}}
	if ch := b.apply(t, want); ch != (Changes{NeighsSet: 1}) {
		t.Errorf("first apply: %+v", ch)
	}
	if ch := b.apply(t, want); ch.Any() {
		t.Errorf("second apply changed %+v: %v", ch, b.k.Calls)
	}
	if _, ok := b.k.Neighs[neighKey{b.ext, ip4("192.168.50.99")}]; !ok {
		t.Error("an entry on a link we do not own was deleted")
	}
}
