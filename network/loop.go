package network

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/flanneld-go/flannel/backend"
	"github.com/flanneld-go/flannel/subnet"
	"github.com/flanneld-go/flannel/subnet/etcd"
)

// coalesceWindow is, for a backend without per-peer state, the least time
// between two reconciles after lease events (see reconcile.go).
const coalesceWindow = 20 * time.Millisecond

// loop is the engine's event loop and its state. Only the loop's
// goroutine touches it; etcd requests run in goroutines of their own and
// report on renewDone / acquired, so nothing here waits for etcd.
type loop struct {
	e      *Engine
	ctx    context.Context
	events <-chan []subnet.Event
	peers  *PeerSet
	synced bool // the first batch of leases arrived
	// reconcileErr is the last reconcile error logged, "" after a success:
	// a failure that persists is logged once.
	reconcileErr string

	// rec drives a per-peer backend (nil for others); delta are the
	// peers changed since its last pass (nil: gone), needFull asks for
	// the full reconcile next.
	rec           *backend.Reconciler
	delta         map[string]*subnet.Lease
	needFull      bool
	lastReconcile time.Time
	// memberErr is the last error of setting up a Mux member, logged
	// once; staleChecked is set once the devices no member needs were
	// deleted (after the first full pass).
	memberErr    string
	staleChecked bool
	firstDone    bool // a full pass succeeded
	// memberBackoff and memberRetryAt pace the attempts after a member
	// failed to start; exported are the types in flannel_peers_by_backend.
	memberBackoff time.Duration
	memberRetryAt time.Time
	exported      map[string]bool

	// A live backend switch (switch.go): netconfs are the net-conf's new
	// values; switching is the switch in progress, nextConf a value that
	// came meanwhile.
	netconfs       <-chan etcd.ConfigChange
	switching      *pendingSwitch
	nextConf       *etcd.ConfigChange
	republishing   bool
	republished    chan leaseResult
	republishRetry *time.Timer
	// renewDue: a renewal came due while republishing (started after);
	// failedConf is a switch that failed, tried again by switchRetry;
	// fatal stops the daemon (a switch left no working backend).
	renewDue    bool
	failedConf  *etcd.ConfigChange
	switchRetry *time.Timer
	fatal       error
	// drift is the kernel watch (drift.go); watchFailed: starting it
	// failed (logged once).
	drift       *drift
	watchFailed bool

	tick, probe                *time.Ticker
	renew, retry, debounce     *time.Timer
	retire                     *time.Timer // a Mux member's grace ends
	pending                    bool        // a debounce is running
	renewing, acquiring        bool
	renewDone, acquired        chan leaseResult
	probing                    bool
	probed                     chan error
	renewOutage, etcdOutage    *etcd.OutageLog
	reconcilePeriod, probeEach time.Duration
}

func newLoop(ctx context.Context, e *Engine, events <-chan []subnet.Event, netconfs <-chan etcd.ConfigChange) *loop {
	l := &loop{e: e, ctx: ctx, events: events, netconfs: netconfs, republished: make(chan leaseResult, 1), republishRetry: stoppedTimer(), switchRetry: stoppedTimer(),
		peers: NewPeerSet(e.net, e.ext.PublicIP), delta: map[string]*subnet.Lease{},
		exported: map[string]bool{}, renewDone: make(chan leaseResult, 1), acquired: make(chan leaseResult, 1), probed: make(chan error, 1),
		renewOutage: etcd.NewOutageLog(e.log, "renewing the lease"), etcdOutage: etcd.NewOutageLog(e.log, "checking etcd"),
		reconcilePeriod: e.cfg.ReconcilePeriod, probeEach: e.cfg.ProbePeriod, drift: newDrift()}
	if l.reconcilePeriod <= 0 {
		l.reconcilePeriod = unwatchedResync
	}
	if l.probeEach <= 0 {
		l.probeEach = 5 * time.Second
	}
	if pp, ok := e.be.(backend.PerPeer); ok {
		l.rec = backend.NewReconciler(pp)
	}
	if e.mux == nil {
		l.peers.SetServed([]string{e.net.BackendType})
	}
	l.peers.SetOwnAttrs(e.attrs)
	l.peers.SetOwn(e.lease)
	l.tick, l.probe = time.NewTicker(l.reconcilePeriod), time.NewTicker(l.probeEach)
	l.renew, l.retry, l.debounce, l.retire = time.NewTimer(e.renewDelay()), stoppedTimer(), stoppedTimer(), stoppedTimer()
	return l
}

