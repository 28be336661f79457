package udp

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"runtime"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"
)

const (
	statsPeriod = 5 * time.Second // how soon a drop shows in the log
	logPeriod   = time.Minute     // how often traffic alone is logged, by default
)

// Tuning holds the settings of the packet path that are per host and come
// from the daemon's environment, not from the net-conf: they are for
// comparisons and troubleshooting. The zero value is the default.
type Tuning struct {
	// NoOffload turns every offload off (FLANNEL_UDP_OFFLOAD=off): a
	// plain TUN with one queue, no TSO, no UDP GSO or GRO.
	NoOffload bool
	// LogPeriod is how often the counters are logged while traffic flows
	// (FLANNEL_UDP_LOG_PERIOD); 0 means once a minute. Drops are logged
	// within statsPeriod regardless.
	LogPeriod time.Duration
}

// openQueues opens flannel0 with the offloads wanted and one socket per
// queue on the backend port, and logs which offloads the kernel granted.
func (b *Backend) openQueues(ctx context.Context) error {
	dev, err := openTun(DeviceName, b.want, b.log)
	if err != nil {
		return err
	}
	addr := netip.AddrPortFrom(b.ext.Addr, uint16(b.opts.Port))
	socks, err := b.openSockets(ctx, addr, len(dev.queues))
	if err != nil {
		dev.close()
		return fmt.Errorf("udp backend: listening on %s: %w", addr, err)
	}
	b.devMu.Lock()
	b.dev, b.socks = dev, socks
	b.devMu.Unlock()
	b.gso.Store(b.want.vnet)
	for range 2 * len(dev.queues) {
		b.counters = append(b.counters, &counters{})
	}
	b.log.Info("udp backend ready", "dev", DeviceName, "listen", addr, "queues", len(dev.queues),
		"vnet_hdr", dev.vnet, "tso", dev.tso, "udp_gso", b.gso.Load(), "udp_gro", socks[0].gro && dev.vnet)
	return nil
}

// openSockets binds n sockets to addr (with SO_REUSEPORT when n > 1), with
// UDP_GRO when offloads are wanted; on failure it closes those it opened.
func (b *Backend) openSockets(ctx context.Context, addr netip.AddrPort, n int) ([]*udpSock, error) {
	var socks []*udpSock
	for i := range n {
		s, err := listenUDP(ctx, addr, n > 1)
		if err != nil {
			for _, s := range socks {
				s.conn.Close()
			}
			return nil, err
		}
		if b.want.vnet {
			if err := s.enableGRO(); err != nil && i == 0 {
				b.log.Warn("UDP GRO refused by the kernel; received datagrams are not coalesced", "error", err)
			}
		}
		socks = append(socks, s)
	}
	return socks, nil
}

// Run implements backend.Runner: the packet path, one sender and one
// receiver goroutine per queue, until ctx is done or Close is called; then
// the backend is stopped for good (shutdown: flannel0 goes away with its
// queues, the port is free). If flannel0 is deleted while the daemon runs
// (by hand, say), Run re-creates and re-configures it and goes on, as the
// vxlan backend does with its device.
func (b *Backend) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	b.devMu.Lock()
	b.stopRun = cancel
	prepared := b.dev != nil
	b.devMu.Unlock()
	switch {
	case b.down.Load():
		return nil // closed already: nothing to run
	case !prepared:
		return fmt.Errorf("udp backend: Run before Prepare")
	}
	defer b.shutdown()
	for {
		dev, socks := b.devices()
		if dev == nil || ctx.Err() != nil {
			return nil
		}
		err := b.runQueues(ctx, dev, socks)
		if ctx.Err() != nil || b.down.Load() {
			return nil
		}
		if !errors.Is(err, errDeviceGone) {
			return err
		}
		b.log.Warn("TUN device deleted while running (by hand?); re-creating it", "dev", DeviceName)
		if rerr := b.replaceDevice(dev); rerr != nil {
			return fmt.Errorf("udp backend: %s was deleted and re-creating it failed; exiting so that a restart recreates it: %w", DeviceName, rerr)
		}
	}
}

