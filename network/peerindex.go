package network

import (
	"cmp"
	"container/heap"
	"net/netip"

	"github.com/flanneld-go/flannel/backend/dataplane"
	"github.com/flanneld-go/flannel/subnet"
)

// How the peer set settles conflicts, and what it costs.
//
// The accepted leases are chosen greedily by age: in order of rank
// (etcd CreateRevision, then key), a lease is accepted when it passes the
// checks of its own and of this host, and shares no subnet and no VtepMAC
// with an older accepted lease. That is a function of the set of leases
// alone, so every host (and every order of events) gets the same answer,
// and removing a bad lease gives back exactly the state without it.
//
// Valid leases all have the net-conf's subnet lengths, so two of them
// overlap only when their subnets are equal: conflicts are found through
// buckets of equal subnets, equal MACs and equal WireGuard public keys,
// each with at most one holder
// once settled. A change re-evaluates the changed lease and, when a
// lease starts or stops holding, the younger members of its buckets, in
// rank order (a heap), so the cost is near the change, not the set. Only
// changes of this host's own facts re-evaluate everything.

// entry is one lease and its current verdict.
type entry struct {
	l          subnet.Lease
	key        string
	static     Reason        // what the lease alone fails ("" if nothing)
	mac4, mac6 dataplane.MAC // zero when none
	nb         uint8         // buckets used
	wgKey      *wgKey        // a wireguard lease's public key; nil when none
	why        Reason        // verdict: "" for a peer
	winner     *entry        // the older lease it conflicts with
	buckets    [5]*bucket    // only for statically valid leases; nb used
	pos        [5]int32      // e's index in each bucket's members
	queued     uint64        // the settle round it is queued in
}

func (e *entry) older(o *entry) bool {
	if c := cmp.Compare(e.l.CreateRevision, o.l.CreateRevision); c != 0 {
		return c < 0
	}
	return e.key < o.key
}

// bucketKey names one subnet, MAC or public key leases can share: the
// kind, then the subnet's address (16 bytes, IPv4 mapped) and length, the
// MAC, or the key. A key of 33 bytes rather than a struct of each (80)
// keeps the two buckets of each of 10,000 leases small.
type bucketKey struct {
	kind uint8 // bucketSubnet4 ...
	b    [32]byte
}

func subnetBucket(kind uint8, p netip.Prefix) bucketKey {
	k := bucketKey{kind: kind}
	a := p.Addr().As16()
	copy(k.b[:], a[:])
	k.b[16] = byte(p.Bits())
	return k
}

func macBucket(kind uint8, m dataplane.MAC) bucketKey {
	k := bucketKey{kind: kind}
	copy(k.b[:], m[:])
	return k
}

const (
	bucketSubnet4 uint8 = iota
	bucketSubnet6
	bucketMAC4
	bucketMAC6
	bucketWGKey
)

// bucket is the leases under one bucketKey. It does not hold its key
// (33 bytes, in a bucket of 48): a member's keysOf gives it, in the
// order of the member's buckets.
type bucket struct {
	members []*entry
	holders []*entry // at most one once settled
}

func (e *entry) bs() []*bucket { return e.buckets[:e.nb] }

// keysOf are the buckets of a statically valid lease (the first n).
func (s *PeerSet) keysOf(e *entry) (out [5]bucketKey, n int) {
	out[0], n = subnetBucket(bucketSubnet4, e.l.Subnet), 1
	if s.r.ipv6() && e.l.IPv6Subnet.IsValid() {
		out[n], n = subnetBucket(bucketSubnet6, e.l.IPv6Subnet), n+1
	}
	if e.mac4 != (dataplane.MAC{}) {
		out[n], n = macBucket(bucketMAC4, e.mac4), n+1
	}
	if e.mac6 != (dataplane.MAC{}) {
		out[n], n = macBucket(bucketMAC6, e.mac6), n+1
	}
	if e.wgKey != nil {
		out[n], n = bucketKey{kind: bucketWGKey, b: *e.wgKey}, n+1
	}
	return out, n
}

func (s *PeerSet) index(e *entry) {
	if e.static != "" {
		return
	}
	keys, n := s.keysOf(e)
	for _, k := range keys[:n] {
		b := s.buckets[k]
		if b == nil {
			b = &bucket{}
			s.buckets[k] = b
		}
		e.buckets[e.nb], e.pos[e.nb] = b, int32(len(b.members))
		e.nb++
		b.members = append(b.members, e)
	}
}

