package network

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"github.com/flanneld-go/flannel/backend/dataplane"
	"github.com/flanneld-go/flannel/subnet"
)

// genLease makes a lease from three bytes, over a small universe where
// collisions are frequent: subnets that repeat or nest, IPv6 halves good
// and bad, few MACs (some malformed, one ours), few PublicIPs (one ours,
// some invalid), two backends, revisions that tie.
func genLease(a, b, c byte) subnet.Lease {
	v4 := []string{"10.244.2.0/24", "10.244.3.0/24", "10.244.4.0/24", "10.244.1.0/24", "10.244.2.0/25", "10.99.0.0/24", "10.244.5.0/24", "10.244.0.0/16"}[a&7]
	v6 := []string{"", "", "fd00:10:244:2::/64", "fd00:10:244:3::/64", "fd00:10:244:1::/64", "::/0", "fd00:10:244:2::/80", "fd00:99::/64"}[a>>3&7]
	pub := []string{"192.168.50.12", "192.168.50.13", "192.168.50.14", ownIP, "0.0.0.0", "10.244.2.9", "192.168.50.12", "192.168.50.15"}[b&7]
	backend := []string{"vxlan", "vxlan", "vxlan", "host-gw"}[b>>3&3]
	mac := []string{"0e:00:00:00:00:12", "0e:00:00:00:00:13", "0e:00:00:00:00:14", ownMAC, "0e:00:00:00:00:12", "bad", "0e:00:00:00:00:15", ""}[b>>5&7]
	sn := v4
	if v6 != "" {
		sn += "&" + v6
	}
	l := lease(sn, pub, backend, int64(c&15), "")
	if mac != "" && backend == "vxlan" {
		l.Attrs.BackendData = []byte(`{"VNI":1,"VtepMAC":"` + mac + `"}`)
	}
	if a&0x40 != 0 && v6 != "" {
		l.Attrs.PublicIPv6 = netip.MustParseAddr([]string{"fd00:50::12", "fd00:50::11"}[c>>4&1])
		l.Attrs.BackendV6Data = []byte(`{"VNI":1,"VtepMAC":"` + []string{"0e:00:00:00:06:12", "0e:00:00:00:06:11"}[c>>5&1] + `"}`)
	}
	return l
}

// reference is the rule by its definition, in O(n^2): leases in order of
// age, each accepted unless it fails a check of its own or of this host,
// or overlaps (any prefix overlap, not only equality) or shares a MAC with
// an already accepted one.
func reference(s *PeerSet) map[string]string {
	es := make([]*entry, 0, len(s.entries))
	for _, e := range s.entries {
		es = append(es, e)
	}
	slices.SortFunc(es, func(a, b *entry) int {
		if a.older(b) {
			return -1
		}
		return 1
	})
	var holders []*entry
	out := map[string]string{}
	for _, e := range es {
		why, win := s.refVerdict(e, holders)
		if why.holds() {
			holders = append(holders, e)
		}
		out[e.key] = string(why)
		if win != nil {
			out[e.key] += "<" + win.key
		}
	}
	return out
}

func (s *PeerSet) refVerdict(e *entry, holders []*entry) (Reason, *entry) {
	l := e.l
	switch {
	case e.key == s.ownKey, s.acquiring && (l.Attrs.PublicIP == s.r.self || s.r.self6.IsValid() && l.Attrs.PublicIPv6 == s.r.self6):
		return reasonOurs, nil
	case e.static != "":
		return e.static, nil
	}
	if why := s.r.own(e, s.own); why != "" {
		return why, nil
	}
	for _, h := range holders {
		if h.l.Subnet.Overlaps(l.Subnet) || s.r.ipv6() && h.l.IPv6Subnet.IsValid() && l.IPv6Subnet.IsValid() && h.l.IPv6Subnet.Overlaps(l.IPv6Subnet) {
			return ReasonOverlapsLease, h
		}
	}
	zero := dataplane.MAC{}
	for _, h := range holders {
		if e.mac4 != zero && h.mac4 == e.mac4 || e.mac6 != zero && h.mac6 == e.mac6 {
			return ReasonVtepMACDuplicate, h
		}
	}
	if !slices.Contains(s.r.serves, BackendType(l)) {
		return ReasonBackendType, nil
	}
	return "", nil
}

func statuses(s *PeerSet) map[string]string {
	out := map[string]string{}
	for k, e := range s.entries {
		out[k] = string(e.why)
		if e.winner != nil {
			out[k] += "<" + e.winner.key
		}
	}
	return out
}

