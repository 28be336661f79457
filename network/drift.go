package network

import (
	"errors"
	"net/netip"
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
	Owns(link int) bool
}

// drift collects the kernel changes the desired state does not explain
// until they settle.
type drift struct {
	ch       <-chan []dataplane.Change // nil: not watching
	stop     chan struct{}
	settle   *time.Timer
	armed    bool
	suspects map[dataplane.ChangeKey]dataplane.Change // the last change of each
	// whole is the first change seen since the last check that only a
	// full reconcile can judge (a device of ours or the external
	// interface down or gone, a nexthop of ours gone, the external
	// interface's addresses changed); lost: notifications were dropped;
	// blackholes: a blackhole route of ours changed.
	whole      *dataplane.Change
	lost       bool
	blackholes bool
	// up are the watched links last seen usable (up, with a carrier): a
	// device we have just made reports itself down before it is up, which
	// is not drift. extAddrs are the external interface's addresses.
	up         map[int]bool
	extAddrs   map[netip.Prefix]bool
	lastRepair time.Time
}

func newDrift() *drift {
	return &drift{settle: stoppedTimer(), suspects: map[dataplane.ChangeKey]dataplane.Change{}, up: map[int]bool{},
		extAddrs: map[netip.Prefix]bool{}}
}

// seed records what the watch starts from: the links up now, the
// external interface's addresses.
func (d *drift) seed(links []int, ext dataplane.Link, extAddrs []dataplane.Addr) {
	for _, l := range links {
		d.up[l] = true
	}
	if ext.Up {
		d.up[ext.Index] = true
	}
	for _, a := range extAddrs {
		d.extAddrs[a.Prefix] = true
	}
}

// note folds a batch of changes in; extLink is the external interface.
func (d *drift) note(j judge, extLink int, batch []dataplane.Change) {
	for _, c := range batch {
		switch c.Kind {
		case dataplane.ChangesLost:
			d.lost = true
			d.arm()
		case dataplane.NexthopChanged:
			d.needWhole(c)
		case dataplane.LinkChanged:
			if j.Owns(c.Link) || c.Link == extLink {
				d.noteLink(c)
			}
		case dataplane.AddrChanged:
			if c.Addr.LinkIndex == extLink {
				d.noteExtAddr(c)
				continue
			}
			d.judge(j, c)
		case dataplane.RouteChanged:
			if c.Route.Type == dataplane.Blackhole && c.Route.Proto == dataplane.Proto {
				d.blackholes = true
				d.arm()
				continue
			}
			d.judge(j, c)
		default:
			d.judge(j, c)
		}
	}
}

// noteLink: a watched link that goes down, loses its carrier or goes away
// took the IPv4 routes through it without a word for each. Routes that
// cannot go back while it is down are retried every second by the failed
// pass (reconcileRetry), so coming up again needs nothing more.
func (d *drift) noteLink(c dataplane.Change) {
	if c.Up && !c.Deleted {
		d.up[c.Link] = true
		return
	}
	if d.up[c.Link] {
		delete(d.up, c.Link)
		d.needWhole(c)
	}
}

// noteExtAddr: host-gw's parts depend on the external interface's
// networks; a notice that only refreshes an address's lifetime (DHCP, a
// router advertisement) changes nothing.
func (d *drift) noteExtAddr(c dataplane.Change) {
	p := c.Addr.Prefix
	if p.Addr().IsLinkLocalUnicast() || d.extAddrs[p] != c.Deleted {
		return
	}
	if c.Deleted {
		delete(d.extAddrs, p)
	} else {
		d.extAddrs[p] = true
	}
	d.needWhole(c)
}

