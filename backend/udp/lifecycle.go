package udp

import (
	"errors"
	"fmt"
)

// The device's life. Prepare opens flannel0's queues and the sockets; Run
// serves them and, when the packet loops find flannel0 deleted, re-creates
// it (the only place that does: Refresh leaves it to Run). When Run's
// context is done, or Close is called, the backend goes down for good:
// the queues and sockets are closed, which unblocks the loops, removes
// flannel0 (it is not persistent) and frees the port, and nothing
// re-creates the device or logs the loops' errors afterwards.

// errClosed: the backend was stopped (Run returned, or Close).
var errClosed = errors.New("udp backend: stopped")

// devices returns the current device and sockets; nil once stopped.
func (b *Backend) devices() (*device, []*udpSock) {
	b.devMu.Lock()
	defer b.devMu.Unlock()
	return b.dev, b.socks
}

// replaceDevice re-creates flannel0 after the packet loops found old gone.
// It does nothing once the backend is stopped, or when old is no longer
// the current device.
func (b *Backend) replaceDevice(old *device) error {
	b.devMu.Lock()
	defer b.devMu.Unlock()
	if b.down.Load() || b.dev != old {
		return nil
	}
	return b.recreateDevice()
}

// recreateDevice opens flannel0 anew with the offloads of the first one and
// gives it back its MTU, addresses and route. The caller holds b.devMu.
func (b *Backend) recreateDevice() error {
	dev, err := openTun(DeviceName, b.want, b.log)
	if err != nil {
		return err
	}
	if len(dev.queues) > len(b.socks) {
		for _, q := range dev.queues[len(b.socks):] {
			q.Close()
		}
		dev.queues = dev.queues[:len(b.socks)]
	}
	b.dev = dev
	b.mu.Lock()
	own := b.own
	b.mu.Unlock()
	if own.Subnet.IsValid() {
		if err := b.configureDevice(); err != nil {
			return err
		}
		if _, err := b.apply(); err != nil {
			return err
		}
	}
	b.log.Info("TUN device re-created", "dev", DeviceName, "queues", len(dev.queues), "vnet_hdr", dev.vnet, "tso", dev.tso)
	return nil
}

// Close implements backend.Closer: the backend stops for good, flannel0
// goes away and the port is free when it returns. Run, if running, returns
// too. Calling it again does nothing.
func (b *Backend) Close() error { return b.shutdown() }

// shutdown stops the backend: down first, so the loops that fail as their
// descriptors close stay quiet, then Run's context, the sockets and the
// queues. Only the first call closes anything.
func (b *Backend) shutdown() error {
	b.devMu.Lock()
	defer b.devMu.Unlock()
	b.down.Store(true)
	if b.stopRun != nil {
		b.stopRun()
	}
	var errs []error
	for _, s := range b.socks {
		errs = append(errs, s.conn.Close())
	}
	b.socks = nil
	if b.dev != nil {
		errs = append(errs, b.dev.close())
		b.dev = nil
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("udp backend: closing %s and its sockets: %w", DeviceName, err)
	}
	return nil
}
