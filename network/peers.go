package network

import (
	"net/netip"
	"slices"

	"github.com/flanneld-go/flannel/subnet"
)

// PeerSet decides which leases are this host's peers, folding lease watch
// events into the current set. It is pure (no etcd, no kernel, no clock),
// so its rules are unit-tested directly:
//
//   - our own lease is not a peer; its removal is reported (OwnRemoved)
//     so the engine can acquire it again. A lease with our PublicIP is
//     ours too: while we re-acquire, the new lease can be seen before we
//     know its subnet, and a route to ourselves is never right;
//   - a lease whose subnet is outside the Network (a host still running
//     an older net-conf) is not a peer: routing to it could hijack
//     addresses outside the pod network;
//   - a lease of another backend type is not a peer of this host's
//     backend; a lease without a BackendType is upstream flannel's udp
//     backend, which writes none.
//
// It is not safe for concurrent use: the engine's loop owns it.
type PeerSet struct {
	network, network6 netip.Prefix
	backend           string
	self              netip.Addr // our PublicIP
	own               netip.Prefix
	leases            map[string]subnet.Lease // every lease but ours, by key
}

// Fold is what one batch of events changed, for the log lines.
type Fold struct {
	Joined, Left []subnet.Lease // peers of our backend that came or went
	// Ignored are leases that are not peers, each with the reason, when
	// they appear or change.
	Ignored    []Ignored
	OwnRemoved bool // our own lease was deleted from etcd
	Changed    bool // the peer set (or a peer's lease) changed
}

// Ignored is a lease left out of the peers, and why.
type Ignored struct {
	Lease  subnet.Lease
	Reason string // "outside the network", "another backend type"
}

// NewPeerSet returns an empty set for a host of the given net-conf that
// publishes self as its PublicIP.
func NewPeerSet(cfg *subnet.Config, self netip.Addr) *PeerSet {
	s := &PeerSet{network: cfg.Network, backend: cfg.BackendType, self: self, leases: map[string]subnet.Lease{}}
	if cfg.EnableIPv6 {
		s.network6 = cfg.IPv6Network
	}
	return s
}

// SetOwn sets our own lease's subnet; a lease with it is never a peer.
// Leases are kept whoever holds them, so when our subnet changes (a
// re-acquisition that got another one) a host that took the old subnet
// meanwhile becomes a peer at once: it is returned, for the log.
func (s *PeerSet) SetOwn(own subnet.Lease) (joined []subnet.Lease) {
	old := s.own
	s.own = own.Subnet
	for _, l := range s.leases {
		if l.Subnet == old && old != s.own && s.why(l) == "" {
			joined = append(joined, l)
		}
	}
	return joined
}

// BackendType is the type a lease advertises; upstream's udp backend
// writes none.
func BackendType(l subnet.Lease) string {
	if l.Attrs.BackendType == "" {
		return "udp"
	}
	return l.Attrs.BackendType
}

// why says why l is not a peer ("" if it is).
func (s *PeerSet) why(l subnet.Lease) string {
	switch {
	case l.Subnet == s.own || (s.self.IsValid() && l.Attrs.PublicIP == s.self):
		return "ours"
	case !s.network.Contains(l.Subnet.Addr()):
		return "outside the network"
	case l.IPv6Subnet.IsValid() && s.network6.IsValid() && !s.network6.Contains(l.IPv6Subnet.Addr()):
		return "outside the network"
	case BackendType(l) != s.backend:
		return "another backend type"
	}
	return ""
}

// Apply folds one batch of events into the set.
func (s *PeerSet) Apply(batch []subnet.Event) Fold {
	var f Fold
	for _, ev := range batch {
		l := ev.Lease
		if l.Subnet == s.own && ev.Type == subnet.EventRemoved {
			f.OwnRemoved = true
		}
		key := l.Key()
		prev, known := s.leases[key]
		wasPeer := known && s.why(prev) == ""
		if ev.Type == subnet.EventRemoved {
			delete(s.leases, key)
			if wasPeer {
				f.Left = append(f.Left, prev)
				f.Changed = true
			}
			continue
		}
		s.leases[key] = l
		why := s.why(l)
		switch {
		case why != "":
			if why != "ours" && (!known || !prev.Attrs.Equal(l.Attrs) || s.why(prev) != why) {
				f.Ignored = append(f.Ignored, Ignored{l, why})
			}
			if wasPeer {
				f.Left = append(f.Left, prev)
				f.Changed = true
			}
		case !wasPeer:
			f.Joined = append(f.Joined, l)
			f.Changed = true
		case !prev.Attrs.Equal(l.Attrs) || prev.IPv6Subnet != l.IPv6Subnet:
			f.Changed = true
		}
	}
	return f
}

// Peers returns the current peers, sorted by subnet.
func (s *PeerSet) Peers() []subnet.Lease {
	out := make([]subnet.Lease, 0, len(s.leases))
	for _, l := range s.leases {
		if s.why(l) == "" {
			out = append(out, l)
		}
	}
	slices.SortFunc(out, func(a, b subnet.Lease) int { return a.Subnet.Addr().Compare(b.Subnet.Addr()) })
	return out
}

// Len is the number of leases known besides ours, peers or not.
func (s *PeerSet) Len() int {
	n := len(s.leases)
	for _, l := range s.leases {
		if s.why(l) == "ours" {
			n--
		}
	}
	return n
}
