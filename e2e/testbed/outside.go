package testbed

import (
	"context"
	"errors"
	"net/netip"
)

// Outside is a machine on the underlay that is not part of the pod network
// (namespace <prefix>-out, 192.168.50.200/24, fd00:50::200/64 with IPv6).
// Packets from pods arrive there with the pod address, or with the host
// address when the host masquerades them.
type Outside struct {
	NS    string
	Addr  netip.Addr
	Addr6 netip.Addr // invalid without IPv6

	tb *Testbed
}

// AddOutside adds the outside machine, attached to the segment-1 switch.
// It has no default route: it answers hosts on its segment (and segment 2
// through the router) but cannot reach unmasqueraded pod addresses.
func (tb *Testbed) AddOutside(ctx context.Context) (*Outside, error) {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	if err := tb.checkOpen(); err != nil {
		return nil, err
	}
	if tb.outside != nil {
		return nil, errors.New("testbed: the outside machine already exists")
	}
	o := &Outside{NS: tb.ns("out"), Addr: netip.MustParseAddr("192.168.50.200"), tb: tb}
	if tb.opts.IPv6 {
		o.Addr6 = netip.MustParseAddr("fd00:50::200")
	}
	if err := tb.addNS(ctx, o.NS); err != nil {
		return nil, err
	}
	if err := tb.plug(ctx, tb.ns("sw"), "out", o.NS, "eth0"); err != nil {
		return nil, err
	}
	if err := addAddrs(ctx, o.NS, "eth0", "192.168.50.200/24", tb.v6("fd00:50::200/64")); err != nil {
		return nil, err
	}
	if tb.segment2 {
		if err := tb.routeToSegment2(ctx, o.NS); err != nil {
			return nil, err
		}
	}
	tb.outside = o
	tb.logf("testbed %s: outside machine %s: eth0 %s", tb.prefix, o.NS, words("192.168.50.200/24", tb.v6("fd00:50::200/64")))
	return o, nil
}

// Exec runs argv inside the outside namespace and returns the combined
// output. Equivalent to: ip netns exec $NS $argv
func (o *Outside) Exec(ctx context.Context, argv ...string) (string, error) {
	return execIn(ctx, o.NS, argv...)
}

// CaptureSources starts capturing packets that arrive on the outside
// machine's eth0 and match the tcpdump filter (e.g. "icmp" or "ip6 and
// icmp6"), and returns once tcpdump is really capturing. Generate the
// traffic after that, then call wait: it returns the source addresses of
// the first count matching packets, in order. If ctx ends first, wait stops
// tcpdump and returns the sources seen so far with the context's error.
//
// Equivalent to: ip netns exec <prefix>-out tcpdump -n -l -t -Q in -i eth0 -c $count $filter
func (o *Outside) CaptureSources(ctx context.Context, filter string, count int) (wait func() ([]netip.Addr, error), err error) {
	return o.tb.captureSources(ctx, o.NS, filter, count)
}

// CaptureSources is Outside.CaptureSources on the pod's eth0: it shows the
// source address pod-to-pod packets arrive with.
func (p *Pod) CaptureSources(ctx context.Context, filter string, count int) (wait func() ([]netip.Addr, error), err error) {
	return p.Host.tb.captureSources(ctx, p.NS, filter, count)
}
