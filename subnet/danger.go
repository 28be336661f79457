package subnet

// Net-confs that would break the hosts they run on are refused.
//
// Every host routes the pod Network (or the leased subnets in it) into the
// overlay and leaves traffic inside it unmasqueraded, so a Network that
// covers addresses the hosts themselves use takes that traffic away from
// them. Two cases are decided here, from the net-conf alone:
//
//   - a prefix of length 0 (0.0.0.0/0, ::/0) is the default route: every
//     address, the underlay and etcd included;
//   - a Network that overlaps addresses no pod can have: "this network"
//     0.0.0.0/8, loopback, link-local (169.254.0.0/16, where clouds serve
//     instance metadata; fe80::/10) and multicast.
//
// The second rule is what refuses very short prefixes: every IPv4 /1 and /2
// overlaps one of those ranges, as do ::/1 and 8000::/1. A plain length
// limit would also refuse networks that are fine, such as the class E
// range 240.0.0.0/4 or the IPv6 unique-local fc00::/7. Whether a Network
// holds a host's own underlay address can only be told on the host, once
// its external interface is chosen: see NetworkHolding.

import (
	"fmt"
	"net/netip"
)

// reservedRange is address space a pod Network must not overlap.
type reservedRange struct {
	p    netip.Prefix
	what string
}

var (
	reservedV4 = []reservedRange{
		{netip.MustParsePrefix("0.0.0.0/8"), `"this network" addresses`},
		{netip.MustParsePrefix("127.0.0.0/8"), "loopback addresses"},
		{netip.MustParsePrefix("169.254.0.0/16"), "link-local addresses (cloud metadata services live at 169.254.169.254)"},
		{netip.MustParsePrefix("224.0.0.0/4"), "multicast addresses"},
	}
	reservedV6 = []reservedRange{
		{netip.MustParsePrefix("::/127"), "the unspecified and loopback addresses"},
		{netip.MustParsePrefix("fe80::/10"), "link-local addresses"},
		{netip.MustParsePrefix("ff00::/8"), "multicast addresses"},
	}
)

// checkSpan refuses a Network that is the default route or overlaps
// reserved address space.
func (f familySpec) checkSpan(n netip.Prefix) error {
	nf := f.field("Network")
	if n.Bits() == 0 {
		return fmt.Errorf("%s: %s is the default route (every address): the hosts would route their own traffic, etcd's included, into the overlay; use a private range that holds no host address, e.g. %q",
			nf, n, f.example())
	}
	reserved := reservedV6
	if f.is4 {
		reserved = reservedV4
	}
	for _, r := range reserved {
		if n.Overlaps(r.p) {
			return fmt.Errorf("%s: %s overlaps %s, %s, which cannot be pod addresses; use a private range that holds no host address, e.g. %q",
				nf, n, r.p, r.what, f.example())
		}
	}
	return nil
}

// NetworkHolding returns the net-conf field ("Network" or "IPv6Network")
// and the prefix that hold a, for checking a host's own addresses against
// the pod network; ok is false when neither does.
func (c *Config) NetworkHolding(a netip.Addr) (field string, n netip.Prefix, ok bool) {
	a = a.Unmap()
	switch {
	case !a.IsValid():
		return "", netip.Prefix{}, false
	case a.Is4() && c.Network.IsValid() && c.Network.Contains(a):
		return "Network", c.Network, true
	case a.Is6() && c.EnableIPv6 && c.IPv6Network.IsValid() && c.IPv6Network.Contains(a):
		return "IPv6Network", c.IPv6Network, true
	}
	return "", netip.Prefix{}, false
}
