package dataplane

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
)

// OnLink reports whether ip is inside a network of one of the addresses of
// the link with index linkIndex, that is, reachable without a router.
// Equivalent to: ip addr show dev $link, then a prefix match.
//
// Backends ask this once per peer on every reconcile, so it answers from
// one dump of the host's addresses (addrSnapshot) instead of two netlink
// requests per call: with a thousand peers that was two thousand requests
// per reconcile, most of the daemon's CPU time under lease churn.
func (n *Netlink) OnLink(linkIndex int, ip netip.Addr) (bool, error) {
	prefixes, err := n.addrs.prefixes(n.h, linkIndex)
	if err != nil {
		return false, err
	}
	for _, p := range prefixes {
		if p.Contains(ip) {
			return true, nil
		}
	}
	return false, nil
}

// addrSnapshot is one dump of every address of the host, by link. It is
// taken at the first OnLink after it was invalidated: RouteList
// invalidates it, and every reconcile lists the routes once, so each
// reconcile sees addresses as they are when it starts. maxAge bounds its
// life for callers that never list routes.
type addrSnapshot struct {
	mu     sync.Mutex
	byLink map[int][]netip.Prefix // nil: none taken
	at     time.Time
	dumps  int // dumps taken, for tests
}

const addrSnapshotMaxAge = time.Second

func (s *addrSnapshot) invalidate() {
	s.mu.Lock()
	s.byLink = nil
	s.mu.Unlock()
}

// prefixes returns the networks of the link's addresses. A link with no
// address is looked up once, so that a link that does not exist is an
// error, as before.
func (s *addrSnapshot) prefixes(h *netlink.Handle, linkIndex int) ([]netip.Prefix, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byLink == nil || time.Since(s.at) > addrSnapshotMaxAge {
		var addrs []netlink.Addr
		var err error
		for i := 0; i < dumpRetries; i++ {
			addrs, err = h.AddrList(nil, netlink.FAMILY_ALL)
			if !errors.Is(err, netlink.ErrDumpInterrupted) {
				break
			}
		}
		if err != nil {
			return nil, fmt.Errorf("listing addresses: %w", err)
		}
		m := map[int][]netip.Prefix{}
		for _, a := range addrs {
			ip0, ok := netip.AddrFromSlice(a.IP)
			if !ok {
				continue
			}
			if a.IP.To4() != nil {
				ip0 = ip0.Unmap()
			}
			ones, _ := a.Mask.Size()
			m[a.LinkIndex] = append(m[a.LinkIndex], netip.PrefixFrom(ip0, ones))
		}
		s.byLink, s.at = m, time.Now()
		s.dumps++
	}
	p, ok := s.byLink[linkIndex]
	if !ok {
		if _, err := h.LinkByIndex(linkIndex); err != nil {
			return nil, fmt.Errorf("looking up link %d: %w", linkIndex, err)
		}
		s.byLink[linkIndex] = nil // exists, no address: remembered until the next dump
	}
	return p, nil
}
