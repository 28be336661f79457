package dataplane

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// peerState is what a vxlan backend wants for one peer: route, neighbour
// and FDB entry on the device.
func peerState(dev, n int, mac byte, vtep string) State {
	gw := netip.AddrFrom4([4]byte{10, 244, byte(n), 0})
	m := MAC{0x0a, 0x58, 0, 0, 0, mac}
	return State{
		Routes: []Route{{Dst: netip.PrefixFrom(gw, 24), Gw: gw, LinkIndex: dev, OnLink: true, Proto: Proto}},
		Neighs: []Neigh{{LinkIndex: dev, IP: gw, MAC: m}},
		FDBs:   []FDB{{LinkIndex: dev, MAC: m, Dst: netip.MustParseAddr(vtep)}},
	}
}

func ptr(s State) *State { return &s }

func TestTableDiffCostsOnlyTheChangedPart(t *testing.T) {
	k := NewFake()
	dev := k.AddLink(Link{Name: "flannel.1", Type: "vxlan"})
	tb := NewTable()
	batch := map[string]*State{}
	for n := 1; n <= 50; n++ {
		batch[fmt.Sprint(n)] = ptr(peerState(dev, n, byte(n), fmt.Sprintf("192.168.50.%d", n)))
	}
	if _, err := ApplyDiff(k, tb.Update(batch)); err != nil {
		t.Fatal(err)
	}
	if !k.State().Equal(tb.State()) || tb.State().Len() != 150 {
		t.Fatalf("after the first batch the kernel holds\n%s\nwant\n%s", k.Dump(), tb.State())
	}

	// One peer moves to another VTEP, one leaves: four calls, no dump.
	k.Calls = nil
	d := tb.Update(map[string]*State{"7": ptr(peerState(dev, 7, 7, "192.168.60.7")), "9": nil})
	ch, err := ApplyDiff(k, d)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"bridge fdb replace 0a:58:00:00:00:07 dev flannel.1 dst 192.168.60.7 self permanent",
		"ip route del 10.244.9.0/24 via 10.244.9.0 dev flannel.1 onlink proto 98",
		"bridge fdb del 0a:58:00:00:00:09 dev flannel.1 dst 192.168.50.9 self permanent",
		"ip neigh del 10.244.9.0 lladdr 0a:58:00:00:00:09 dev flannel.1 nud permanent",
	}
	if !slices.Equal(k.Calls, want) {
		t.Errorf("calls:\n%s\nwant:\n%s", strings.Join(k.Calls, "\n"), strings.Join(want, "\n"))
	}
	if ch != (Changes{FDBsSet: 1, RoutesDeleted: 1, FDBsDeleted: 1, NeighsDeleted: 1}) {
		t.Errorf("changes = %+v", ch)
	}
	if !k.State().Equal(tb.State()) {
		t.Errorf("kernel\n%s\ntable\n%s", k.Dump(), tb.State())
	}

	// A peer deleted and re-added in one batch costs nothing.
	k.Calls = nil
	p3, _ := tb.Part("3")
	if d := tb.Update(map[string]*State{"3": nil}); d.Len() != 3 {
		t.Errorf("deleting a part: %d operations, want 3", d.Len())
	}
	tb.Update(map[string]*State{"3": &p3}) // undone before any kernel call
	if d := tb.Update(map[string]*State{"3": nil, "3 again": &p3}); d.Len() != 0 {
		t.Errorf("a part moved to another name: %d operations, want 0", d.Len())
	}
}