func stoppedTimer() *time.Timer {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return t
}

func (l *loop) stop() {
	l.tick.Stop()
	l.probe.Stop()
	l.renew.Stop()
	l.retry.Stop()
	l.debounce.Stop()
	l.retire.Stop()
	l.republishRetry.Stop()
	l.switchRetry.Stop()
	l.drift.close()
}

// loop feeds lease events and timers to the backend and keeps the lease.
func (e *Engine) loop(ctx context.Context, events <-chan []subnet.Event, netconfs <-chan etcd.ConfigChange) error {
	l := newLoop(ctx, e, events, netconfs)
	defer l.stop()
	for {
		var err error
		select {
		case <-ctx.Done():
			return nil
		case batch, ok := <-events:
			if !ok {
				return nil
			}
			l.onEvents(batch)
		case <-l.debounce.C:
			l.pending = false
			l.reconcile()
		case <-l.tick.C:
			l.reconcile()
		case batch, ok := <-l.drift.ch:
			l.onKernel(batch, ok)
		case <-l.drift.settle.C:
			l.checkDrift()
		case <-l.retry.C:
			l.reconcile()
		case ch, ok := <-l.netconfs:
			if !ok {
				l.netconfs = nil
				continue
			}
			l.onNetConf(ch)
		case r := <-l.republished:
			l.onRepublished(r)
		case <-l.republishRetry.C:
			l.startRepublish()
		case <-l.switchRetry.C:
			l.retrySwitch()
		case <-l.retire.C:
			if l.members(); l.needFull {
				l.reconcile()
			}
		case <-l.renew.C:
			l.startRenew()
		case r := <-l.renewDone:
			l.renewed(r)
		case r := <-l.acquired:
			err = l.onAcquired(r)
		case <-l.probe.C:
			l.probeEtcd()
		case err := <-l.probed:
			l.onProbed(err)
		}
		if err == nil {
			err = l.fatal
		}
		if err != nil {
			return err
		}
	}
}

// onEvents folds a batch into the peer set and reconciles: at once for
// the first change after a quiet moment, with the changes that arrived
// meanwhile folded in under load (see reconcile.go), so a burst (a
// hundred hosts restarting, a re-list after an outage) costs few passes.
func (l *loop) onEvents(batch []subnet.Event) {
	l.fold(batch)
	if l.rec != nil {
		l.drain()
		l.reconcilePeers()
		return
	}
	if l.pending {
		return
	}
	if wait := coalesceWindow - time.Since(l.lastReconcile); wait > 0 {
		l.pending = true
		l.debounce.Reset(wait)
		return
	}
	l.reconcile()
}

// fold folds one batch into the peer set and logs each change once.
func (l *loop) fold(batch []subnet.Event) {
	f := l.peers.Apply(batch)
	l.logFold(f)
	l.noteFold(f)
	l.synced = true
	if f.OwnRemoved {
		l.e.log.Warn("our lease was deleted from etcd (by an operator?); acquiring again", "subnet", l.e.lease.String())
		l.startReacquire()
	}
}

// logFold logs what a change of the peer set brought, one line per lease,
// and counts the rejections.
func (l *loop) logFold(f Fold, note ...any) {
	log := l.e.log
	for _, p := range f.Joined {
		log.Info("peer joined", append([]any{"peer_subnet", p.String(), "peer_ip", p.Attrs.PublicIP, "peer_backend", p.Attrs.BackendType}, note...)...)
	}
	for _, p := range f.Left {
		log.Info("peer left", "peer_subnet", p.String(), "peer_ip", p.Attrs.PublicIP)
	}
	for _, r := range f.Rejected {
		logRejected(l.e, r)
		l.e.health.metrics.leasesRejected.WithLabelValues(string(r.Reason)).Inc()
	}
	l.e.health.metrics.peers.Set(float64(l.peers.Len()))
	l.countByBackend()
}

