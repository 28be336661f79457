package dataplane

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// Routes of ours with a gateway go through nexthop objects where the
// kernel has them (see nexthop_table.go); the others, and every route on
// a kernel without them, are plain routes through the netlink library.

// RouteList implements Kernel. A route through a nexthop of ours reads
// back as the Route that was set, whatever the kernel adds to its dump
// (net.ipv4.nexthop_compat_mode).
func (n *Netlink) RouteList() ([]Route, error) {
	t := n.nh
	t.mu.Lock()
	defer t.mu.Unlock()
	rs, err := n.routes()
	if err != nil {
		return nil, err
	}
	out := make([]Route, 0, len(rs))
	for _, r := range rs {
		if k, ours := t.keys[r.nhid]; ours && r.nhid != 0 {
			r.Gw, r.LinkIndex, r.OnLink = k.addr(), int(k.link), k.onlink
		}
		out = append(out, r.Route)
	}
	return out, nil
}

// routes dumps the main table, adopting our nexthops before and
// recounting their use after. Called with n.nh.mu held.
func (n *Netlink) routes() ([]dumpedRoute, error) {
	t := n.nh
	if err := t.load(); err != nil {
		return nil, err
	}
	rs, err := dump(t.conn.routeDump)
	if err != nil {
		return nil, err
	}
	if !t.off {
		t.recount(rs)
	}
	return rs, nil
}

// ready adopts our nexthops and counts their use, once. Called with
// n.nh.mu held.
func (n *Netlink) ready() error {
	if n.nh.loaded {
		return nil
	}
	_, err := n.routes()
	return err
}

// RouteReplace implements Kernel. A unicast route of ours with a gateway
// goes through the nexthop object for its gateway, link and onlink flag,
// created when new.
// Equivalent to: ip nexthop add id $id via $Gw dev $link [onlink] proto 98;
// ip route replace $Dst nhid $id proto 98
func (n *Netlink) RouteReplace(r Route) error {
	err := n.routeReplace(r)
	if errors.Is(err, unix.EINVAL) && r.OnLink && r.Gw.Is6() && r.Dst.Contains(r.Gw) {
		// The kernel checks an IPv6 onlink gateway (of a route, or of a
		// nexthop object) against the routes in place, and the route
		// being replaced (to the gateway's own subnet, through another
		// device: host-gw's, in a switch to vxlan) makes it refuse
		// "device mismatch". Without that route the replace goes through.
		// Equivalent to: ip -6 route del <dst>; ip -6 route replace <dst> via <gw> dev <dev> onlink
		if derr := n.deleteTo(r.Dst); derr != nil {
			return err
		}
		err = n.routeReplace(r)
	}
	return err
}

// deleteTo deletes the route to dst in the main table, whatever it is.
func (n *Netlink) deleteTo(dst netip.Prefix) error {
	t := n.nh
	t.mu.Lock()
	defer t.mu.Unlock()
	if id, via := t.dsts[dst]; via {
		if err := t.conn.routeDeleteVia(dst, id); ignoreGone(err) != nil {
			return err
		}
		t.forget(dst)
		return nil
	}
	return ignoreGone(n.h.RouteDel(&netlink.Route{Dst: ipNetFromPrefix(dst), Table: unix.RT_TABLE_MAIN}))
}

// routeReplace is RouteReplace's one attempt.
func (n *Netlink) routeReplace(r Route) error {
	t := n.nh
	t.mu.Lock()
	defer t.mu.Unlock()
	k, ok := nexthopFor(r)
	if !ok {
		return n.replacePlain(r)
	}
	if err := n.ready(); err != nil {
		return err
	}
	if t.off {
		return n.replacePlain(r)
	}
	id, fresh, err := t.acquire(k)
	if err != nil {
		return n.refused(r, err)
	}
	err = t.conn.routeReplaceVia(r.Dst, id)
	if errors.Is(err, unix.EINVAL) && !fresh {
		// The kernel deleted the nexthop since the last route dump (it
		// does when the device goes down): make it again.
		if err = t.add(id, k, unix.NLM_F_REPLACE); err == nil {
			err = t.conn.routeReplaceVia(r.Dst, id)
		}
	}
	if err != nil {
		if t.refs[id] == 0 {
			t.drop(id)
		}
		return err
	}
	t.use(r.Dst, id)
	return nil
}

// refused installs r as a plain route after the kernel refused its
// nexthop. A kernel without nexthop objects (EOPNOTSUPP), or one that
// refuses the first nexthop of ours (EINVAL) but takes the plain route,
// gets plain routes from now on, without a word per route.
func (n *Netlink) refused(r Route, err error) error {
	perr := n.replacePlain(r)
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL) && !n.nh.made && perr == nil {
		n.nh.off = true
	}
	return perr
}

// replacePlain installs r through the library. It replaces a route of ours
// through a nexthop when it takes the same place (a unicast route without
// a metric). A plain delete, by contrast, does not touch the counts: it
// may not have matched a route through a nexthop, and a count too high
// only keeps a nexthop until the next route dump, one too low would
// delete a nexthop in use.
func (n *Netlink) replacePlain(r Route) error {
	if err := n.h.RouteReplace(toNetlinkRoute(r)); err != nil {
		return err
	}
	if r.Metric == 0 {
		n.nh.forget(r.Dst)
	}
	return nil
}

