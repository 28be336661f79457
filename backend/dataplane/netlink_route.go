package dataplane

import (
	"errors"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// RouteList implements Kernel.
func (n *Netlink) RouteList() ([]Route, error) {
	rs, err := dump(func() ([]netlink.Route, error) {
		return n.h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return nil, err
	}
	out := make([]Route, 0, len(rs))
	for _, r := range rs {
		if r.Type != unix.RTN_UNICAST && r.Type != unix.RTN_BLACKHOLE || len(r.MultiPath) > 0 {
			continue
		}
		out = append(out, fromNetlinkRoute(r))
	}
	return out, nil
}

func fromNetlinkRoute(r netlink.Route) Route {
	out := Route{LinkIndex: r.LinkIndex, OnLink: r.Flags&unix.RTNH_F_ONLINK != 0, Proto: int(r.Protocol)}
	if r.Type == unix.RTN_BLACKHOLE {
		// The kernel shows IPv6 blackholes on lo; a blackhole has no link.
		out.LinkIndex, out.Type, out.Metric = 0, Blackhole, r.Priority
	}
	switch {
	case r.Dst != nil:
		out.Dst, _ = prefixFromIPNet(r.Dst)
	case r.Family == netlink.FAMILY_V6:
		out.Dst = defaultV6
	default:
		out.Dst = defaultV4
	}
	if r.Gw != nil {
		out.Gw, _ = addrFromIP(r.Gw)
	}
	return out
}

func toNetlinkRoute(r Route) *netlink.Route {
	nr := &netlink.Route{
		Dst:       ipNetFromPrefix(r.Dst),
		LinkIndex: r.LinkIndex,
		Protocol:  netlink.RouteProtocol(r.Proto),
		Table:     unix.RT_TABLE_MAIN,
		Type:      unix.RTN_UNICAST,
	}
	if r.Type == Blackhole {
		nr.Type, nr.Priority, nr.LinkIndex = unix.RTN_BLACKHOLE, r.Metric, 0
	}
	if r.Gw.IsValid() {
		nr.Gw = r.Gw.AsSlice()
	}
	if r.OnLink {
		nr.Flags = unix.RTNH_F_ONLINK
	}
	return nr
}

// RouteReplace implements Kernel.
func (n *Netlink) RouteReplace(r Route) error {
	err := n.h.RouteReplace(toNetlinkRoute(r))
	if errors.Is(err, unix.EINVAL) && r.OnLink && r.Gw.Is6() && r.Dst.Contains(r.Gw) {
		// The kernel checks an IPv6 onlink gateway against the routes in
		// place, and the route being replaced (to the gateway's own
		// subnet, through another device: host-gw's, in a switch to
		// vxlan) makes it refuse "device mismatch". Without it the
		// replace goes through.
		// Equivalent to: ip -6 route del <dst>; ip -6 route replace <dst> via <gw> dev <dev> onlink
		if derr := ignoreGone(n.h.RouteDel(&netlink.Route{Dst: ipNetFromPrefix(r.Dst), Table: unix.RT_TABLE_MAIN})); derr != nil {
			return err
		}
		err = n.h.RouteReplace(toNetlinkRoute(r))
	}
	return err
}

// RouteDelete implements Kernel.
func (n *Netlink) RouteDelete(r Route) error { return ignoreGone(n.h.RouteDel(toNetlinkRoute(r))) }
