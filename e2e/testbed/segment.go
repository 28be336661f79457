package testbed

import (
	"context"
	"errors"
)

// AddSegment adds a second L2 segment, 192.168.60.0/24 (fd00:60::/64): a
// switch namespace <prefix>-sw2 with bridge br0 (no address), and a router
// namespace <prefix>-rt with eth0 192.168.50.254/24 on the first switch and
// eth1 192.168.60.254/24 on the second, forwarding. The first switch, the
// outside machine and every segment-1 host (also later ones) get a route to
// segment 2 via the router; segment-2 hosts use the router as their default
// gateway. Hosts on the two segments thus talk through a router, as nodes in
// different subnets of a data centre do.
func (tb *Testbed) AddSegment(ctx context.Context) error {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	if err := tb.checkOpen(); err != nil {
		return err
	}
	if tb.segment2 {
		return errors.New("testbed: segment 2 already exists")
	}
	sw, sw2, rt := tb.ns("sw"), tb.ns("sw2"), tb.ns("rt")
	if err := tb.addNS(ctx, sw2); err != nil {
		return err
	}
	if err := addBridge(ctx, sw2, "br0", "", ""); err != nil {
		return err
	}
	if err := tb.addNS(ctx, rt); err != nil {
		return err
	}
	if err := tb.noDAD(ctx, rt); err != nil {
		return err
	}
	if err := tb.plug(ctx, sw, "rt", rt, "eth0"); err != nil {
		return err
	}
	if err := tb.plug(ctx, sw2, "rt", rt, "eth1"); err != nil {
		return err
	}
	if err := addAddrs(ctx, rt, "eth0", "192.168.50.254/24", tb.v6("fd00:50::254/64")); err != nil {
		return err
	}
	if err := addAddrs(ctx, rt, "eth1", "192.168.60.254/24", tb.v6("fd00:60::254/64")); err != nil {
		return err
	}
	if err := sysctl(ctx, rt, "net.ipv4.ip_forward", "1"); err != nil {
		return err
	}
	if tb.opts.IPv6 {
		if err := sysctl(ctx, rt, "net.ipv6.conf.all.forwarding", "1"); err != nil {
			return err
		}
	}
	if err := tb.routeSegment1(ctx); err != nil {
		return err
	}
	tb.segment2 = true
	tb.logf("testbed %s: segment 2 %s behind router %s", tb.prefix, words(seg2Net, tb.v6(seg2Net6)), rt)
	return nil
}

// routeSegment1 gives everything on segment 1 (the switch, its hosts, the
// outside machine) the way to segment 2.
func (tb *Testbed) routeSegment1(ctx context.Context) error {
	nss := []string{tb.ns("sw")}
	for _, h := range tb.hosts {
		if h.Segment == 1 {
			nss = append(nss, h.NS)
		}
	}
	if tb.outside != nil {
		nss = append(nss, tb.outside.NS)
	}
	for _, ns := range nss {
		if err := tb.routeToSegment2(ctx, ns); err != nil {
			return err
		}
	}
	return nil
}

// routeToSegment2 adds, in namespace ns on segment 1, the route to segment 2
// via the router.
// Equivalent to: ip -n $ns route add 192.168.60.0/24 via 192.168.50.254
func (tb *Testbed) routeToSegment2(ctx context.Context, ns string) error {
	if err := ipn(ctx, ns, "route", "add", seg2Net, "via", "192.168.50.254"); err != nil {
		return err
	}
	if tb.opts.IPv6 {
		return ipn(ctx, ns, "-6", "route", "add", seg2Net6, "via", "fd00:50::254")
	}
	return nil
}

// noDAD turns DAD off in a router namespace, before its interfaces come:
// until an interface's link-local address has passed DAD the kernel sends
// no neighbour solicitation for a packet it forwards (it needs that
// address as the source), so the first packets routed through a fresh
// router were lost.
func (tb *Testbed) noDAD(ctx context.Context, ns string) error {
	if !tb.opts.IPv6 {
		return nil
	}
	for _, k := range []string{"all", "default"} {
		if err := sysctl(ctx, ns, "net.ipv6.conf."+k+".accept_dad", "0"); err != nil {
			return err
		}
	}
	return nil
}
