package network

import (
	"iter"
	"net/netip"
	"slices"

	"github.com/flanneld-go/flannel/backend/dataplane"
	"github.com/flanneld-go/flannel/backend/mux"
	"github.com/flanneld-go/flannel/backend/vxlan"
	"github.com/flanneld-go/flannel/backend/wireguard"
	"github.com/flanneld-go/flannel/subnet"
)

// PeerSet decides which leases are this host's peers, folding lease watch
// events into the current set. It is the one place leases from etcd are
// validated before anything is built from them, and it is pure (no etcd,
// no kernel, no clock), so its rules are unit-tested directly:
//
//   - our own lease (by key) is not a peer; its removal is reported
//     (OwnRemoved) so the engine can acquire it again. While we
//     re-acquire, a lease with our PublicIP is ours too: the new lease can
//     be seen before we know its subnet, and a route to ourselves is
//     never right;
//   - a lease is rejected when it does not fit the net-conf (subnet
//     length, Network; the IPv6 half likewise), has an unusable PublicIP
//     or backend data (vxlan VtepMAC, wireguard PublicKey), collides with
//     this host (our subnet, PublicIP, VtepMAC or public key), or with an
//     older accepted lease (subnet, VtepMAC or public key): see
//     Reason for the list, and peerindex.go for how conflicts are settled
//     the same way on every host;
//   - a valid lease of another backend type is not a peer of this host's
//     backend (a lease without a BackendType is upstream flannel's udp
//     backend, which writes none), but it does hold its subnet and MAC
//     against younger leases.
//
// It is not safe for concurrent use: the engine's loop owns it.
type PeerSet struct {
	r         rules
	own       subnet.Lease // our lease; invalid Subnet: none
	ownKey    string
	acquiring bool // our lease was removed, a new one is not known yet

	entries  map[string]*entry // every lease, by key
	buckets  map[bucketKey]*bucket
	reported map[string]reported // rejections logged, by key
	ours     int                 // entries with reasonOurs
	round    uint64
	byType   map[string]int               // peers by advertised backend type
	peers    []subnet.Lease               // sorted snapshot; nil when to be rebuilt
	pending  map[netip.Addr]*subnet.Lease // changes since the snapshot
}

// reported is what was last said about a rejected lease.
type reported struct {
	why   Reason
	attrs subnet.LeaseAttrs
}

// reasonPending is the verdict of a lease not evaluated yet.
const reasonPending Reason = "pending"

// Fold is what one batch of events (or a change of our own lease)
// changed: for the log lines, and for the backend's parts of those peers.
type Fold struct {
	Joined, Left []subnet.Lease // peers of our backend that came or went
	// Updated are peers whose lease changed (attributes), as they are now.
	Updated []subnet.Lease
	// Rejected are leases that are not peers, each with the reason, when
	// they appear, or their reason or attributes change.
	Rejected   []Rejection
	OwnRemoved bool // our own lease was deleted from etcd
	Changed    bool // the peer set (or a peer's lease) changed
}

// Rejection is a lease left out of the peers, and why.
type Rejection struct {
	Lease  subnet.Lease
	Reason Reason
	// Winner is the older lease it conflicts with (overlaps_lease,
	// vtep_mac_duplicate); zero otherwise.
	Winner subnet.Lease
}

// NewPeerSet returns an empty set for a host of the given net-conf that
// publishes self as its PublicIP (invalid: no host, as for flanneld
// leases, which judges the leases among themselves).
func NewPeerSet(cfg *subnet.Config, self netip.Addr) *PeerSet {
	s := &PeerSet{entries: map[string]*entry{}, buckets: map[bucketKey]*bucket{}, reported: map[string]reported{}, byType: map[string]int{}}
	s.r = rules{network: cfg.Network, subnetLen: cfg.SubnetLen, serves: ServedTypes(cfg.BackendType), self: self}
	if cfg.EnableIPv6 {
		s.r.network6, s.r.subnetLen6 = cfg.IPv6Network, cfg.IPv6SubnetLen
	}
	return s
}

// SetOwnAttrs sets what this host publishes (from the backend's Prepare,
// PublicIP fields filled in): a lease claiming our PublicIP, PublicIPv6
// or VtepMAC is rejected. The engine calls it once the backend started.
func (s *PeerSet) SetOwnAttrs(a subnet.LeaseAttrs) Fold {
	if a.PublicIP.IsValid() {
		s.r.self = a.PublicIP
	}
	if s.r.ipv6() {
		s.r.self6 = a.PublicIPv6
	}
	s.r.mac4, s.r.mac6, s.r.wgKey = dataplane.MAC{}, dataplane.MAC{}, wgKey{}
	if BackendType(subnet.Lease{Attrs: a}) == wireguard.TypeName {
		s.r.wgKey, _ = leaseWGKey(subnet.Lease{Attrs: a})
	}
	if BackendType(subnet.Lease{Attrs: a}) == vxlan.TypeName {
		s.r.mac4, _ = vxlan.LeaseMAC(a.BackendData)
		if s.r.ipv6() && len(a.BackendV6Data) > 0 {
			s.r.mac6, _ = vxlan.LeaseMAC(a.BackendV6Data)
		}
	}
	return s.recompute()
}

// SetOwn sets our own lease; it ends a re-acquisition. Leases are kept
// whoever holds them, so when our subnet changes (a re-acquisition that
// got another one) a host that took the old subnet meanwhile becomes a
// peer at once: it is in the Fold, for the log.
func (s *PeerSet) SetOwn(own subnet.Lease) Fold {
	s.own, s.ownKey, s.acquiring = own, "", false
	if own.Subnet.IsValid() {
		s.ownKey = own.Key()
	}
	return s.recompute()
}

