package udp

import (
	"encoding/binary"
	"net/netip"
	"slices"

	"golang.org/x/sys/unix"
)

// peer is one subnet of a peer lease: where packets for it go (the
// peer's PublicIP and port) and whom datagrams from it come from.
type peer struct {
	addr   netip.AddrPort
	subnet netip.Prefix
	// acceptOnly: the lease is of another backend type (vxlan, host-gw),
	// so no packet goes to the peer through us, but a datagram from it
	// is accepted: during a backend switch a host that still sees us as
	// udp sends to us over udp while its own lease already says vxlan.
	acceptOnly bool
}

// origin is what a datagram from one peer address and port may carry:
// inner packets whose source lies in one of the subnets leased by that
// PublicIP (an IPv4 and, with dual-stack, an IPv6 one; more when one
// PublicIP holds several leases).
type origin struct {
	addr    netip.AddrPort
	subnets []netip.Prefix
}

// owns reports whether an inner source address belongs to the origin.
func (o *origin) owns(src netip.Addr) bool {
	for _, p := range o.subnets {
		if p.Contains(src) {
			return true
		}
	}
	return false
}

// table is the forwarding table: immutable once published, swapped as a
// whole (atomic.Pointer), so the packet path reads it without locks. It is
// family-neutral: lookups go by netip.Addr and the prefix lengths present.
// routes and origins differ: every peer may send to us (origins), only
// udp peers get packets from us (routes).
type table struct {
	network4, network6 netip.Prefix // the Network (invalid when absent)
	own4, own6         netip.Prefix // our lease
	lens4, lens6       []int        // distinct subnet lengths of the routes, longest first
	routes             map[netip.Prefix]*peer
	origins            map[netip.Addr]*origin // who may send to us (by PublicIP), from which port
}

// newTable builds the table of peers, which all have the backend port; it
// keeps pointers into peers, which the caller must not change afterwards.
// It is rebuilt on every change of the peer set (Commit), so it does
// little besides filling the two maps: the peers, the origins and their
// subnets live in three arrays, and the subnets of one PublicIP that come
// one after the other in peers (a lease's) share one slice of them.
func newTable(network4, network6, own4, own6 netip.Prefix, peers []peer) *table {
	t := &table{network4: network4, network6: network6, own4: own4, own6: own6,
		routes: make(map[netip.Prefix]*peer, len(peers)), origins: make(map[netip.Addr]*origin, len(peers))}
	origins := make([]origin, 0, len(peers))
	subnets := make([]netip.Prefix, len(peers))
	var o *origin
	for i := range peers {
		p := &peers[i]
		subnets[i] = p.subnet
		if o == nil || o.addr != p.addr { // a lease's subnets come one after the other
			o = t.origins[p.addr.Addr()]
		}
		switch {
		case o == nil:
			origins = append(origins, origin{addr: p.addr, subnets: subnets[i : i+1]})
			o = &origins[len(origins)-1]
			t.origins[p.addr.Addr()] = o
		case &o.subnets[len(o.subnets)-1] == &subnets[i-1]:
			o.subnets = o.subnets[:len(o.subnets)+1] // the next one in subnets
		default:
			o.subnets = append(slices.Clip(o.subnets), p.subnet)
		}
		if !p.acceptOnly {
			t.addRoute(p)
		}
	}
	for _, l := range []*[]int{&t.lens4, &t.lens6} {
		slices.Sort(*l)
		slices.Reverse(*l)
	}
	return t
}

func (t *table) addRoute(p *peer) {
	t.routes[p.subnet] = p
	lens := &t.lens4
	if p.subnet.Addr().Is6() {
		lens = &t.lens6
	}
	if !slices.Contains(*lens, p.subnet.Bits()) {
		*lens = append(*lens, p.subnet.Bits())
	}
}

// lookup returns the peer whose subnet holds dst, or nil.
func (t *table) lookup(dst netip.Addr) *peer {
	lens := t.lens4
	if dst.Is6() {
		lens = t.lens6
	}
	for _, l := range lens {
		p, err := dst.Prefix(l)
		if err != nil {
			continue
		}
		if r := t.routes[p]; r != nil {
			return r
		}
	}
	return nil
}

// isPeer reports whether a datagram's source address belongs to a peer.
func (t *table) isPeer(src netip.Addr) bool { return t.origins[src] != nil }

// origin returns what a datagram from src may carry, or nil and the drop
// reason: dropNotPeer when src is no peer's PublicIP, dropWrongPort when
// it is one but the port is not the backend's. Peers send from the socket
// they listen on (upstream's udp backend too), so a datagram from another
// port is not one of theirs.
func (t *table) origin(src netip.AddrPort) (*origin, int) {
	switch o := t.origins[src.Addr()]; {
	case o == nil:
		return nil, dropNotPeer
	case o.addr.Port() != src.Port():
		return nil, dropWrongPort
	default:
		return o, 0
	}
}

// inNetwork reports whether dst is inside the cluster Network.
func (t *table) inNetwork(dst netip.Addr) bool {
	if dst.Is4() {
		return t.network4.IsValid() && t.network4.Contains(dst)
	}
	return t.network6.IsValid() && t.network6.Contains(dst)
}

// ours reports whether dst is inside our own lease.
func (t *table) ours(dst netip.Addr) bool {
	if dst.Is4() {
		return t.own4.IsValid() && t.own4.Contains(dst)
	}
	return t.own6.IsValid() && t.own6.Contains(dst)
}

// sockaddr is a socket address in kernel layout, big enough for IPv6.
type sockaddr struct {
	raw [unix.SizeofSockaddrInet6]byte
	len uint32
}

func newSockaddr(ap netip.AddrPort) sockaddr {
	var s sockaddr
	if ap.Addr().Is4() {
		binary.NativeEndian.PutUint16(s.raw[0:], unix.AF_INET)
		binary.BigEndian.PutUint16(s.raw[2:], ap.Port())
		a := ap.Addr().As4()
		copy(s.raw[4:8], a[:])
		s.len = unix.SizeofSockaddrInet4
		return s
	}
	binary.NativeEndian.PutUint16(s.raw[0:], unix.AF_INET6)
	binary.BigEndian.PutUint16(s.raw[2:], ap.Port())
	a := ap.Addr().As16()
	copy(s.raw[8:24], a[:])
	s.len = unix.SizeofSockaddrInet6
	return s
}

// addr decodes a socket address filled in by the kernel.
func (s *sockaddr) addr() netip.Addr {
	switch binary.NativeEndian.Uint16(s.raw[0:]) {
	case unix.AF_INET:
		return netip.AddrFrom4([4]byte(s.raw[4:8]))
	case unix.AF_INET6:
		return netip.AddrFrom16([16]byte(s.raw[8:24])).Unmap()
	}
	return netip.Addr{}
}

// addrPort decodes a socket address filled in by the kernel, with its
// port.
func (s *sockaddr) addrPort() netip.AddrPort {
	return netip.AddrPortFrom(s.addr(), binary.BigEndian.Uint16(s.raw[2:]))
}