func (l *loop) startRenew() {
	if l.republishing {
		l.renewDue = true // after the republish: both compare our lease with etcd's
		return
	}
	if l.renewing || l.acquiring {
		return
	}
	l.renewing = true
	l.e.renewAsync(l.ctx, l.renewDone)
}

func (l *loop) startReacquire() {
	if l.acquiring {
		return
	}
	l.acquiring = true
	l.needFull = true // the peer set changes without a Fold
	l.peers.Reacquiring()
	l.renew.Stop()
	l.e.reacquireAsync(l.ctx, l.acquired)
}

func (l *loop) renewed(r leaseResult) {
	e := l.e
	l.renewing = false
	switch {
	case l.ctx.Err() != nil:
	case r.gen != e.leaseGen || l.acquiring:
		// The lease was replaced, or is being re-acquired: this renewal
		// is of the old one.
		if !l.acquiring {
			l.renew.Reset(e.renewDelay())
		}
	case r.err == nil:
		l.renewOutage.OK()
		e.setLease(r.lease)
		e.log.Info("lease renewed", "subnet", r.lease.String(), "expires", r.lease.Expiration.Format(time.RFC3339))
		l.renew.Reset(e.renewDelay())
	case errors.Is(r.err, etcd.ErrLeaseLost):
		e.log.Warn("our lease is gone from etcd; acquiring again", "subnet", e.lease.String(), "reason", r.err)
		l.startReacquire()
	default:
		e.health.metrics.etcdErrors.WithLabelValues("renew").Inc()
		l.renewOutage.Fail(r.err)
		delay := min(30*time.Second, max(time.Second, time.Until(e.lease.Expiration)/4))
		if !l.etcdOutage.Failing() {
			// etcd answers the check again (this renewal was started
			// before it came back): try again at once.
			delay = time.Second
		}
		l.renew.Reset(delay)
	}
	l.startRepublish() // a switch waiting for this renewal
}

// onAcquired applies a re-acquired lease; only an error the operator must
// fix (no free subnet, a backend that cannot start) stops the daemon.
func (l *loop) onAcquired(r leaseResult) error {
	l.acquiring = false
	if l.ctx.Err() != nil {
		return nil
	}
	if err := l.e.reacquired(l.ctx, r); err != nil {
		return err
	}
	l.logFold(l.peers.SetOwn(l.e.lease), "note", "it holds the subnet we had before")
	l.renew.Reset(l.e.renewDelay())
	l.reconcile()
	l.republishStale()
	l.startRepublish() // a switch waiting for this acquisition
	return nil
}

// probeEtcd checks etcd on a timer, off the loop (a ping of an etcd that
// does not answer takes its whole timeout). The watch alone does not
// notice an outage (the client reconnects silently), so readiness reflects
// this check, the outage is logged once, and on recovery the leases are
// listed again and the lease renewed at once.
func (l *loop) probeEtcd() {
	if l.probing {
		return
	}
	l.probing = true
	go func() {
		pctx, cancel := context.WithTimeout(l.ctx, min(l.probeEach, 3*time.Second))
		defer cancel()
		l.probed <- l.e.sm.Ping(pctx)
	}()
}

func (l *loop) onProbed(err error) {
	e := l.e
	l.probing = false
	if l.ctx.Err() != nil {
		return
	}
	if err != nil {
		e.health.metrics.etcdErrors.WithLabelValues("probe").Inc()
		l.etcdOutage.Fail(err)
		e.health.Set("etcd", fmt.Errorf("unreachable: %w", err))
		return
	}
	if l.etcdOutage.Failing() {
		l.etcdOutage.OK()
		e.health.Set("etcd", nil)
		select {
		case e.relist <- struct{}{}:
		default:
		}
		l.startRenew()
	}
}
