package network

import (
	"fmt"
	"iter"
	"runtime/debug"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/flanneld-go/flannel/backend/dataplane"
	"github.com/flanneld-go/flannel/subnet"
)

// maxDrain bounds the batches folded into one reconcile, so a flood of
// events cannot hold the loop (timers, renewals) for long.
const maxDrain = 256

// bigStart is the peer count from which the first pass's garbage is
// returned to the OS at once.
const bigStart = 1000

// reconcileRetry is the wait before a failed pass is tried again.
const reconcileRetry = time.Second

// How lease changes reach the kernel. A backend whose state is per peer
// (backend.PerPeer: host-gw, vxlan, udp) is driven through a
// backend.Reconciler: the first event after a quiet moment is applied at
// once, as a diff of the peers it changed (no kernel dump), and the
// events that queued up meanwhile are folded into the next pass, so the
// loop coalesces under load only. The full comparison with the kernel
// (every part, one dump of each table) runs on the first batch, on the
// periodic resync, after our lease changed, and after a failed diff.
// Other backends (wireguard) get the whole peer set each time; for them the
// first event after a quiet coalesceWindow is applied at once too, and
// later ones wait out the rest of the window.

// noteFold records what a fold changed for the next incremental pass.
// When the next pass is a full one (the first batch: every lease), it
// takes the whole peer set and the delta would be cleared unread. The
// delta points into the Fold's slices rather than at copies.
func (l *loop) noteFold(f Fold) {
	if l.rec == nil || l.needFull || l.rec.NeedsFull() {
		return
	}
	for _, p := range f.Left {
		l.delta[p.Key()] = nil
	}
	for _, ps := range [][]subnet.Lease{f.Joined, f.Updated} {
		for i := range ps {
			l.delta[ps[i].Key()] = &ps[i]
		}
	}
}

// drain folds the batches already waiting on the events channel.
func (l *loop) drain() {
	for range maxDrain {
		select {
		case batch, ok := <-l.events:
			if !ok {
				return // the loop sees the close next
			}
			l.fold(batch)
		default:
			return
		}
	}
}

// reconcilePeers applies the peers changed since the last pass, or runs
// the full reconcile when one is due.
func (l *loop) reconcilePeers() {
	if !l.synced {
		return
	}
	l.members()
	if l.needFull || l.rec.NeedsFull() {
		l.reconcile()
		return
	}
	if len(l.delta) == 0 {
		return
	}
	var set []subnet.Lease
	var gone []string
	for key, p := range l.delta {
		if p == nil {
			gone = append(gone, key)
		} else {
			set = append(set, *p)
		}
	}
	clear(l.delta)
	start := time.Now()
	ch, err := l.rec.Update(set, gone)
	if err != nil {
		l.e.log.Warn("applying the changed peers failed; comparing the whole data plane with the kernel", "backend", l.e.net.BackendType, "peers_changed", len(set)+len(gone), "error", err)
		l.observe(start, ch, nil, l.rec.Peers())
		l.reconcile()
		return
	}
	l.observe(start, ch, nil, l.rec.Peers())
}

// reconcile runs the full reconcile: the backend gets the whole peer set
// and compares it with the kernel. A failure is retried in a second.
func (l *loop) reconcile() {
	if !l.synced {
		return
	}
	e := l.e
	l.members()
	clear(l.delta)
	l.needFull = false
	start := time.Now()
	var ch dataplane.Changes
	var err error
	var n int // peers
	if l.rec != nil {
		var peers iter.Seq[*subnet.Lease]
		peers, n = l.peers.All()
		ch, err = l.rec.FullSeq(l.ctx, peers, n)
	} else {
		peers := l.peers.Peers()
		n = len(peers)
		ch, err = e.be.Reconcile(l.ctx, peers)
	}
	if e.cfg.BlackholeRoute {
		e.syncBlackholes()
	}
	if err == nil && !l.firstDone {
		l.firstDone = true
		if e.mux != nil {
			l.staleChecked = true
			removeStaleDevices(&netlink.Handle{}, e.be, e.log)
		}
		if n >= bigStart {
			// The first pass built every part at once: most of what it
			// allocated is garbage now, which the runtime would keep
			// mapped for minutes. Hand it back (one GC, tens of ms).
			debug.FreeOSMemory()
		}
	}
	if err == nil {
		l.startWatch()
	}
	l.observe(start, ch, err, n)
	if err == nil {
		l.startRepublish() // a switch waiting for its first good pass
	}
}

// observe counts a pass in the metrics, logs what it changed and, for a
// failure, schedules the retry.
func (l *loop) observe(start time.Time, ch dataplane.Changes, err error, peers int) {
	e, m, typ := l.e, l.e.health.metrics, l.e.net.BackendType
	l.lastReconcile = time.Now()
	m.reconcileDuration.WithLabelValues(typ).Observe(l.lastReconcile.Sub(start).Seconds())
	m.reconciles.WithLabelValues(typ).Inc()
	m.countChanges(ch)
	if ch.Any() {
		e.log.Info("data plane updated", append([]any{"backend", typ, "peers", peers}, ch.LogAttrs()...)...)
	}
	if err != nil {
		m.reconcileErrors.WithLabelValues(typ).Inc()
		e.health.Set("backend", fmt.Errorf("last reconcile failed: %w", err))
		// Once per distinct error: a failure that persists (a foreign
		// device holding our VNI) is retried every second, and /readyz
		// and the error counter say it goes on.
		if msg := err.Error(); msg != l.reconcileErr {
			l.reconcileErr = msg
			e.log.Error("reconcile failed; retrying every second", "backend", typ, "error", err)
		}
		l.retry.Reset(reconcileRetry)
		return
	}
	if l.reconcileErr != "" {
		l.reconcileErr = ""
		e.log.Info("reconcile succeeded again", "backend", typ)
	}
	e.health.Set("backend", nil)
}
