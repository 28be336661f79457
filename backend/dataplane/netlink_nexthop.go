package dataplane

import (
	"net/netip"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// The wire format of nexthop objects (linux/nexthop.h), which the netlink
// library we use does not speak: a struct nhmsg header followed by NHA_*
// attributes. Routes name a nexthop object with RTA_NH_ID.
//
// These messages go through a socket of the calling thread's network
// namespace (the process's), as the library's calls through a zero Handle
// do.

// rtaNhID is RTA_NH_ID (linux/rtnetlink.h), which golang.org/x/sys lacks.
const rtaNhID = 30

// nhKey is what a nexthop of ours is: a gateway on a link. Routes with the
// same key share one nexthop object.
//
// It is a key of two maps with an entry per peer at scale (10,000 host-gw
// or vxlan peers, each its own gateway), so it is kept small: the gateway
// as 16 bytes (IPv4 mapped), not a netip.Addr (24).
type nhKey struct {
	gw     [16]byte
	v4     bool
	onlink bool
	link   int32
}

func newNHKey(gw netip.Addr, link int, onlink bool) nhKey {
	return nhKey{gw: gw.As16(), v4: gw.Is4(), onlink: onlink, link: int32(link)}
}

// addr is the gateway.
func (k nhKey) addr() netip.Addr {
	a := netip.AddrFrom16(k.gw)
	if k.v4 {
		return a.Unmap()
	}
	return a
}

// rtnl sends our own rtnetlink messages through one socket, opened on
// first use and kept: a socket per message costs more system calls than
// the message. Its user serialises the calls.
type rtnl struct{ sock *nl.SocketHandle }

func (c *rtnl) exec(req *nl.NetlinkRequest, resType uint16) ([][]byte, error) {
	if c.sock == nil {
		s, err := nl.Subscribe(unix.NETLINK_ROUTE) // no groups: a plain request socket
		if err != nil {
			return nil, err
		}
		s.SetSendTimeout(&nl.SocketTimeoutTv)
		s.SetReceiveTimeout(&nl.SocketTimeoutTv)
		c.sock = &nl.SocketHandle{Socket: s}
	}
	req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_ROUTE: c.sock}
	return req.Execute(unix.NETLINK_ROUTE, resType)
}

// nhMsg is struct nhmsg: family, scope, protocol, resvd, flags.
type nhMsg struct {
	family, protocol uint8
	flags            uint32
}

func (m nhMsg) Len() int { return unix.SizeofNhmsg }

func (m nhMsg) Serialize() []byte {
	b := make([]byte, unix.SizeofNhmsg)
	b[0], b[2] = m.family, m.protocol // scope and resvd must be 0
	nl.NativeEndian().PutUint32(b[4:], m.flags)
	return b
}

// nexthopAdd creates nexthop id for k, marked with Proto; flags adds
// NLM_F_EXCL (a new id: fail if taken) or NLM_F_REPLACE.
// Equivalent to: ip nexthop add|replace id $id via $gw dev $link [onlink] proto 98
func (c *rtnl) nexthopAdd(id uint32, k nhKey, flags int) error {
	req := nl.NewNetlinkRequest(unix.RTM_NEWNEXTHOP, unix.NLM_F_CREATE|unix.NLM_F_ACK|flags)
	m := nhMsg{family: family8(k.addr()), protocol: Proto}
	if k.onlink {
		m.flags = unix.RTNH_F_ONLINK
	}
	req.AddData(m)
	req.AddData(nl.NewRtAttr(unix.NHA_ID, nl.Uint32Attr(id)))
	req.AddData(nl.NewRtAttr(unix.NHA_OIF, nl.Uint32Attr(uint32(k.link))))
	req.AddData(nl.NewRtAttr(unix.NHA_GATEWAY, k.addr().AsSlice()))
	_, err := c.exec(req, 0)
	return err
}

