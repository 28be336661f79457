package network

import (
	"errors"
	"fmt"
	"log/slog"
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

// FindExternal chooses the external interface as upstream does. With
// none of --iface, --iface-regex and --iface-can-reach, it is the
// interface holding --public-ip (in a dual-stack network, or else
// --public-ipv6) when one is given, otherwise the interface of the default
// route. With any of them, the rules are tried in order, each --iface
// value, then each --iface-regex, then --iface-can-reach, and the first
// that gives a usable interface (one with the addresses the network needs)
// wins; a rule that matches nothing, or an interface without those
// addresses, is logged and the next rule tried. The error says why each
// rule failed and lists every interface with its addresses, so the
// operator can pick the right value.
func FindExternal(h *netlink.Handle, o IfaceOptions, log *slog.Logger) (*backend.ExternalInterface, error) {
	pub, pub6, err := publicAddrs(o)
	if err != nil {
		return nil, err
	}
	links, err := listLinks(h)
	if err != nil {
		return nil, err
	}
	if len(o.Iface) == 0 && len(o.IfaceRegex) == 0 && o.CanReach == "" {
		l, want, err := implicitLink(h, links, pub, pub6, o.IPv6)
		if err != nil {
			return nil, err
		}
		return externalFor(l, want, o.IPv6, pub, pub6)
	}
	var fails []string
	for _, r := range ifaceRules(h, links, o) {
		l, want, err := r.find()
		if err == nil {
			var ext *backend.ExternalInterface
			if ext, err = externalFor(l, want, o.IPv6, pub, pub6); err == nil {
				return ext, nil
			}
		}
		if log != nil {
			log.Info("interface rule gives no usable interface; trying the next one", "rule", r.name, "reason", err)
		}
		fails = append(fails, r.name+": "+err.Error())
	}
	return nil, fmt.Errorf("%s; interfaces: %s", strings.Join(fails, "; "), describe(links))
}

// ifaceRule is one of the rules of --iface, --iface-regex and
// --iface-can-reach: find returns the interface it selects, and the
// address it selects on it, if any.
type ifaceRule struct {
	name string // the flag and value, for messages
	find func() (*hostLink, netip.Addr, error)
}

func ifaceRules(h *netlink.Handle, links []*hostLink, o IfaceOptions) []ifaceRule {
	var rules []ifaceRule
	for _, s := range o.Iface {
		rules = append(rules, ifaceRule{"--iface " + s, func() (*hostLink, netip.Addr, error) {
			if l, a := matchIface(links, s); l != nil {
				return l, a, nil
			}
			return nil, netip.Addr{}, errors.New("no interface has that name or address")
		}})
	}
	for _, s := range o.IfaceRegex {
		rules = append(rules, ifaceRule{"--iface-regex " + s, func() (*hostLink, netip.Addr, error) {
			re, err := regexp.Compile(s)
			if err != nil {
				return nil, netip.Addr{}, err
			}
			if l, a := matchRegex(links, re); l != nil {
				return l, a, nil
			}
			return nil, netip.Addr{}, errors.New("no interface address or name matches")
		}})
	}
	if o.CanReach != "" {
		rules = append(rules, ifaceRule{"--iface-can-reach " + o.CanReach, func() (*hostLink, netip.Addr, error) {
			return canReach(h, links, o.CanReach)
		}})
	}
	return rules
}

func canReach(h *netlink.Handle, links []*hostLink, s string) (*hostLink, netip.Addr, error) {
	dst, err := netip.ParseAddr(s)
	if err != nil {
		return nil, netip.Addr{}, errors.New("not an IP address")
	}
	rs, err := h.RouteGet(net.IP(dst.AsSlice()))
	if err != nil || len(rs) == 0 {
		return nil, netip.Addr{}, fmt.Errorf("the kernel has no route to it (%v)", err)
	}
	var want netip.Addr
	if rs[0].Src != nil {
		want, _ = netip.AddrFromSlice(rs[0].Src)
		want = want.Unmap()
	}
	if l := byIndex(links, rs[0].LinkIndex); l != nil {
		return l, want, nil
	}
	return nil, netip.Addr{}, errors.New("the route's interface vanished")
}

// implicitLink is the choice without interface flags: the holder of the
// public address, else the default route's interface.
func implicitLink(h *netlink.Handle, links []*hostLink, pub, pub6 netip.Addr, v6 bool) (*hostLink, netip.Addr, error) {
	for _, a := range []netip.Addr{pub, pub6} {
		if !a.IsValid() || a.Is6() && (!v6 || pub.IsValid()) {
			continue
		}
		if l, want := matchIface(links, a.String()); l != nil {
			return l, want, nil
		}
		flag := map[bool]string{true: "--public-ip", false: "--public-ipv6"}[a.Is4()]
		hint := "add --iface with the interface that carries the traffic"
		if idx, err := defaultRouteLink(h); err == nil {
			if l := byIndex(links, idx); l != nil {
				// What versions before upstream's rule chose.
				hint = fmt.Sprintf("add --iface %s (the default route's interface) or the interface that carries the traffic", l.name)
			}
		}
		return nil, netip.Addr{}, fmt.Errorf("%s %s is on no interface of this host, and no --iface, --iface-regex or --iface-can-reach chooses one "+
			"(upstream flanneld refuses this too); %s; interfaces: %s", flag, a, hint, describe(links))
	}
	idx, err := defaultRouteLink(h)
	if err != nil {
		return nil, netip.Addr{}, fmt.Errorf("%w; choose one with --iface; interfaces: %s", err, describe(links))
	}
	if l := byIndex(links, idx); l != nil {
		return l, netip.Addr{}, nil
	}
	return nil, netip.Addr{}, fmt.Errorf("the default route's interface vanished; interfaces: %s", describe(links))
}

// publicAddrs parses --public-ip and --public-ipv6 (invalid when unset).
func publicAddrs(o IfaceOptions) (pub, pub6 netip.Addr, err error) {
	if o.PublicIP != "" {
		if pub, err = netip.ParseAddr(o.PublicIP); err != nil || !pub.Is4() {
			return pub, pub6, fmt.Errorf("--public-ip %q is not an IPv4 address", o.PublicIP)
		}
	}
	if o.PublicIPv6 != "" {
		if pub6, err = netip.ParseAddr(o.PublicIPv6); err != nil || !pub6.Is6() || pub6.Is4In6() {
			return pub, pub6, fmt.Errorf("--public-ipv6 %q is not an IPv6 address", o.PublicIPv6)
		}
	}
	return pub, pub6, nil
}

// externalFor makes the external interface of l: want, when valid, is
// the address selected on it, else its first global address of each
// family is used; pub and pub6, when valid, replace the advertised ones.
func externalFor(l *hostLink, want netip.Addr, v6 bool, pub, pub6 netip.Addr) (*backend.ExternalInterface, error) {
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
	if pub.IsValid() {
		ext.PublicIP = pub
	}
	if pub6.IsValid() {
		ext.PublicIPv6 = pub6
	}
	if !v6 {
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