// checkInvariants: the accepted leases (peers, and valid leases of other
// backends) fit the net-conf, do not overlap each other or us, and share
// no VtepMAC; the verdicts are the reference's; Peers is the accepted
// leases of our backend.
func checkInvariants(t testing.TB, s *PeerSet) {
	t.Helper()
	var held []*entry
	for _, e := range s.entries {
		if !e.why.holds() {
			continue
		}
		l := e.l
		if l.Subnet.Bits() != s.r.subnetLen || !s.r.network.Contains(l.Subnet.Addr()) || s.own.Subnet.Overlaps(l.Subnet) {
			t.Fatalf("accepted %s does not fit the network or overlaps ours", e.key)
		}
		if s.r.ipv6() && l.IPv6Subnet.IsValid() && (l.IPv6Subnet.Bits() != s.r.subnetLen6 || !s.r.network6.Contains(l.IPv6Subnet.Addr())) {
			t.Fatalf("accepted %s: IPv6 half does not fit", e.key)
		}
		if l.Attrs.PublicIP == s.r.self || badPublicIP(l.Attrs.PublicIP, s.r.network) {
			t.Fatalf("accepted %s with PublicIP %s", e.key, l.Attrs.PublicIP)
		}
		for _, h := range held {
			if h.l.Subnet.Overlaps(l.Subnet) || s.r.ipv6() && h.l.IPv6Subnet.IsValid() && l.IPv6Subnet.IsValid() && h.l.IPv6Subnet.Overlaps(l.IPv6Subnet) {
				t.Fatalf("accepted %s and %s overlap", h.key, e.key)
			}
			if e.mac4 != (dataplane.MAC{}) && e.mac4 == h.mac4 || e.mac6 != (dataplane.MAC{}) && e.mac6 == h.mac6 {
				t.Fatalf("accepted %s and %s share a VtepMAC", h.key, e.key)
			}
		}
		if e.mac4 != (dataplane.MAC{}) && e.mac4 == s.r.mac4 {
			t.Fatalf("accepted %s carries our VtepMAC", e.key)
		}
		held = append(held, e)
	}
	if got, want := statuses(s), reference(s); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("verdicts differ from the reference:\n got %v\nwant %v", got, want)
	}
	var peers []string
	for _, e := range s.entries {
		if e.why == "" {
			peers = append(peers, e.key)
		}
	}
	got := keysOf(s.Peers())
	slices.Sort(peers)
	if !slices.Equal(got, peers) {
		t.Fatalf("Peers %v, want %v", got, peers)
	}
}

func keysOf(ls []subnet.Lease) []string {
	var out []string
	for _, l := range ls {
		out = append(out, l.Key())
	}
	slices.Sort(out)
	return out
}

// tracker follows the Folds: the peers they add up to, leases included
// (Updated carries a peer's new lease), must be Peers().
type tracker map[string]subnet.Lease

func (tr tracker) apply(t testing.TB, f Fold) {
	t.Helper()
	for _, l := range f.Left {
		if _, ok := tr[l.Key()]; !ok {
			t.Fatalf("%s left but was no peer", l.Key())
		}
		delete(tr, l.Key())
	}
	for _, l := range f.Joined {
		if _, ok := tr[l.Key()]; ok {
			t.Fatalf("%s joined twice", l.Key())
		}
		tr[l.Key()] = l
	}
	for _, l := range f.Updated {
		old, ok := tr[l.Key()]
		if !ok || old.Attrs.Equal(l.Attrs) {
			t.Fatalf("%s updated but was no peer, or is unchanged", l.Key())
		}
		tr[l.Key()] = l
	}
}

func (tr tracker) check(t testing.TB, s *PeerSet) {
	t.Helper()
	var want []string
	for k := range tr {
		want = append(want, k)
	}
	slices.Sort(want)
	if got := keysOf(s.Peers()); !slices.Equal(got, want) {
		t.Fatalf("the Folds add up to %v, Peers is %v", want, got)
	}
	for _, p := range s.Peers() {
		if !tr[p.Key()].Attrs.Equal(p.Attrs) {
			t.Fatalf("the Folds say %s is %+v, Peers %+v", p.Key(), tr[p.Key()].Attrs, p.Attrs)
		}
	}
}

