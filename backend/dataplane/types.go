package dataplane

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
)

// Proto marks the routes this daemon installs (the route's "proto" field,
// shown by `ip route` as "proto 98"). The reconciler deletes only routes
// with this mark, so it never touches routes someone else owns, and a
// backend switch can find and remove the routes of the previous backend.
const Proto = 98

// RouteType is a route's kind (the route's "type" field).
type RouteType uint8

const (
	// Unicast routes forward (the zero value).
	Unicast RouteType = iota
	// Blackhole routes drop silently what no more specific route takes.
	Blackhole
	// OtherRoute is a route of a kind the reconciler never makes
	// (unreachable, prohibit, multipath, ...); only the kernel watch
	// reports such routes, since one can take the place of ours.
	OtherRoute
)

// BlackholeMetric is the metric of our blackhole routes: above every
// route the kernel or a CNI plugin adds for the same prefix (the bridge's
// connected route has 0 for IPv4, 256 for IPv6), so a blackhole never
// shadows such a route, and only catches what it would not take (a bridge
// that is down, or no bridge at all).
const BlackholeMetric = 65535

// Route is a unicast or blackhole route in the main table.
// Equivalent to: ip route replace $Dst [via $Gw] dev $link [onlink] proto $Proto
// or, for a blackhole: ip route replace blackhole $Dst proto $Proto metric $Metric
type Route struct {
	Dst       netip.Prefix
	Gw        netip.Addr // invalid for a route straight onto the link
	LinkIndex int        // 0 for a blackhole
	OnLink    bool       // the gateway is on the link even without a matching address
	Proto     int
	Type      RouteType
	// Metric is set on blackholes only; unicast routes leave it 0 and get
	// the kernel's default (0 for IPv4, 1024 for IPv6).
	Metric int
}

// String renders the route like `ip route`, with the link as an index.
func (r Route) String() string { return r.format(linkNum) }

func (r Route) format(link func(int) string) string {
	var b strings.Builder
	if r.Type == Blackhole {
		b.WriteString("blackhole " + r.Dst.String())
	} else {
		b.WriteString(r.Dst.String())
		if r.Gw.IsValid() {
			b.WriteString(" via " + r.Gw.String())
		}
		b.WriteString(" dev " + link(r.LinkIndex))
		if r.OnLink {
			b.WriteString(" onlink")
		}
	}
	if r.Proto != 0 {
		fmt.Fprintf(&b, " proto %d", r.Proto)
	}
	if r.Metric != 0 {
		fmt.Fprintf(&b, " metric %d", r.Metric)
	}
	return b.String()
}

// BlackholeRoutes are our blackhole routes for prefixes (the invalid ones
// skipped): the desired state of --ip-blackhole-route for this host's own
// subnets.
func BlackholeRoutes(prefixes ...netip.Prefix) []Route {
	var out []Route
	for _, p := range prefixes {
		if p.IsValid() {
			out = append(out, Route{Dst: p.Masked(), Type: Blackhole, Proto: Proto, Metric: BlackholeMetric})
		}
	}
	return out
}

// MAC is an Ethernet address as a comparable value.
type MAC [6]byte

// ParseMAC parses a 48-bit MAC address such as "0a:58:0a:f4:02:00".
func ParseMAC(s string) (MAC, error) {
	hw, err := net.ParseMAC(s)
	if err != nil || len(hw) != 6 {
		return MAC{}, fmt.Errorf("%q is not a 48-bit MAC address", s)
	}
	return MAC(hw), nil
}

// HardwareAddr returns m as a net.HardwareAddr.
func (m MAC) HardwareAddr() net.HardwareAddr { return net.HardwareAddr(m[:]) }

func (m MAC) String() string { return m.HardwareAddr().String() }

// Neigh is a permanent neighbour (ARP or NDP) entry: IP -> MAC on a link.
// Equivalent to: ip neigh replace $IP lladdr $MAC dev $link nud permanent
type Neigh struct {
	LinkIndex int
	IP        netip.Addr
	MAC       MAC
}

func (n Neigh) String() string { return n.format(linkNum) }

func (n Neigh) format(link func(int) string) string {
	return fmt.Sprintf("%s lladdr %s dev %s nud permanent", n.IP, n.MAC, link(n.LinkIndex))
}

// FDB is a forwarding entry of a VXLAN device: frames for MAC go to the
// VTEP at Dst.
// Equivalent to: bridge fdb replace $MAC dev $link dst $Dst self permanent
type FDB struct {
	LinkIndex int
	MAC       MAC
	Dst       netip.Addr
}

func (f FDB) String() string { return f.format(linkNum) }

func (f FDB) format(link func(int) string) string {
	return fmt.Sprintf("%s dev %s dst %s self permanent", f.MAC, link(f.LinkIndex), f.Dst)
}

// Addr is an address of one of our devices.
// Equivalent to: ip addr add $Prefix dev $link [nodad]
type Addr struct {
	LinkIndex int
	Prefix    netip.Prefix
}

func (a Addr) String() string { return a.format(linkNum) }

func (a Addr) format(link func(int) string) string {
	return fmt.Sprintf("%s dev %s", a.Prefix, link(a.LinkIndex))
}

// Link is what the backends read of a network device.
type Link struct {
	Index int
	Name  string
	Type  string // "vxlan", "tun", "veth", ...
	MTU   int
	Up    bool
	MAC   MAC
}

var (
	defaultV4 = netip.MustParsePrefix("0.0.0.0/0")
	defaultV6 = netip.MustParsePrefix("::/0")
)

func linkNum(i int) string { return fmt.Sprintf("#%d", i) }
