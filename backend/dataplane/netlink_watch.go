package dataplane

import (
	"errors"
	"net/netip"
	"syscall"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// watchGroups are the rtnetlink groups a watch joins: links, neighbours
// (FDB entries included), addresses and routes of both families, nexthops.
var watchGroups = []int{unix.RTNLGRP_LINK, unix.RTNLGRP_NEIGH, unix.RTNLGRP_IPV4_IFADDR, unix.RTNLGRP_IPV6_IFADDR,
	unix.RTNLGRP_IPV4_ROUTE, unix.RTNLGRP_IPV6_ROUTE, unix.RTNLGRP_NEXTHOP}

// watchBuffer is the watch socket's receive buffer: room for the echoes
// of a first reconcile of tens of thousands of entries while the reader
// catches up. An overflow is reported (ChangesLost), not fatal.
const watchBuffer = 8 << 20

var _ Watcher = (*Netlink)(nil)

// Watch implements Watcher with one rtnetlink socket of the process's
// network namespace joined to the groups of links, neighbours, addresses,
// routes and nexthops. Routes through nexthops of ours read back as the
// routes that were set, as in RouteList.
// Equivalent to: ip monitor link neigh address route nexthop
func (n *Netlink) Watch(done <-chan struct{}) (<-chan []Change, error) {
	s, err := nl.Subscribe(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, err
	}
	fd := s.GetFd()
	for _, g := range watchGroups {
		if err := unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_ADD_MEMBERSHIP, g); err != nil && g != unix.RTNLGRP_NEXTHOP {
			s.Close()
			return nil, err // (a kernel without nexthop objects has no such group)
		}
	}
	if s.SetReceiveBufferSize(watchBuffer, true) != nil {
		_ = s.SetReceiveBufferSize(watchBuffer, false) // unprivileged: up to rmem_max
	}
	out := make(chan []Change, 64)
	go func() {
		<-done
		s.Close()
	}()
	go n.watch(s, done, out)
	return out, nil
}

func (n *Netlink) watch(s *nl.NetlinkSocket, done <-chan struct{}, out chan<- []Change) {
	defer close(out)
	for {
		msgs, _, err := s.Receive()
		var batch []Change
		switch {
		case errors.Is(err, unix.ENOBUFS):
			batch = []Change{{Kind: ChangesLost}}
		case errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return // closed (done), or a socket that cannot be read
		default:
			batch = n.changes(msgs)
		}
		if len(batch) == 0 {
			continue
		}
		select {
		case out <- batch:
		case <-done:
			return
		}
	}
}

// changes converts one read's messages.
func (n *Netlink) changes(msgs []syscall.NetlinkMessage) []Change {
	var out []Change
	for _, m := range msgs {
		if c, ok := n.change(m.Header.Type, m.Data); ok {
			out = append(out, c)
		}
	}
	return out
}

func (n *Netlink) change(typ uint16, m []byte) (Change, bool) {
	switch typ {
	case unix.RTM_NEWROUTE, unix.RTM_DELROUTE:
		d, ok := decodeRoute(m)
		if !ok {
			return Change{}, false
		}
		r := d.r
		t := n.nh
		t.mu.Lock()
		if k, ours := t.keys[r.nhid]; ours && r.nhid != 0 && r.Type == Unicast {
			r.Gw, r.LinkIndex, r.OnLink = k.addr(), int(k.link), k.onlink
		}
		t.mu.Unlock()
		return Change{Kind: RouteChanged, Deleted: typ == unix.RTM_DELROUTE, Route: r.Route, Metric: d.metric}, true
	case unix.RTM_NEWNEIGH, unix.RTM_DELNEIGH:
		return neighChange(typ == unix.RTM_DELNEIGH, m)
	case unix.RTM_NEWADDR, unix.RTM_DELADDR:
		a, ok := parseAddr(m)
		return Change{Kind: AddrChanged, Deleted: typ == unix.RTM_DELADDR, Addr: a}, ok
	case unix.RTM_NEWLINK, unix.RTM_DELLINK:
		if len(m) < unix.SizeofIfInfomsg {
			return Change{}, false
		}
		info := nl.DeserializeIfInfomsg(m)
		// Up is usable: administratively up with a carrier. Losing the
		// carrier takes the IPv4 routes through the device away as
		// silently as setting it down.
		up := info.Flags&unix.IFF_UP != 0 && info.Flags&unix.IFF_LOWER_UP != 0
		return Change{Kind: LinkChanged, Deleted: typ == unix.RTM_DELLINK, Link: int(info.Index), Up: up}, true
	case unix.RTM_DELNEXTHOP:
		nh, ok := parseNexthop(m)
		if !ok || nh.proto != Proto {
			return Change{}, false
		}
		t := n.nh
		t.mu.Lock()
		used := t.refs[nh.id] > 0
		t.mu.Unlock()
		return Change{Kind: NexthopChanged, Deleted: true, Nexthop: nh.id}, used
	}
	return Change{}, false
}

// neighChange converts a neighbour message: an FDB entry (AF_BRIDGE, with
// a remote), or a neighbour; a neighbour that is not permanent is the
// deletion of the permanent entry under its key (NeighList lists
// permanent entries only).
func neighChange(deleted bool, m []byte) (Change, bool) {
	e, err := netlink.NeighDeserialize(m)
	if err != nil || len(e.HardwareAddr) != 6 && !deleted {
		return Change{}, false
	}
	ip, ok := addrFromIP(e.IP)
	if !ok {
		return Change{}, false
	}
	var mac MAC
	copy(mac[:], e.HardwareAddr)
	if e.Family == unix.AF_BRIDGE {
		return Change{Kind: FDBChanged, Deleted: deleted, FDB: FDB{LinkIndex: e.LinkIndex, MAC: mac, Dst: ip}}, len(e.HardwareAddr) == 6
	}
	if e.State&netlink.NUD_PERMANENT == 0 {
		deleted = true
	}
	if deleted {
		mac = MAC{} // what went is the key's entry, whatever the message says of it
	}
	return Change{Kind: NeighChanged, Deleted: deleted, Neigh: Neigh{LinkIndex: e.LinkIndex, IP: ip, MAC: mac}}, true
}

// parseAddr reads an address message as AddrList does: the local address
// (IFA_LOCAL) where there is one, else IFA_ADDRESS.
func parseAddr(m []byte) (Addr, bool) {
	if len(m) < unix.SizeofIfAddrmsg {
		return Addr{}, false
	}
	msg := nl.DeserializeIfAddrmsg(m)
	attrs, err := nl.ParseRouteAttr(m[unix.SizeofIfAddrmsg:])
	if err != nil {
		return Addr{}, false
	}
	var local, address netip.Addr
	for _, a := range attrs {
		switch a.Attr.Type {
		case unix.IFA_LOCAL:
			local, _ = netip.AddrFromSlice(a.Value)
		case unix.IFA_ADDRESS:
			address, _ = netip.AddrFromSlice(a.Value)
		}
	}
	ip := address
	if local.IsValid() {
		ip = local
	}
	if !ip.IsValid() {
		return Addr{}, false
	}
	return Addr{LinkIndex: int(msg.Index), Prefix: netip.PrefixFrom(ip.Unmap(), int(msg.Prefixlen))}, true
}