// RouteDelete implements Kernel. The nexthop of a route of ours goes with
// its last route.
// Equivalent to: ip route del $Dst nhid $id proto 98 [; ip nexthop del id $id]
// or: ip route del $r
func (n *Netlink) RouteDelete(r Route) error {
	t := n.nh
	t.mu.Lock()
	defer t.mu.Unlock()
	k, ok := nexthopFor(r)
	if ok {
		if err := n.ready(); err != nil {
			return err
		}
	}
	if id, via := t.dsts[r.Dst]; ok && via && t.keys[id] == k {
		err := t.conn.routeDeleteVia(r.Dst, id)
		if ignoreGone(err) != nil {
			return err
		}
		t.forget(r.Dst)
		if err == nil {
			return nil
		}
		// Gone: someone replaced it with a plain route, maybe equal to r.
	}
	return ignoreGone(n.h.RouteDel(toNetlinkRoute(r)))
}

// RemoveNexthops deletes every nexthop object marked proto 98, with any
// route still using one, and returns their ids: the last step of
// decommissioning a host, after the routes of ours are gone. A kernel
// without nexthop objects has none.
// Equivalent to: ip nexthop flush protocol 98
func (n *Netlink) RemoveNexthops() ([]uint32, error) {
	t := n.nh
	t.mu.Lock()
	defer t.mu.Unlock()
	defer t.reset()
	nhs, err := dump(t.conn.nexthopDump)
	if errors.Is(err, unix.EOPNOTSUPP) {
		return nil, nil
	}
	var errs []error
	if err != nil {
		errs = append(errs, err)
	}
	var out []uint32
	for _, nh := range nhs {
		if nh.proto != Proto {
			continue
		}
		if err := ignoreGone(t.conn.nexthopDel(nh.id)); err != nil {
			errs = append(errs, fmt.Errorf("ip nexthop del id %d: %w", nh.id, err))
			continue
		}
		out = append(out, nh.id)
	}
	return out, errors.Join(errs...)
}

// dumpedRoute is a route of the main table as the kernel lists it, with
// the id of the nexthop object it goes through (0 for none).
type dumpedRoute struct {
	Route
	nhid uint32
}

// routeDump lists the unicast and blackhole routes of the main table of
// both families; cached and multipath routes are left out.
// Equivalent to: ip route show table main; ip -6 route show table main
func (c *rtnl) routeDump() ([]dumpedRoute, error) {
	req := nl.NewNetlinkRequest(unix.RTM_GETROUTE, unix.NLM_F_DUMP)
	req.AddData(&nl.RtMsg{})
	var out []dumpedRoute
	err := dumpEach(req, unix.RTM_NEWROUTE, func(m []byte) {
		if r, ok := parseRoute(m); ok {
			out = append(out, r)
		}
	})
	return out, err
}

func parseRoute(m []byte) (dumpedRoute, bool) {
	d, ok := decodeRoute(m)
	if !ok || d.r.Type == OtherRoute {
		return dumpedRoute{}, false
	}
	return d.r, true
}

// decodedRoute is a route message of the main table: the route (Type
// OtherRoute for a kind we never make, and for multipath routes), with
// its priority.
type decodedRoute struct {
	r      dumpedRoute
	metric int
}

// decodeRoute reads a route message of the main table; cached routes and
// other families are left out.
func decodeRoute(m []byte) (decodedRoute, bool) {
	if len(m) < unix.SizeofRtMsg {
		return decodedRoute{}, false
	}
	msg := nl.DeserializeRtMsg(m)
	if msg.Family != unix.AF_INET && msg.Family != unix.AF_INET6 || msg.Flags&unix.RTM_F_CLONED != 0 {
		return decodedRoute{}, false
	}
	r := dumpedRoute{Route: Route{OnLink: msg.Flags&unix.RTNH_F_ONLINK != 0, Proto: int(msg.Protocol)}}
	dst, table, metric := netip.IPv4Unspecified(), uint32(msg.Table), 0
	if msg.Family == unix.AF_INET6 {
		dst = netip.IPv6Unspecified()
	}
	native := nl.NativeEndian()
	multipath := false
	ok := eachAttr(m[msg.Len():], func(typ uint16, v []byte) {
		switch typ {
		case unix.RTA_DST:
			dst, _ = netip.AddrFromSlice(v)
		case unix.RTA_GATEWAY:
			r.Gw, _ = netip.AddrFromSlice(v)
		case unix.RTA_OIF:
			r.LinkIndex = int(native.Uint32(v))
		case unix.RTA_PRIORITY:
			metric = int(native.Uint32(v))
		case unix.RTA_TABLE:
			table = native.Uint32(v)
		case rtaNhID:
			r.nhid = native.Uint32(v)
		case unix.RTA_MULTIPATH:
			multipath = true
		}
	})
	if !ok || table != unix.RT_TABLE_MAIN {
		return decodedRoute{}, false
	}
	r.Dst = netip.PrefixFrom(dst, int(msg.Dst_len))
	switch {
	case multipath || msg.Type != unix.RTN_UNICAST && msg.Type != unix.RTN_BLACKHOLE:
		r.Type = OtherRoute
	case msg.Type == unix.RTN_BLACKHOLE:
		// The kernel shows IPv6 blackholes on lo; a blackhole has no link.
		r.LinkIndex, r.Type, r.Metric = 0, Blackhole, metric
	}
	return decodedRoute{r, metric}, true
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
