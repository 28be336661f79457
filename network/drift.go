package network

import (
	"strings"
	"time"

	"github.com/flanneld-go/flannel/backend/dataplane"
)

// The kernel watch. A per-peer backend's kernel entries are watched
// through the kernel's change notifications (dataplane.Watcher), so
// an entry of ours that someone deletes or changes is restored within
// driftSettle instead of at the next periodic resync, and the periodic
// full comparison (one dump of every table: at 10,000 peers, a tenth of a
// CPU-second) can run every watchedResync instead of every 10 s. The
// notifications include the echoes of our own changes: each is judged
// against the desired state (Reconciler.Explains) when it arrives and
// again driftSettle later, when the echo of any newer change of ours to
// the same entry has come too; only what is still unexplained then is
// drift, and drift costs a full reconcile, at most one every
// driftMinInterval.
const (
	driftSettle      = 100 * time.Millisecond
	driftMinInterval = time.Second
	// watchedResync is the periodic full comparison while the kernel is
	// watched and --reconcile-period is left at 0.
	watchedResync = 5 * time.Minute
	// unwatchedResync is the period without a watch (wireguard, a kernel
	// that cannot be watched) when --reconcile-period is left at 0.
	unwatchedResync = 10 * time.Second
)

// judge is what drift asks of the desired state (backend.Reconciler).
type judge interface {
	Explains(c dataplane.Change) bool
	Confirms(c dataplane.Change) bool
	Owns(link int) bool
}

// drift collects the kernel changes the desired state does not explain
// until they settle.
type drift struct {
	ch       <-chan []dataplane.Change // nil: not watching
	stop     chan struct{}
	settle   *time.Timer
	armed    bool
	suspects map[dataplane.ChangeKey]dataplane.Change
	// whole is the first change seen since the last check that only a
	// full reconcile can judge (a device of ours or the external
	// interface changed, a nexthop of ours went, notifications were lost);
	// blackholes is set when a blackhole route of ours changed.
	whole      *dataplane.Change
	blackholes bool
	lastRepair time.Time
}

func newDrift() *drift {
	return &drift{settle: stoppedTimer(), suspects: map[dataplane.ChangeKey]dataplane.Change{}}
}

// note folds a batch of changes in; extLink is the external interface.
func (d *drift) note(j judge, extLink int, batch []dataplane.Change) {
	for _, c := range batch {
		switch c.Kind {
		case dataplane.ChangesLost, dataplane.NexthopChanged:
			d.needWhole(c)
		case dataplane.LinkChanged:
			// Down or gone: the kernel dropped the routes through it
			// without a word for each. Up (our own bringing it up, a
			// flag or carrier change) leaves our entries as they are;
			// routes that could not go back while it was down are
			// retried every second by the failed pass (reconcileRetry).
			if (j.Owns(c.Link) || c.Link == extLink) && (c.Deleted || !c.Up) {
				d.needWhole(c)
			}
		case dataplane.AddrChanged:
			if c.Addr.LinkIndex == extLink && !c.Addr.Prefix.Addr().IsLinkLocalUnicast() {
				d.needWhole(c) // the host's networks, which host-gw's parts depend on
				continue
			}
			d.judge(j, c)
		case dataplane.RouteChanged:
			if c.Route.Type == dataplane.Blackhole {
				d.blackholes = d.blackholes || c.Route.Proto == dataplane.Proto
				d.arm()
				continue
			}
			d.judge(j, c)
		default:
			d.judge(j, c)
		}
	}
}

func (d *drift) judge(j judge, c dataplane.Change) {
	k := c.Key()
	if j.Confirms(c) {
		delete(d.suspects, k)
		return
	}
	if _, seen := d.suspects[k]; !seen && !j.Explains(c) {
		d.suspects[k] = c
		d.arm()
	}
}

func (d *drift) needWhole(c dataplane.Change) {
	if d.whole == nil {
		d.whole = &c
	}
	d.arm()
}

func (d *drift) arm() {
	if !d.armed {
		d.armed = true
		d.settle.Reset(driftSettle)
	}
}

// verdict is what a settled check found.
type verdict struct {
	full       bool     // a full reconcile is due
	blackholes bool     // the blackhole routes need a sync
	changes    []string // the unexplained changes (the first few), for the log
	count      int
}

// check judges the suspects again, now that echoes have settled, and
// clears them. A full reconcile found due within driftMinInterval of the
// last waits: check re-arms and reports it then.
func (d *drift) check(j judge, now time.Time) verdict {
	d.armed = false
	var v verdict
	for k, c := range d.suspects {
		if j.Explains(c) {
			delete(d.suspects, k)
			continue
		}
		v.count++
		if len(v.changes) < 3 {
			v.changes = append(v.changes, c.String())
		}
	}
	if d.whole != nil {
		v.count++
		v.changes = append([]string{d.whole.String()}, v.changes...)
	}
	v.blackholes, d.blackholes = d.blackholes, false
	if v.count == 0 {
		return v
	}
	if wait := driftMinInterval - now.Sub(d.lastRepair); wait > 0 {
		d.armed = true
		d.settle.Reset(wait)
		return verdict{blackholes: v.blackholes}
	}
	clear(d.suspects)
	d.whole = nil
	d.lastRepair = now
	v.full = true
	return v
}

func (d *drift) close() {
	d.settle.Stop()
	if d.stop != nil {
		close(d.stop)
		d.stop = nil
	}
}

// startWatch watches the kernel of a per-peer backend, once its first full
// pass succeeded (the echoes of that pass are not read), and lengthens the
// periodic resync when --reconcile-period is left at 0.
func (l *loop) startWatch() {
	if l.rec == nil || l.drift.stop != nil {
		return
	}
	w, ok := l.rec.Watcher()
	if !ok {
		return
	}
	stop := make(chan struct{})
	ch, err := w.Watch(stop)
	if err != nil {
		l.e.log.Warn("cannot watch the kernel's tables; comparing the whole data plane with the kernel every period", "period", l.reconcilePeriod, "error", err)
		return
	}
	l.drift.ch, l.drift.stop = ch, stop
	if l.e.cfg.ReconcilePeriod <= 0 {
		l.reconcilePeriod = watchedResync
		l.tick.Reset(watchedResync)
	}
	l.e.health.metrics.kernelWatched.Set(1)
	l.e.log.Info("watching the kernel's tables for changes to our entries", "backend", l.e.net.BackendType, "full_compare_every", l.reconcilePeriod)
}

// onKernel folds kernel changes in, after the first full pass.
func (l *loop) onKernel(batch []dataplane.Change, ok bool) {
	if !ok {
		l.drift.ch = nil
		l.e.health.metrics.kernelWatched.Set(0)
		l.e.log.Warn("the kernel watch ended; comparing the whole data plane with the kernel every period", "period", unwatchedResync)
		l.reconcilePeriod = unwatchedResync
		l.tick.Reset(unwatchedResync)
		return
	}
	l.drift.note(l.rec, l.e.ext.Index, batch)
}

// checkDrift runs when the changes have settled: drift costs a full
// reconcile, one log line and a count.
func (l *loop) checkDrift() {
	v := l.drift.check(l.rec, time.Now())
	if v.blackholes && !v.full && l.e.cfg.BlackholeRoute {
		l.e.syncBlackholes()
	}
	if !v.full {
		return
	}
	l.e.health.metrics.kernelDrift.Inc()
	l.e.log.Warn("kernel entries of ours were changed by someone else; comparing the whole data plane with the kernel",
		"backend", l.e.net.BackendType, "changes", v.count, "first", strings.Join(v.changes, "; "))
	l.needFull = true
	l.reconcile()
}
