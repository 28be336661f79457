package network

import (
	"cmp"
	"net/netip"
	"slices"

	"github.com/flanneld-go/flannel/subnet"
)

// fold turns a settled round into the Fold: peers that came, went or
// changed, and rejections not reported yet in this form.
func (s *PeerSet) fold(w *work, f Fold) Fold {
	var gone, came []subnet.Lease // for the Peers snapshot, if there is one
	snap := s.peers != nil && len(w.touched) <= 64
	if !snap {
		f.Joined = make([]subnet.Lease, 0, len(w.touched))
	}
	for key, b := range w.touched {
		e := s.entries[key]
		wasPeer := b.e != nil && b.why == ""
		isPeer := e != nil && e.why == ""
		if wasPeer {
			s.countType(b.e.l, -1)
		}
		if isPeer {
			s.countType(e.l, 1)
		}
		switch {
		case wasPeer && !isPeer:
			f.Left = append(f.Left, b.e.l)
			gone = appendIf(snap, gone, b.e.l)
		case isPeer && !wasPeer:
			f.Joined = append(f.Joined, e.l)
			came = appendIf(snap, came, e.l)
		case isPeer && b.e != e && !b.e.l.Attrs.Equal(e.l.Attrs):
			f.Changed = true
			f.Updated = append(f.Updated, e.l)
			gone, came = appendIf(snap, gone, b.e.l), appendIf(snap, came, e.l)
		}
		switch {
		case e == nil || isPeer:
			delete(s.reported, key)
		case e.why != reasonOurs:
			if r, ok := s.reported[key]; ok && r.why == e.why && r.attrs.Equal(e.l.Attrs) {
				continue
			}
			s.reported[key] = reported{e.why, e.l.Attrs}
			rj := Rejection{Lease: e.l, Reason: e.why}
			if e.winner != nil {
				rj.Winner = e.winner.l
			}
			f.Rejected = append(f.Rejected, rj)
		}
	}
	if len(f.Joined)+len(f.Left) > 0 {
		f.Changed = true
	}
	if f.Changed && !snap {
		s.peers, s.pending = nil, nil
	} else if f.Changed {
		s.notePeers(gone, came)
	}
	slices.SortFunc(f.Joined, bySubnet)
	slices.SortFunc(f.Left, bySubnet)
	slices.SortFunc(f.Updated, bySubnet)
	slices.SortFunc(f.Rejected, func(a, b Rejection) int { return bySubnet(a.Lease, b.Lease) })
	return f
}

// countType keeps the count of peers by advertised backend type.
func (s *PeerSet) countType(l subnet.Lease, d int) {
	t := BackendType(l)
	if s.byType[t] += d; s.byType[t] == 0 {
		delete(s.byType, t)
	}
}

// ByType is the number of peers of each backend type they advertise. The
// map is the set's own: read it, do not keep it.
func (s *PeerSet) ByType() map[string]int { return s.byType }

func appendIf(ok bool, ls []subnet.Lease, l subnet.Lease) []subnet.Lease {
	if !ok {
		return ls
	}
	return append(ls, l)
}

func bySubnet(a, b subnet.Lease) int {
	if c := a.Subnet.Addr().Compare(b.Subnet.Addr()); c != 0 {
		return c
	}
	return cmp.Compare(a.Key(), b.Key())
}

// byAddr orders peers, whose IPv4 subnets are distinct (they would
// conflict otherwise).
func byAddr(a, b subnet.Lease) int { return a.Subnet.Addr().Compare(b.Subnet.Addr()) }

// notePeers records peers gone and come for the next Peers snapshot.
// Peers have distinct IPv4 subnets, so the change is kept by address:
// nil for gone, the lease for come (a changed peer is both, in that
// order). Many changes at once just drop the snapshot.
func (s *PeerSet) notePeers(gone, came []subnet.Lease) {
	if s.peers == nil {
		return
	}
	if s.pending == nil {
		s.pending = map[netip.Addr]*subnet.Lease{}
	}
	for _, l := range gone {
		s.pending[l.Subnet.Addr()] = nil
	}
	for _, l := range came {
		s.pending[l.Subnet.Addr()] = &l
	}
	if len(s.pending) > 64 {
		s.peers, s.pending = nil, nil
	}
}

// nextPeers makes the next snapshot from the last and the pending
// changes: one copy, no sort. A snapshot is never modified once handed
// out.
func (s *PeerSet) nextPeers() []subnet.Lease {
	var drop []int
	var came []subnet.Lease
	for a, l := range s.pending {
		if i, ok := slices.BinarySearchFunc(s.peers, a, func(p subnet.Lease, a netip.Addr) int { return p.Subnet.Addr().Compare(a) }); ok {
			drop = append(drop, i)
		}
		if l != nil {
			came = append(came, *l)
		}
	}
	slices.Sort(drop)
	next := make([]subnet.Lease, 0, len(s.peers)-len(drop)+len(came))
	from := 0
	for _, i := range drop {
		next = append(next, s.peers[from:i]...)
		from = i + 1
	}
	next = append(next, s.peers[from:]...)
	for _, l := range came {
		i, _ := slices.BinarySearchFunc(next, l, byAddr)
		next = slices.Insert(next, i, l)
	}
	return next
}