// errDeviceGone: a packet loop stopped because flannel0 no longer exists.
var errDeviceGone = errors.New("the TUN device is gone")

// runQueues runs the packet loops on dev and socks, and the counter
// logger, until ctx is done or a loop fails; it stops the others before
// returning.
func (b *Backend) runQueues(ctx context.Context, dev *device, socks []*udpSock) error {
	g, gctx := errgroup.WithContext(ctx)
	n := min(len(dev.queues), len(socks))
	for i, q := range dev.queues[:n] {
		snd := newSender(b, q, socks[i], b.counters[2*i])
		rcv := newReceiver(b, q, socks[i], b.counters[2*i+1], dev.vnet)
		g.Go(func() error { return b.packetLoop(gctx, "send", snd.run) })
		g.Go(func() error { return b.packetLoop(gctx, "receive", rcv.run) })
	}
	g.Go(func() error { b.logStats(gctx); return nil })
	g.Go(func() error {
		<-gctx.Done()
		if ctx.Err() != nil {
			// Shutdown: closing unblocks every loop.
			b.shutdown()
			return nil
		}
		// A loop failed: wake the receivers blocked on their sockets
		// (which stay open for the next device) and close the queues.
		for _, s := range socks {
			s.conn.SetReadDeadline(time.Unix(1, 0))
		}
		dev.close()
		return nil
	})
	err := g.Wait()
	for _, s := range socks {
		s.conn.SetReadDeadline(time.Time{})
	}
	return err
}

func (b *Backend) packetLoop(ctx context.Context, dir string, run func() error) error {
	err := run()
	if ctx.Err() != nil || b.down.Load() || closedErr(err) {
		return nil
	}
	if errors.Is(err, unix.EBADFD) || !linkExists(DeviceName) {
		return fmt.Errorf("udp backend %s loop: %w (%w)", dir, errDeviceGone, err)
	}
	return fmt.Errorf("udp backend %s loop: %w", dir, err)
}

// logStats logs the counters: within statsPeriod when a drop counter
// changed, else at most every logPeriod while traffic flows, with the
// number of goroutines and the heap in use (flat in a healthy daemon).
// Drops that point at a sender get their own warning (dropWarner).
func (b *Backend) logStats(ctx context.Context) {
	t := time.NewTicker(statsPeriod)
	defer t.Stop()
	last := b.Stats()
	var lastLog time.Time
	w := &dropWarner{log: b.log, port: b.opts.Port}
	for {
		select {
		case <-ctx.Done():
			// Stopping (a retired backend in a live switch, or the
			// daemon): drops since the last line are not left unsaid.
			if s := b.Stats(); !maps.Equal(s.Drops, last.Drops) {
				b.log.Info("udp counters at stop: "+s.String(), "goroutines", runtime.NumGoroutine())
			}
			return
		case <-t.C:
		}
		w.check(time.Now(), b.counters)
		s := b.Stats()
		dropped := !maps.Equal(s.Drops, last.Drops)
		moved := s.TxPackets != last.TxPackets || s.RxPackets != last.RxPackets || s.ICMPSent != last.ICMPSent
		// Half a tick of slack: the ticks jitter around the period.
		if !dropped && !(moved && time.Since(lastLog) >= b.logPeriod-statsPeriod/2) {
			continue
		}
		last, lastLog = s, time.Now()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		b.log.Info("udp counters: "+s.String(), "goroutines", runtime.NumGoroutine(), "heap_inuse_kib", ms.HeapInuse>>10)
	}
}

// Stats returns the counters summed over all queues.
func (b *Backend) Stats() Stats {
	s := Stats{Drops: make(map[string]uint64, numDrops)}
	for _, c := range b.counters {
		c.addTo(&s)
	}
	return s
}

// firstError logs the first failure of a kind; the counters count them all.
// Once the backend is stopped, errors are its closing descriptors: none is
// logged.
func (b *Backend) firstError(flag *atomic.Bool, msg string, err error) {
	if !b.down.Load() && flag.CompareAndSwap(false, true) {
		b.log.Warn(msg+" (logged once; see the drop counters)", "error", err)
	}
}