// Reacquiring tells the set that we are acquiring our lease again (it was
// lost, or deleted): until SetOwn, a lease with our PublicIP is ours.
func (s *PeerSet) Reacquiring() {
	if !s.acquiring {
		s.acquiring = true
		s.recompute()
	}
}

// recompute re-evaluates every lease, after a change of our own facts.
func (s *PeerSet) recompute() Fold {
	w := s.newWork(0)
	for _, e := range s.entries {
		w.queue(e)
	}
	s.settle(w)
	return s.fold(w, Fold{})
}

// ServedTypes are the backend types whose leases are peers of a host
// whose own backend is primary: every type a mux.Mux combines when
// primary is one of them (each peer is reached by the backend it
// advertises), else primary alone (wireguard is never mixed with the
// plaintext backends).
func ServedTypes(primary string) []string {
	if mux.CanMix(primary) {
		return slices.Clone(mux.Mixable)
	}
	return []string{primary}
}

// SetServed sets the backend types whose leases are peers (ServedTypes
// of the net-conf's backend by default), after a switch of backend.
func (s *PeerSet) SetServed(types []string) Fold {
	s.r.serves = slices.Clone(types)
	return s.recompute()
}

// BackendType is the type a lease advertises; upstream's udp backend
// writes none.
func BackendType(l subnet.Lease) string {
	if l.Attrs.BackendType == "" {
		return "udp"
	}
	return l.Attrs.BackendType
}

// evaluate is e's verdict, given the settled verdicts of older leases.
func (s *PeerSet) evaluate(e *entry) (Reason, *entry) {
	l := e.l
	switch {
	case e.key == s.ownKey,
		s.acquiring && (s.r.self.IsValid() && l.Attrs.PublicIP == s.r.self || s.r.self6.IsValid() && l.Attrs.PublicIPv6 == s.r.self6):
		return reasonOurs, nil
	case e.static != "":
		return e.static, nil
	}
	if why := s.r.own(e, s.own); why != "" {
		return why, nil
	}
	if win, why := s.conflict(e); win != nil {
		return why, win
	}
	if !slices.Contains(s.r.serves, BackendType(l)) {
		return ReasonBackendType, nil
	}
	return "", nil
}

// Apply folds one batch of events into the set.
func (s *PeerSet) Apply(batch []subnet.Event) Fold {
	var f Fold
	w := s.newWork(len(batch))
	if len(s.entries) == 0 && len(batch) > 1024 {
		// The first list: the maps at their size at once, rather than
		// grown (and copied) step by step.
		s.entries, s.buckets = make(map[string]*entry, len(batch)), make(map[bucketKey]*bucket, len(batch))
	}
	for _, ev := range batch {
		key := ev.Lease.Key()
		if key == s.ownKey && ev.Type == subnet.EventRemoved {
			f.OwnRemoved = true
			s.acquiring = true
		}
		old := s.entries[key]
		w.touch(key, old)
		if old != nil {
			s.unindex(old, w)
			delete(s.entries, key)
			if old.why == reasonOurs {
				s.ours--
			}
		}
		if ev.Type == subnet.EventRemoved {
			continue
		}
		e := &entry{l: ev.Lease, key: key, why: reasonPending}
		e.static, e.mac4, e.mac6 = s.r.static(ev.Lease)
		if e.static == "" && BackendType(ev.Lease) == wireguard.TypeName {
			if k, _ := leaseWGKey(ev.Lease); k != (wgKey{}) {
				e.wgKey = &k
			}
		}
		s.entries[key] = e
		s.index(e)
		w.queue(e)
	}
	if f.OwnRemoved {
		// Leases with our PublicIP are ours now: look at all of them.
		for _, e := range s.entries {
			w.queue(e)
		}
	}
	s.settle(w)
	return s.fold(w, f)
}

// Peers returns the current peers, sorted by subnet. The slice is a
// snapshot the set never changes: the caller may keep it, and must not
// modify it.
func (s *PeerSet) Peers() []subnet.Lease {
	if s.peers != nil && len(s.pending) > 0 {
		s.peers, s.pending = s.nextPeers(), nil
	}
	if s.peers == nil {
		s.peers = make([]subnet.Lease, 0, len(s.entries))
		for _, e := range s.entries {
			if e.why == "" {
				s.peers = append(s.peers, e.l)
			}
		}
		slices.SortFunc(s.peers, byAddr)
	}
	return s.peers
}

// All yields the current peers in Peers' order, and says how many there
// are: the set's own leases, which it never modifies (a changed lease is
// a new one), without a copy of them (Peers' snapshot is 2.4 MiB at
// 10,000 peers, kept until the set changes). The sequence is valid until
// the set changes; the leases stay as they are for as long as anyone
// holds them.
func (s *PeerSet) All() (iter.Seq[*subnet.Lease], int) {
	es := make([]*entry, 0, len(s.entries))
	for _, e := range s.entries {
		if e.why == "" {
			es = append(es, e)
		}
	}
	slices.SortFunc(es, func(a, b *entry) int { return byAddr(a.l, b.l) })
	return func(yield func(*subnet.Lease) bool) {
		for _, e := range es {
			if !yield(&e.l) {
				return
			}
		}
	}, len(es)
}

// Len is the number of leases known besides ours, peers or not.
func (s *PeerSet) Len() int { return len(s.entries) - s.ours }

// Status says whether the lease with key is a peer (reason ""), and if
// not, why and which lease won over it; known is false for a key not in
// the set, and for our own lease.
func (s *PeerSet) Status(key string) (why Reason, winner string, known bool) {
	e := s.entries[key]
	if e == nil || e.why == reasonOurs {
		return "", "", false
	}
	if e.winner != nil {
		winner = e.winner.key
	}
	return e.why, winner, true
}
