package testbed

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"sync"
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

func (tb *Testbed) captureSources(ctx context.Context, ns, filter string, count int) (wait func() ([]netip.Addr, error), err error) {
	if count < 1 {
		return nil, errors.New("testbed: CaptureSources needs count >= 1")
	}
	argv := []string{"ip", "netns", "exec", ns, "tcpdump", "-n", "-l", "-t", "-Q", "in", "-i", "eth0", "-c", strconv.Itoa(count)}
	if filter != "" {
		argv = append(argv, filter)
	}
	cmd := command(nil, argv...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	tb.mu.Lock()
	if err := tb.checkOpen(); err != nil {
		tb.mu.Unlock()
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		tb.mu.Unlock()
		return nil, fmt.Errorf("%s: %w", quote(argv), err)
	}
	done := make(chan struct{})
	tb.addCleanup("kill tcpdump", func() error {
		cmd.Process.Kill()
		<-done
		return nil
	})
	tb.mu.Unlock()

	var (
		mu      sync.Mutex
		sources []netip.Addr
		errText strings.Builder
		waitErr error
	)
	ready := make(chan struct{})
	var readers sync.WaitGroup
	readers.Add(2)
	go func() {
		defer readers.Done()
		sc := bufio.NewScanner(stderr)
		signalled := false
		for sc.Scan() {
			mu.Lock()
			errText.WriteString(sc.Text() + "\n")
			mu.Unlock()
			if !signalled && strings.HasPrefix(sc.Text(), "listening on") {
				signalled = true
				close(ready)
			}
		}
		io.Copy(io.Discard, stderr)
	}()
	go func() {
		defer readers.Done()
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if a, ok := parseSource(sc.Text()); ok {
				mu.Lock()
				sources = append(sources, a)
				mu.Unlock()
			}
		}
		io.Copy(io.Discard, stdout)
	}()
	go func() {
		readers.Wait()
		waitErr = cmd.Wait()
		close(done)
	}()
	result := func() []netip.Addr {
		mu.Lock()
		defer mu.Unlock()
		return append([]netip.Addr(nil), sources...)
	}
	failure := func(err error) error {
		mu.Lock()
		defer mu.Unlock()
		return fmt.Errorf("%s: %w: %s", quote(argv), err, strings.TrimSpace(errText.String()))
	}

	select {
	case <-ready:
	case <-done:
		return nil, failure(fmt.Errorf("exited before capturing (%v)", waitErr))
	case <-ctx.Done():
		cmd.Process.Kill()
		<-done
		return nil, failure(ctx.Err())
	}
	return func() ([]netip.Addr, error) {
		select {
		case <-done:
			if waitErr != nil {
				return result(), failure(waitErr)
			}
			return result(), nil
		case <-ctx.Done():
			cmd.Process.Kill()
			<-done
			return result(), failure(ctx.Err())
		}
	}, nil
}

// parseSource returns the source address of a tcpdump -n -t line such as
//
//	IP 10.244.1.2 > 192.168.50.200: ICMP echo request, id 7, seq 1, length 64
//	IP 192.168.50.11.41234 > 192.168.50.200.5201: Flags [S], ...
//	IP6 fd00:50::11 > fd00:50::200: ICMP6, echo request, id 7, seq 1, length 64
//	IP6 fd00:50::11.41234 > fd00:50::200.5201: Flags [S], ...
//
// ok is false for other lines (ARP, continuation lines).
func parseSource(line string) (netip.Addr, bool) {
	f := strings.Fields(line)
	if len(f) < 3 || (f[0] != "IP" && f[0] != "IP6") || f[2] != ">" {
		return netip.Addr{}, false
	}
	src := f[1]
	if a, err := netip.ParseAddr(src); err == nil {
		return a, true
	}
	// A trailing .port.
	if i := strings.LastIndexByte(src, '.'); i > 0 {
		if a, err := netip.ParseAddr(src[:i]); err == nil {
			return a, true
		}
	}
	return netip.Addr{}, false
}