// TestPeerSetOrderIndependent: the same leases, arriving in any order, in
// any batches, with other leases coming and going meanwhile, give the
// same verdict for every lease as one batch of them all.
func TestPeerSetOrderIndependent(t *testing.T) {
	for seed := range uint64(300) {
		rng := rand.New(rand.NewPCG(seed, 1))
		netconf := netconf4
		if seed%2 == 1 {
			netconf = netconf46
		}
		final := map[string]subnet.Lease{}
		for range 4 + rng.IntN(20) {
			l := genLease(byte(rng.Uint32()), byte(rng.Uint32()), byte(rng.Uint32()))
			final[l.Key()] = l
		}
		var all []subnet.Lease
		for _, l := range final {
			all = append(all, l)
		}
		one := newSet(t, netconf)
		one.Apply(add(all...))
		checkInvariants(t, one)
		want := statuses(one)

		s, tr := newSet(t, netconf), tracker{}
		var evs []subnet.Event
		for _, l := range all {
			evs = append(evs, add(l)...)
			if rng.IntN(3) == 0 { // noise: a lease that comes and goes
				n := genLease(byte(rng.Uint32()), byte(rng.Uint32()), byte(rng.Uint32()))
				if _, ok := final[n.Key()]; !ok && n.Key() != one.ownKey { // removing ours starts a re-acquisition
					evs = append(evs, add(n)...)
					evs = append(evs, del(n)...)
				}
			}
		}
		rng.Shuffle(len(evs), func(i, j int) { evs[i], evs[j] = evs[j], evs[i] })
		// A removal shuffled before its add leaves that lease in: drop it
		// at the end, where it belongs.
		for len(evs) > 0 {
			n := min(len(evs), 1+rng.IntN(4))
			tr.apply(t, s.Apply(evs[:n]))
			tr.check(t, s)
			checkInvariants(t, s)
			evs = evs[n:]
		}
		for k, e := range s.entries {
			if _, ok := final[k]; !ok {
				tr.apply(t, s.Apply(del(e.l)))
			}
		}
		tr.check(t, s)
		for _, l := range all {
			if _, ok := s.entries[l.Key()]; !ok {
				tr.apply(t, s.Apply(add(l)))
			}
		}
		checkInvariants(t, s)
		tr.check(t, s)
		if got := statuses(s); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("seed %d: verdicts depend on the order:\n got %v\nwant %v", seed, got, want)
		}
	}
}

// FuzzPeerSet: arbitrary batches of adds and removes (and re-acquisitions
// of our own lease) keep the invariants after every step, agree with the
// reference, and end where one batch of the surviving leases ends.
func FuzzPeerSet(f *testing.F) {
	f.Add([]byte{0, 0x00, 0x00, 0x01, 0x00, 0x20, 0x02, 0x04, 0x01, 0x03})
	f.Add([]byte{1, 0x11, 0x41, 0x05, 0x12, 0x41, 0x02, 0xff, 0, 0, 0x12, 0x41, 0x03})
	f.Add([]byte{0, 0x80, 0x00, 0x01, 0x81, 0x00, 0x01, 0x04, 0x60, 0x0a, 0xfe, 0x03, 0x00})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 || len(data) > 600 {
			return
		}
		netconf := netconf4
		if data[0]&1 == 1 {
			netconf = netconf46
		}
		s, tr := newSet(t, netconf), tracker{}
		ops := data[1:]
		for len(ops) >= 3 {
			a, b, c := ops[0], ops[1], ops[2]
			ops = ops[3:]
			var f Fold
			switch {
			case a == 0xff:
				s.Reacquiring()
			case a == 0xfe:
				f = s.SetOwn(genLease(b&^0x40, 3, c)) // our new lease (PublicIP ours)
			case a&0x80 != 0:
				f = s.Apply(del(genLease(a, b, c)))
			default:
				f = s.Apply(add(genLease(a, b, c)))
			}
			tr.apply(t, f)
			tr.check(t, s)
			checkInvariants(t, s)
		}
		fresh := NewPeerSet(mustConfig(t, netconf), s.r.self)
		fresh.r, fresh.own, fresh.ownKey, fresh.acquiring = s.r, s.own, s.ownKey, s.acquiring
		var all []subnet.Lease
		for _, e := range s.entries {
			all = append(all, e.l)
		}
		fresh.Apply(add(all...))
		if got, want := statuses(s), statuses(fresh); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("history changed the verdicts:\n got %v\nwant %v", got, want)
		}
	})
}

func mustConfig(t testing.TB, netconf string) *subnet.Config {
	t.Helper()
	cfg, _, err := subnet.ParseConfig([]byte(netconf))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// All yields what Peers returns, in the same order (the per-peer
// reconcile takes the peers from All).
func TestPeerSetAllIsPeers(t *testing.T) {
	for seed := range uint64(100) {
		rng := rand.New(rand.NewPCG(seed, 2))
		s := newSet(t, []string{netconf4, netconf46}[seed%2])
		for range 1 + rng.IntN(4) {
			var ls []subnet.Lease
			for range 1 + rng.IntN(12) {
				ls = append(ls, genLease(byte(rng.Uint32()), byte(rng.Uint32()), byte(rng.Uint32())))
			}
			s.Apply(add(ls...))
		}
		seq, n := s.All()
		var got []subnet.Lease
		for p := range seq {
			got = append(got, *p)
		}
		if want := s.Peers(); !slices.EqualFunc(got, want, func(a, b subnet.Lease) bool { return a.Key() == b.Key() && a.Attrs.Equal(b.Attrs) }) || n != len(want) {
			t.Fatalf("seed %d: All gave %v (%d), Peers %v", seed, keyList(got), n, keyList(want))
		}
	}
}

func keyList(ls []subnet.Lease) []string {
	var out []string
	for _, l := range ls {
		out = append(out, l.Key())
	}
	return out
}