// judge keeps the last change of each entry that is, or was, unexplained:
// judged again at settle time, it tells the entry's state then.
func (d *drift) judge(j judge, c dataplane.Change) {
	k := c.Key()
	if _, seen := d.suspects[k]; seen || !j.Explains(c) {
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
	lost       bool     // because notifications were lost (no drift seen)
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
	if v.count == 0 && !d.lost {
		return v
	}
	if wait := driftMinInterval - now.Sub(d.lastRepair); wait > 0 {
		d.armed = true
		d.settle.Reset(wait)
		return verdict{blackholes: v.blackholes}
	}
	v.full, v.lost = true, d.lost && v.count == 0
	clear(d.suspects)
	d.whole, d.lost = nil, false
	d.lastRepair = now
	return v
}

func (d *drift) close() {
	d.settle.Stop()
	if d.stop != nil {
		close(d.stop)
		d.stop = nil
	}
}

// startWatch watches the kernel of a per-peer backend after a full pass
// succeeded (the echoes of the first are not read), unless it is watched
// already, and lengthens the periodic resync when --reconcile-period is
// left at 0. A watch that ended is started again this way.
func (l *loop) startWatch() {
	if l.rec == nil || l.drift.stop != nil {
		return
	}
	w, ok := l.rec.Watcher()
	if !ok {
		return
	}
	k, ext := l.rec.Kernel(), l.e.ext
	link, lerr := k.LinkByName(ext.Name)
	addrs, aerr := k.AddrList(ext.Index)
	stop := make(chan struct{})
	ch, err := w.Watch(stop)
	if err = errors.Join(err, lerr, aerr); err != nil {
		close(stop)
		if !l.watchFailed {
			l.watchFailed = true
			l.e.log.Warn("cannot watch the kernel's tables; comparing the whole data plane with the kernel every period", "period", l.reconcilePeriod, "error", err)
		}
		return
	}
	l.watchFailed = false
	l.drift.ch, l.drift.stop = ch, stop
	l.drift.seed(l.rec.OwnedLinks(), link, addrs)
	if l.e.cfg.ReconcilePeriod <= 0 {
		l.reconcilePeriod = watchedResync
		l.tick.Reset(watchedResync)
	}
	l.e.health.metrics.kernelWatched.Set(1)
	l.e.log.Info("watching the kernel's tables for changes to our entries", "backend", l.e.net.BackendType, "full_compare_every", l.reconcilePeriod)
}

// onKernel folds kernel changes in; a watch that ended is started again
// after the next good full pass, which comes within unwatchedResync.
func (l *loop) onKernel(batch []dataplane.Change, ok bool) {
	if ok {
		l.drift.note(l.rec, l.e.ext.Index, batch)
		return
	}
	l.drift.ch = nil
	close(l.drift.stop)
	l.drift.stop = nil
	l.e.health.metrics.kernelWatched.Set(0)
	if l.e.cfg.ReconcilePeriod <= 0 {
		l.reconcilePeriod = unwatchedResync
		l.tick.Reset(unwatchedResync)
	}
	l.e.log.Warn("the kernel watch ended; comparing the whole data plane with the kernel every period until it runs again", "period", l.reconcilePeriod)
}

// checkDrift runs when the changes have settled: drift costs a full
// reconcile, one log line and a count. The changes already read are
// folded in first, since the timer and the watch may be ready together.
func (l *loop) checkDrift() {
	for done := false; !done && l.drift.ch != nil; {
		select {
		case batch, ok := <-l.drift.ch:
			l.onKernel(batch, ok)
		default:
			done = true
		}
	}
	v := l.drift.check(l.rec, time.Now())
	if v.blackholes && !v.full && l.e.cfg.BlackholeRoute {
		l.e.syncBlackholes()
	}
	if !v.full {
		return
	}
	if v.lost {
		l.e.log.Warn("the kernel dropped change notifications (a burst of changes); comparing the whole data plane with the kernel",
			"backend", l.e.net.BackendType)
	} else {
		l.e.health.metrics.kernelDrift.Inc()
		l.e.log.Warn("kernel entries of ours were changed by someone else; comparing the whole data plane with the kernel",
			"backend", l.e.net.BackendType, "changes", v.count, "first", strings.Join(v.changes, "; "))
	}
	l.needFull = true
	l.reconcile()
}
