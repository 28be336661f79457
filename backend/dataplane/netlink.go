package dataplane

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Netlink is the real kernel, through one netlink handle.
type Netlink struct {
	h     *netlink.Handle
	addrs addrSnapshot // for OnLink
}

// NewNetlink wraps h; nil means the network namespace of the process.
func NewNetlink(h *netlink.Handle) *Netlink {
	if h == nil {
		h = &netlink.Handle{}
	}
	return &Netlink{h: h}
}

// dumpRetries bounds retries of dumps the kernel interrupted because the
// table changed under them (netlink.ErrDumpInterrupted).
const dumpRetries = 5

// RouteList implements RouteKernel. It also marks the address snapshot
// of OnLink stale: the next reconcile dumps the addresses afresh.
func (n *Netlink) RouteList() ([]Route, error) {
	n.addrs.invalidate()
	var rs []netlink.Route
	var err error
	for i := 0; i < dumpRetries; i++ {
		rs, err = n.h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	out := make([]Route, 0, len(rs))
	for _, r := range rs {
		if r.Type != unix.RTN_UNICAST || len(r.MultiPath) > 0 {
			continue
		}
		out = append(out, fromNetlink(r))
	}
	return out, nil
}

func fromNetlink(r netlink.Route) Route {
	var out Route
	if r.Dst != nil {
		a, _ := netip.AddrFromSlice(r.Dst.IP)
		ones, _ := r.Dst.Mask.Size()
		out.Dst = netip.PrefixFrom(a.Unmap(), ones)
		if r.Dst.IP.To4() == nil {
			out.Dst = netip.PrefixFrom(a, ones)
		}
	} else if r.Family == netlink.FAMILY_V6 {
		out.Dst = netip.MustParsePrefix("::/0")
	} else {
		out.Dst = netip.MustParsePrefix("0.0.0.0/0")
	}
	if r.Gw != nil {
		g, _ := netip.AddrFromSlice(r.Gw)
		if r.Gw.To4() != nil {
			g = g.Unmap()
		}
		out.Gw = g
	}
	out.LinkIndex = r.LinkIndex
	out.OnLink = r.Flags&unix.RTNH_F_ONLINK != 0
	out.Proto = int(r.Protocol)
	return out
}

func toNetlink(r Route) *netlink.Route {
	nr := &netlink.Route{
		Dst:       prefixToIPNet(r.Dst),
		LinkIndex: r.LinkIndex,
		Protocol:  netlink.RouteProtocol(r.Proto),
		Table:     unix.RT_TABLE_MAIN,
		Type:      unix.RTN_UNICAST,
	}
	if r.Gw.IsValid() {
		nr.Gw = net.IP(r.Gw.AsSlice())
	}
	if r.OnLink {
		nr.Flags = unix.RTNH_F_ONLINK
	}
	return nr
}

func prefixToIPNet(p netip.Prefix) *net.IPNet {
	bits := 128
	if p.Addr().Is4() {
		bits = 32
	}
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), bits)}
}

// RouteReplace implements RouteKernel.
func (n *Netlink) RouteReplace(r Route) error {
	if err := n.h.RouteReplace(toNetlink(r)); err != nil {
		return fmt.Errorf("%w", err)
	}
	return nil
}

// RouteDelete implements RouteKernel.
func (n *Netlink) RouteDelete(r Route) error {
	err := n.h.RouteDel(toNetlink(r))
	if errors.Is(err, unix.ESRCH) || errors.Is(err, unix.ENOENT) {
		return nil
	}
	return err
}