// unindex drops e from its buckets; if it held them, their younger
// members are queued, as they may take its place.
func (s *PeerSet) unindex(e *entry, w *work) {
	if e.why.holds() {
		s.queueYounger(e, w)
	}
	keys, _ := s.keysOf(e)
	for j, b := range e.bs() {
		// Swap-remove in O(1): the last member takes e's place.
		i, last := e.pos[j], b.members[len(b.members)-1]
		b.members[i] = last
		for k, lb := range last.bs() {
			if lb == b {
				last.pos[k] = i
			}
		}
		b.members[len(b.members)-1] = nil
		b.members = b.members[:len(b.members)-1]
		b.holders = deleteEntry(b.holders, e)
		if len(b.members) == 0 {
			delete(s.buckets, keys[j])
		}
	}
	e.buckets, e.nb = [5]*bucket{}, 0
}

func (s *PeerSet) queueYounger(e *entry, w *work) {
	for _, b := range e.bs() {
		for _, m := range b.members {
			if e.older(m) {
				w.queue(m)
			}
		}
	}
}

func deleteEntry(es []*entry, e *entry) []*entry {
	for i, x := range es {
		if x == e {
			return append(es[:i], es[i+1:]...)
		}
	}
	return es
}

// conflict returns the older holder of one of e's buckets, subnets
// first, and the reason it wins.
func (s *PeerSet) conflict(e *entry) (*entry, Reason) {
	var win *entry
	var why Reason
	keys, _ := s.keysOf(e)
	for j, b := range e.bs() {
		r := reasonFor(keys[j].kind)
		for _, h := range b.holders {
			if h == e || !h.older(e) {
				continue // younger holders are not settled yet, and lose to e anyway
			}
			if win == nil || r == ReasonOverlapsLease && why != ReasonOverlapsLease || r == why && h.older(win) {
				win, why = h, r
			}
		}
	}
	return win, why
}

func reasonFor(kind uint8) Reason {
	switch kind {
	case bucketSubnet4, bucketSubnet6:
		return ReasonOverlapsLease
	case bucketWGKey:
		return ReasonPublicKeyDuplicate
	}
	return ReasonVtepMACDuplicate
}

// before is a lease's state before a batch, for the Fold: its entry then
// (whose lease never changes: a new value is a new entry) and verdict.
type before struct {
	e   *entry // nil: no lease under the key
	why Reason
}

// work is one settle round: the queue, ordered by rank, and the state of
// every lease it touched before the round.
type work struct {
	round   uint64
	q       entryHeap
	touched map[string]before
}

// newWork starts a round that will touch about n leases.
func (s *PeerSet) newWork(n int) *work {
	s.round++
	return &work{round: s.round, touched: make(map[string]before, n)}
}

func (w *work) queue(e *entry) {
	if e.queued != w.round {
		e.queued = w.round
		heap.Push(&w.q, e)
	}
}

// touch records e's state before the round, once.
func (w *work) touch(key string, e *entry) {
	if _, ok := w.touched[key]; ok {
		return
	}
	w.touched[key] = before{e: e}
	if e != nil {
		w.touched[key] = before{e: e, why: e.why}
	}
}

// settle evaluates the queued leases oldest first. A lease's verdict
// depends only on older ones, which are final when it is taken off the
// queue; when it starts or stops holding, its younger bucket mates are
// queued.
func (s *PeerSet) settle(w *work) {
	for w.q.Len() > 0 {
		e := heap.Pop(&w.q).(*entry)
		if s.entries[e.key] != e {
			continue // replaced or removed in this batch
		}
		why, win := s.evaluate(e)
		if why == e.why && win == e.winner {
			continue
		}
		w.touch(e.key, e)
		held := e.why.holds()
		s.setVerdict(e, why, win)
		if e.why.holds() != held {
			s.queueYounger(e, w)
		}
	}
}

func (s *PeerSet) setVerdict(e *entry, why Reason, win *entry) {
	if (e.why == reasonOurs) != (why == reasonOurs) {
		if why == reasonOurs {
			s.ours++
		} else {
			s.ours--
		}
	}
	if e.why.holds() != why.holds() {
		for _, b := range e.bs() {
			if why.holds() {
				b.holders = append(b.holders, e)
			} else {
				b.holders = deleteEntry(b.holders, e)
			}
		}
	}
	e.why, e.winner = why, win
}

type entryHeap []*entry

func (h entryHeap) Len() int           { return len(h) }
func (h entryHeap) Less(i, j int) bool { return h[i].older(h[j]) }
func (h entryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *entryHeap) Push(x any)        { *h = append(*h, x.(*entry)) }
func (h *entryHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}
