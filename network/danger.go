package network

import (
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/flanneld-go/flannel/backend"
	"github.com/flanneld-go/flannel/subnet"
)

// A net-conf whose pod network holds this host's own underlay address is
// refused before anything is set up: the routes and rules for the pod
// network would take the traffic between the hosts (the overlay's own
// tunnels, etcd) away from the underlay. Only the host can tell, once its
// external interface is chosen; the net-conf alone is checked by
// subnet.ParseConfig (default routes, reserved ranges).

// hostAddr is one of this host's addresses and where it comes from.
type hostAddr struct {
	addr netip.Addr
	what string // "the address of the external interface eth0", ...
}

// externalAddrs lists what the host uses on the underlay: the advertised
// PublicIP and PublicIPv6 (which --public-ip and --public-ipv6 may set),
// then every global address of the external interface (ifAddrs).
func externalAddrs(ext *backend.ExternalInterface, ifAddrs []netip.Addr) []hostAddr {
	var out []hostAddr
	seen := map[netip.Addr]bool{}
	add := func(a netip.Addr, what string) {
		if a.IsValid() && !seen[a] {
			seen[a] = true
			out = append(out, hostAddr{a, what})
		}
	}
	onIface := map[netip.Addr]bool{}
	for _, a := range ifAddrs {
		onIface[a] = true
	}
	for _, p := range []struct {
		a     netip.Addr
		field string
		flag  string
	}{{ext.PublicIP, "PublicIP", "--public-ip"}, {ext.PublicIPv6, "PublicIPv6", "--public-ipv6"}} {
		if onIface[p.a] || p.a == ext.Addr || p.a == ext.Addr6 {
			add(p.a, fmt.Sprintf("the address of the external interface %s, advertised to the other hosts as %s", ext.Name, p.field))
		} else {
			add(p.a, fmt.Sprintf("this host's %s (set with %s), advertised to the other hosts as %s", p.field, p.flag, p.field))
		}
	}
	for _, a := range ifAddrs {
		add(a, "an address of the external interface "+ext.Name)
	}
	return out
}

// checkExternal refuses cfg when its Network or IPv6Network holds one of
// this host's underlay addresses. The error names the address, where it
// comes from (interface, PublicIP), the net-conf field and what to do.
func checkExternal(cfg *subnet.Config, ext *backend.ExternalInterface, ifAddrs []netip.Addr) error {
	for _, h := range externalAddrs(ext, ifAddrs) {
		field, n, ok := cfg.NetworkHolding(h.addr)
		if !ok {
			continue
		}
		return fmt.Errorf("net-conf %s %s holds %s, %s: the routes for the pod network would capture the traffic between the hosts; "+
			"change %s to a range that holds no host address, or choose an external interface outside it with --iface",
			field, n, h.addr, h.what, field)
	}
	return nil
}

// interfaceAddrs returns the global addresses of the interface with the
// given index.
func interfaceAddrs(h *netlink.Handle, index int) ([]netip.Addr, error) {
	links, err := listLinks(h)
	if err != nil {
		return nil, err
	}
	l := byIndex(links, index)
	if l == nil {
		return nil, fmt.Errorf("the external interface (index %d) vanished; interfaces: %s", index, describe(links))
	}
	out := make([]netip.Addr, 0, len(l.addrs))
	for _, p := range l.addrs {
		out = append(out, p.Addr())
	}
	return out, nil
}

// checkHost is checkExternal for the interface the kernel has now.
func checkHost(h *netlink.Handle, cfg *subnet.Config, ext *backend.ExternalInterface) error {
	addrs, err := interfaceAddrs(h, ext.Index)
	if err != nil {
		return err
	}
	return checkExternal(cfg, ext, addrs)
}

// CheckConfigOnHost checks a valid net-conf against this host: the
// external interface is chosen from o as the daemon would choose it, and
// a Network holding one of its addresses is an error. When no interface
// can be chosen (not a cluster host, say), the check is skipped and the
// note says why; otherwise the note says what was checked.
func CheckConfigOnHost(data []byte, o IfaceOptions) (note string, err error) {
	cfg, _, err := subnet.ParseConfig(data)
	if err != nil {
		return "", err
	}
	o.IPv6 = cfg.EnableIPv6
	h := &netlink.Handle{}
	ext, err := FindExternal(h, o, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return "not checked against this host's addresses: " + err.Error(), nil
	}
	addrs, err := interfaceAddrs(h, ext.Index)
	if err != nil {
		return "not checked against this host's addresses: " + err.Error(), nil
	}
	if err := checkExternal(cfg, ext, addrs); err != nil {
		return "", err
	}
	var all []string
	for _, a := range externalAddrs(ext, addrs) {
		if a.addr.Is4() || cfg.EnableIPv6 {
			all = append(all, a.addr.String())
		}
	}
	return fmt.Sprintf("no host address in the pod network: checked this host's external interface %s (%s)", ext.Name, strings.Join(all, " ")), nil
}
