package network

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"sort"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/flanneld-go/flannel/backend"
)

// IfaceOptions say how to choose the external interface and addresses.
type IfaceOptions struct {
	Iface      []string // names or addresses, first match wins
	IfaceRegex []string // regexps matched against addresses, then names
	CanReach   string   // an address: use the interface the kernel routes it through
	PublicIP   string   // advertised IPv4 address override
	PublicIPv6 string   // advertised IPv6 address override
	IPv6       bool     // dual-stack: an IPv6 address is required
}

type hostLink struct {
	name  string
	index int
	mtu   int
	up    bool
	addrs []netip.Prefix // global-scope unicast addresses
}

// FindExternal chooses the external interface: --iface (name or address,
// first match wins), then --iface-regex, then --iface-can-reach, else the
// interface of the default route. The error lists every interface and its
// addresses, so the operator can pick the right value.
func FindExternal(h *netlink.Handle, o IfaceOptions) (*backend.ExternalInterface, error) {
	links, err := listLinks(h)
	if err != nil {
		return nil, err
	}
	var chosen *hostLink
	var want netip.Addr // a specific address asked for with --iface
	switch {
	case len(o.Iface) > 0:
		for _, s := range o.Iface {
			if chosen, want = matchIface(links, s); chosen != nil {
				break
			}
		}
		if chosen == nil {
			return nil, fmt.Errorf("--iface %s: no interface has that name or address; interfaces: %s", strings.Join(o.Iface, ","), describe(links))
		}
	case len(o.IfaceRegex) > 0:
		for _, s := range o.IfaceRegex {
			re, err := regexp.Compile(s)
			if err != nil {
				return nil, fmt.Errorf("--iface-regex %q: %w", s, err)
			}
			if chosen, want = matchRegex(links, re); chosen != nil {
				break
			}
		}
		if chosen == nil {
			return nil, fmt.Errorf("--iface-regex %s: no interface address or name matches; interfaces: %s", strings.Join(o.IfaceRegex, ","), describe(links))
		}
	case o.CanReach != "":
		dst, err := netip.ParseAddr(o.CanReach)
		if err != nil {
			return nil, fmt.Errorf("--iface-can-reach %q is not an IP address", o.CanReach)
		}
		rs, err := h.RouteGet(net.IP(dst.AsSlice()))
		if err != nil || len(rs) == 0 {
			return nil, fmt.Errorf("--iface-can-reach %s: the kernel has no route to it (%v); interfaces: %s", dst, err, describe(links))
		}
		chosen = byIndex(links, rs[0].LinkIndex)
		if rs[0].Src != nil {
			want, _ = netip.AddrFromSlice(rs[0].Src)
			want = want.Unmap()
		}
	default:
		idx, err := defaultRouteLink(h)
		if err != nil {
			return nil, fmt.Errorf("%w; choose one with --iface; interfaces: %s", err, describe(links))
		}
		chosen = byIndex(links, idx)
	}
	if chosen == nil {
		return nil, fmt.Errorf("the chosen interface vanished; interfaces: %s", describe(links))
	}
	return externalFor(chosen, want, o)
}

func externalFor(l *hostLink, want netip.Addr, o IfaceOptions) (*backend.ExternalInterface, error) {
	ext := &backend.ExternalInterface{Name: l.name, Index: l.index, MTU: l.mtu}
	for _, p := range l.addrs {
		a := p.Addr()
		switch {
		case want.IsValid() && a == want && a.Is4():
			ext.Addr = a
		case want.IsValid() && a == want:
			ext.Addr6 = a
		case a.Is4() && !ext.Addr.IsValid() && !(want.IsValid() && want.Is4()):
			ext.Addr = a
		case a.Is6() && !ext.Addr6.IsValid() && !(want.IsValid() && want.Is6()):
			ext.Addr6 = a
		}
	}
	if !ext.Addr.IsValid() {
		return nil, fmt.Errorf("interface %s has no IPv4 address (it has: %s); give it one or choose another with --iface", l.name, addrList(l))
	}
	ext.PublicIP, ext.PublicIPv6 = ext.Addr, ext.Addr6
	if o.PublicIP != "" {
		a, err := netip.ParseAddr(o.PublicIP)
		if err != nil || !a.Is4() {
			return nil, fmt.Errorf("--public-ip %q is not an IPv4 address", o.PublicIP)
		}
		ext.PublicIP = a
	}
	if o.PublicIPv6 != "" {
		a, err := netip.ParseAddr(o.PublicIPv6)
		if err != nil || !a.Is6() || a.Is4In6() {
			return nil, fmt.Errorf("--public-ipv6 %q is not an IPv6 address", o.PublicIPv6)
		}
		ext.PublicIPv6 = a
	}
	if !o.IPv6 {
		ext.Addr6, ext.PublicIPv6 = netip.Addr{}, netip.Addr{}
	} else if !ext.Addr6.IsValid() {
		return nil, fmt.Errorf("EnableIPv6 is set but interface %s has no global IPv6 address (it has: %s); add one, or choose another interface with --iface", l.name, addrList(l))
	}
	return ext, nil
}

