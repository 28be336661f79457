package dataplane

import (
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// OnLink reports whether ip is inside a network of one of the addresses of
// the link with index linkIndex, that is, reachable without a router.
// Equivalent to: ip addr show dev $link, then a prefix match.
func (n *Netlink) OnLink(linkIndex int, ip netip.Addr) (bool, error) {
	link, err := n.h.LinkByIndex(linkIndex)
	if err != nil {
		return false, fmt.Errorf("looking up link %d: %w", linkIndex, err)
	}
	addrs, err := n.h.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return false, fmt.Errorf("listing addresses of %s: %w", link.Attrs().Name, err)
	}
	for _, a := range addrs {
		ip0, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		if a.IP.To4() != nil {
			ip0 = ip0.Unmap()
		}
		ones, _ := a.Mask.Size()
		if netip.PrefixFrom(ip0, ones).Contains(ip) {
			return true, nil
		}
	}
	return false, nil
}