// nexthopDel deletes nexthop id, and with it every route that uses it.
// Equivalent to: ip nexthop del id $id
func (c *rtnl) nexthopDel(id uint32) error {
	req := nl.NewNetlinkRequest(unix.RTM_DELNEXTHOP, unix.NLM_F_ACK)
	req.AddData(nhMsg{})
	req.AddData(nl.NewRtAttr(unix.NHA_ID, nl.Uint32Attr(id)))
	_, err := c.exec(req, 0)
	return err
}

// nexthop is a dumped nexthop object. gateway is false for those that are
// not one gateway on one link (groups, blackholes, FDB nexthops).
type nexthop struct {
	id      uint32
	proto   uint8
	key     nhKey
	gateway bool
}

// nexthopDump lists the nexthop objects of both families. Kernels without
// nexthop objects (before 5.3) answer EOPNOTSUPP.
// Equivalent to: ip nexthop show
func (c *rtnl) nexthopDump() ([]nexthop, error) {
	req := nl.NewNetlinkRequest(unix.RTM_GETNEXTHOP, unix.NLM_F_DUMP)
	req.AddData(nhMsg{})
	var out []nexthop
	err := dumpEach(req, unix.RTM_NEWNEXTHOP, func(m []byte) {
		if nh, ok := parseNexthop(m); ok {
			out = append(out, nh)
		}
	})
	return out, err
}

func parseNexthop(m []byte) (nexthop, bool) {
	if len(m) < unix.SizeofNhmsg {
		return nexthop{}, false
	}
	native := nl.NativeEndian()
	nh := nexthop{proto: m[2]}
	onlink := native.Uint32(m[4:])&unix.RTNH_F_ONLINK != 0
	var link int
	var addr netip.Addr
	var oif, gw, other bool
	ok := eachAttr(m[unix.SizeofNhmsg:], func(typ uint16, v []byte) {
		switch typ {
		case unix.NHA_ID:
			nh.id = native.Uint32(v)
		case unix.NHA_OIF:
			link, oif = int(native.Uint32(v)), true
		case unix.NHA_GATEWAY:
			addr, gw = netip.AddrFromSlice(v)
		case unix.NHA_GROUP, unix.NHA_BLACKHOLE, unix.NHA_ENCAP, nhaFDB:
			other = true
		}
	})
	nh.key = newNHKey(addr, link, onlink)
	nh.gateway = oif && gw && !other
	return nh, ok && nh.id != 0
}

// nhaFDB is NHA_FDB (linux/nexthop.h): a nexthop for VXLAN FDB entries.
const nhaFDB = 11

// routeReplaceVia installs the unicast route to dst through nexthop id,
// replacing any route to dst.
// Equivalent to: ip route replace $dst nhid $id proto 98
func (c *rtnl) routeReplaceVia(dst netip.Prefix, id uint32) error {
	return c.routeVia(unix.RTM_NEWROUTE, unix.NLM_F_CREATE|unix.NLM_F_REPLACE, nl.NewRtMsg(), dst, id)
}

// routeDeleteVia deletes the route to dst through nexthop id; a route to
// dst that does not use id stays (ESRCH).
// Equivalent to: ip route del $dst nhid $id proto 98
func (c *rtnl) routeDeleteVia(dst netip.Prefix, id uint32) error {
	return c.routeVia(unix.RTM_DELROUTE, 0, nl.NewRtDelMsg(), dst, id)
}

// routeVia sends one route message of ours to dst through nexthop id.
func (c *rtnl) routeVia(typ, flags int, m *nl.RtMsg, dst netip.Prefix, id uint32) error {
	req := nl.NewNetlinkRequest(typ, flags|unix.NLM_F_ACK)
	m.Family, m.Dst_len, m.Protocol = family8(dst.Addr()), uint8(dst.Bits()), Proto
	req.AddData(m)
	req.AddData(nl.NewRtAttr(unix.RTA_DST, dst.Addr().AsSlice()))
	req.AddData(nl.NewRtAttr(rtaNhID, nl.Uint32Attr(id)))
	_, err := c.exec(req, 0)
	return err
}

func family8(a netip.Addr) uint8 {
	if a.Is4() {
		return unix.AF_INET
	}
	return unix.AF_INET6
}