func listLinks(h *netlink.Handle) ([]*hostLink, error) {
	ls, err := h.LinkList()
	if err != nil {
		return nil, fmt.Errorf("listing interfaces: %w", err)
	}
	var out []*hostLink
	for _, l := range ls {
		a := l.Attrs()
		hl := &hostLink{name: a.Name, index: a.Index, mtu: a.MTU, up: a.Flags&net.FlagUp != 0}
		addrs, err := h.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			return nil, fmt.Errorf("listing addresses of %s: %w", a.Name, err)
		}
		for _, ad := range addrs {
			if ad.Scope != unix.RT_SCOPE_UNIVERSE {
				continue // link-local and host-scope addresses cannot be advertised
			}
			ip, ok := netip.AddrFromSlice(ad.IP)
			if !ok {
				continue
			}
			if ad.IP.To4() != nil {
				ip = ip.Unmap()
			}
			ones, _ := ad.Mask.Size()
			hl.addrs = append(hl.addrs, netip.PrefixFrom(ip, ones))
		}
		out = append(out, hl)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].index < out[j].index })
	return out, nil
}

func matchIface(links []*hostLink, s string) (*hostLink, netip.Addr) {
	if a, err := netip.ParseAddr(s); err == nil {
		for _, l := range links {
			for _, p := range l.addrs {
				if p.Addr() == a {
					return l, a
				}
			}
		}
		return nil, netip.Addr{}
	}
	for _, l := range links {
		if l.name == s {
			return l, netip.Addr{}
		}
	}
	return nil, netip.Addr{}
}

func matchRegex(links []*hostLink, re *regexp.Regexp) (*hostLink, netip.Addr) {
	for _, l := range links {
		for _, p := range l.addrs {
			if re.MatchString(p.Addr().String()) {
				return l, p.Addr()
			}
		}
	}
	for _, l := range links {
		if re.MatchString(l.name) {
			return l, netip.Addr{}
		}
	}
	return nil, netip.Addr{}
}

func byIndex(links []*hostLink, idx int) *hostLink {
	for _, l := range links {
		if l.index == idx {
			return l
		}
	}
	return nil
}

func defaultRouteLink(h *netlink.Handle) (int, error) {
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rs, err := h.RouteListFiltered(fam, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
		if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
			return 0, fmt.Errorf("listing routes: %w", err)
		}
		for _, r := range rs {
			if (r.Dst == nil || isZeroNet(r.Dst)) && r.LinkIndex > 0 {
				return r.LinkIndex, nil
			}
		}
	}
	return 0, errors.New("no default route to find the external interface from")
}

func isZeroNet(n *net.IPNet) bool {
	ones, _ := n.Mask.Size()
	return ones == 0
}

func addrList(l *hostLink) string {
	if len(l.addrs) == 0 {
		return "no global addresses"
	}
	s := make([]string, len(l.addrs))
	for i, p := range l.addrs {
		s[i] = p.String()
	}
	return strings.Join(s, " ")
}

func describe(links []*hostLink) string {
	parts := make([]string, 0, len(links))
	for _, l := range links {
		parts = append(parts, fmt.Sprintf("%s [%s]", l.name, addrList(l)))
	}
	return strings.Join(parts, "; ")
}