func TestTableCollisionFirstWinsThenNext(t *testing.T) {
	k := NewFake()
	dev := k.AddLink(Link{Name: "flannel.1", Type: "vxlan"})
	tb := NewTable()
	a := peerState(dev, 5, 0xa, "192.168.50.10")
	b := peerState(dev, 5, 0xb, "192.168.50.11") // same subnet, other MAC and VTEP
	mustDiff(t, k, tb.Update(map[string]*State{"a": &a}))
	mustDiff(t, k, tb.Update(map[string]*State{"b": &b}))
	both, _ := Merge(a, b) // b's FDB entry has its own key (its MAC)
	if !k.State().Equal(both) {
		t.Fatalf("the first part must win:\n%s", k.Dump())
	}
	// a is re-set (unchanged): it keeps its place.
	mustDiff(t, k, tb.Update(map[string]*State{"a": &a}))
	if !k.State().Equal(both) {
		t.Fatalf("re-setting the winner lost its place:\n%s", k.Dump())
	}
	// a leaves: b takes over the route and neighbour (set), a's FDB MAC goes.
	mustDiff(t, k, tb.Update(map[string]*State{"a": nil}))
	if !k.State().Equal(b) {
		t.Fatalf("after the winner left:\n%s\nwant\n%s", k.Dump(), b)
	}
}

func mustDiff(t *testing.T, k Kernel, d Diff) {
	t.Helper()
	if _, err := ApplyDiff(k, d); err != nil {
		t.Fatal(err)
	}
}

// TestTableMatchesMerge checks, over random batches, that the kernel
// after the diffs holds exactly the table's state, and that the state is
// Merge of the parts in the order they were first set.
func TestTableMatchesMerge(t *testing.T) {
	for seed := range uint64(200) {
		rng := rand.New(rand.NewPCG(seed, 1))
		k := NewFake()
		devs := []int{k.AddLink(Link{Name: "flannel.1"}), k.AddLink(Link{Name: "flannel-v6.1"})}
		tb := NewTable()
		var order []string // parts in first-set order
		parts := map[string]State{}
		for range 20 {
			batch := map[string]*State{}
			for range 1 + rng.IntN(6) {
				name := fmt.Sprint(rng.IntN(12))
				if rng.IntN(4) == 0 {
					batch[name] = nil
					continue
				}
				s := peerState(devs[rng.IntN(2)], rng.IntN(6), byte(rng.IntN(6)), fmt.Sprintf("192.168.50.%d", rng.IntN(3)))
				if rng.IntN(3) == 0 {
					s.Addrs = []Addr{{LinkIndex: devs[0], Prefix: netip.MustParsePrefix(fmt.Sprintf("10.244.%d.0/32", rng.IntN(3)))}}
				}
				batch[name] = &s
			}
			names := make([]string, 0, len(batch))
			for n := range batch {
				names = append(names, n)
			}
			slices.Sort(names)
			for _, n := range names {
				if batch[n] == nil {
					delete(parts, n)
					order = slices.DeleteFunc(order, func(o string) bool { return o == n })
					continue
				}
				if _, ok := parts[n]; !ok {
					order = append(order, n)
				}
				parts[n] = *batch[n]
			}
			mustDiff(t, k, tb.Update(batch))
			var states []State
			for _, n := range order {
				states = append(states, parts[n])
			}
			merged, _ := Merge(states...)
			if !tb.State().Equal(merged) {
				t.Fatalf("seed %d: table\n%s\nmerge\n%s", seed, tb.State(), merged)
			}
			if !k.State().Equal(merged) {
				t.Fatalf("seed %d: kernel\n%s\nwant\n%s", seed, k.Dump(), merged)
			}
		}
	}
}

// BenchmarkTableChurn is one peer's delete and re-add in a table of
// 10,000 peers: the cost must not depend on the table's size.
func BenchmarkTableChurn(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			tb := NewTable()
			batch := map[string]*State{}
			for i := range n {
				s := peerState(1, i%250, byte(i), "192.168.50.1")
				s.Routes[0].Dst = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24)
				s.Neighs[0].IP = s.Routes[0].Dst.Addr()
				s.FDBs[0].MAC = MAC{0x0a, 0x58, 0, 0, byte(i >> 8), byte(i)}
				batch[fmt.Sprint(i)] = &s
			}
			tb.Update(batch)
			b.ResetTimer()
			for i := range b.N {
				name := fmt.Sprint(i % n)
				s, _ := tb.Part(name)
				tb.Update(map[string]*State{name: nil})
				tb.Update(map[string]*State{name: &s})
			}
		})
	}
}
