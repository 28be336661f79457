package network

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/flanneld-go/flannel/backend/mux"
	"github.com/flanneld-go/flannel/backend/registry"
	"github.com/flanneld-go/flannel/subnet"
	"github.com/flanneld-go/flannel/subnet/etcd"
)

// A live backend switch, on this host. The operator puts a net-conf with
// another Backend (type or options); each host then
//
//  1. brings the new backend up beside the old one (mux.Switch), so what
//     it publishes next (a VtepMAC) exists before anyone uses it;
//  2. re-publishes its lease with the new BackendType/BackendData in one
//     transaction: same subnet, same etcd lease (etcd.Republish);
//  3. rewrites subnet.env with the new backend's MTU;
//  4. reconciles in full: each peer is reached by the backend it
//     advertises, so peers that have not switched yet are still reached
//     by the old backend, which stays while they are left (plus a grace),
//     then is retired and its devices deleted.
//
// Changes that cannot be applied live (Network, the subnet bounds, the
// address families, nftables mode) and invalid documents are refused
// with one error line; the running backend and data plane stay, and
// /readyz reports the refusal until the net-conf is fixed.

// pendingSwitch is a switch in progress: the new backend is up, the
// lease not re-published yet.
type pendingSwitch struct {
	ch      etcd.ConfigChange // what started it (tried again after a failure)
	cfg     *subnet.Config
	opts    any
	from    string // the old backend type
	start   time.Time
	attrs   subnet.LeaseAttrs
	mtu     int
	retried bool // a republish failed and is being retried
}

// onNetConf takes a new value of the net-conf (from the etcd watch, or
// the file of --net-config-path).
func (l *loop) onNetConf(ch etcd.ConfigChange) {
	if l.switching != nil {
		l.nextConf = &ch // applied when the running switch ends
		return
	}
	l.switchRetry.Stop() // a newer net-conf replaces one that failed
	e := l.e
	log := e.log.With("source", e.netConfSrc)
	if ch.Deleted {
		log.Warn("the net-conf was deleted; the running config stays, but a restarted host would wait for it: put it back")
		return
	}
	for _, w := range ch.Warnings {
		log.Warn("net-conf warning", "warning", w)
	}
	if ch.Err != nil {
		l.refuse(fmt.Errorf("the new net-conf is invalid, the running backend %s stays; fix the net-conf: %w", e.net.BackendType, ch.Err))
		return
	}
	var live []string
	var fixed []string
	for _, d := range subnet.DiffConfig(e.net, ch.Config) {
		if d.Live {
			live = append(live, d.Field)
		} else {
			fixed = append(fixed, fmt.Sprintf("%s (%s -> %s): %s", d.Field, d.Old, d.New, d.Advice()))
		}
	}
	if len(fixed) > 0 {
		l.refuse(fmt.Errorf("the new net-conf changes what cannot change while the cluster runs, so none of it is applied and the running backend %s stays: %s",
			e.net.BackendType, strings.Join(fixed, "; ")))
		return
	}
	if len(live) == 0 {
		e.health.Set("netconf", nil)
		log.Info("the net-conf was rewritten with nothing this host uses changed", "backend", e.net.BackendType)
		return
	}
	opts, err := l.switchable(ch.Config)
	if err != nil {
		l.refuse(err)
		return
	}
	if ch.Config.BackendType == e.net.BackendType && reflect.DeepEqual(opts, e.mux.Options(e.net.BackendType)) {
		// Spelled differently ("VNI":1 written out), meaning the same.
		e.net = ch.Config
		e.health.Set("netconf", nil)
		log.Info("the net-conf was rewritten with options that mean the running ones; nothing to do", "backend", e.net.BackendType)
		return
	}
	l.switching = &pendingSwitch{ch: ch, cfg: ch.Config, opts: opts, from: e.net.BackendType, start: time.Now()}
	log.Info("net-conf changed: switching backend live", "backend", e.net.BackendType, "new_backend", ch.Config.BackendType,
		"changed", strings.Join(live, ","), "subnet", e.lease.String())
	l.bringUp()
}

// switchable checks that this host can switch to cfg's backend live and
// returns the backend's options.
func (l *loop) switchable(cfg *subnet.Config) (any, error) {
	e := l.e
	bt, err := registry.Lookup(cfg.BackendType)
	if err != nil {
		return nil, fmt.Errorf("the new net-conf names an unknown backend, the running backend %s stays: %w", e.net.BackendType, err)
	}
	for _, w := range bt.OptionWarnings(cfg.Backend) {
		e.log.Warn("net-conf warning", "source", e.netConfSrc, "warning", w)
	}
	opts, err := bt.ParseOptions(cfg.Backend)
	if err != nil {
		return nil, fmt.Errorf("the new net-conf's Backend is invalid, the running backend %s stays; fix the net-conf: %w", e.net.BackendType, err)
	}
	if e.mux == nil || !mux.CanMix(cfg.BackendType) {
		return nil, fmt.Errorf("a switch between %s and %s is not applied live (only %s mix: each reaches the others' hosts); "+
			"the running backend stays: restart flanneld on each host to apply it, and expect hosts on either side not to reach each other until all are restarted",
			e.net.BackendType, cfg.BackendType, strings.Join(mux.Mixable, ", "))
	}
	return opts, nil
}

// refuse reports a net-conf that is not applied: one error line, a
// refusal counted, and /readyz says why until a net-conf is accepted.
func (l *loop) refuse(err error) {
	e := l.e
	e.health.metrics.switches.WithLabelValues("refused").Inc()
	e.health.Set("netconf", err)
	e.log.Error("net-conf change refused", "source", e.netConfSrc, "backend", e.net.BackendType, "error", err)
}

// bringUp is step 1: the new backend up beside the old one.
func (l *loop) bringUp() {
	e, sw := l.e, l.switching
	attrs, mtu, err := e.mux.Switch(l.ctx, sw.cfg.BackendType, sw.opts)
	if err != nil {
		l.switching = nil
		e.health.metrics.switches.WithLabelValues("failed").Inc()
		e.health.Set("netconf", fmt.Errorf("cannot bring up the %s backend: %w", sw.cfg.BackendType, err))
		if errors.Is(err, mux.ErrBroken) {
			l.fatal = fmt.Errorf("switching to the %s backend: %w; restart flanneld", sw.cfg.BackendType, err)
			return
		}
		e.log.Error("cannot bring up the new backend; the running one stays, and the switch is tried again every 10 s",
			"backend", sw.from, "new_backend", sw.cfg.BackendType, "error", err)
		if e.mux.Changed() {
			l.reconcile() // a member retired and brought back: its parts again
		}
		l.failedConf = &sw.ch
		l.switchRetry.Reset(switchRetryPeriod)
		l.afterSwitch()
		return
	}
	attrs.PublicIP, attrs.PublicIPv6, attrs.HostID = e.ext.PublicIP, e.ext.PublicIPv6, e.cfg.HostID
	sw.attrs, sw.mtu = attrs, mtu
	e.log.Info("new backend up beside the old one; re-publishing the lease", "backend", sw.from, "new_backend", sw.cfg.BackendType,
		"subnet", e.lease.String(), "mtu", mtu)
	// Every part now, before anyone learns of the new backend: the new
	// member's host state (flannel0's route, the VTEP's address) and its
	// table of peers (udp accepts datagrams only from peers it knows) are
	// in place when the first peer reaches us by it.
	l.needFull = true
	l.reconcile()
	l.startRepublish()
}

// startRepublish is step 2, off the loop; it waits for a renewal or
// acquisition in flight (each compares the lease it knows with etcd's).
// It also waits for a successful full pass: our side of the new backend
// must be in place before a peer reaches us by it.
func (l *loop) startRepublish() {
	if l.switching == nil || l.republishing || l.renewing || l.acquiring || !l.synced || l.rec != nil && l.rec.NeedsFull() {
		return
	}
	l.republishing = true
	e, own, attrs, gen := l.e, l.e.lease, l.switching.attrs, l.e.leaseGen
	go func() {
		rctx, cancel := context.WithTimeout(l.ctx, etcdRequestTimeout)
		defer cancel()
		nl, err := e.sm.Republish(rctx, own, attrs)
		l.republished <- leaseResult{nl, err, gen}
	}()
}

// onRepublished takes the result of step 2 and finishes the switch.
func (l *loop) onRepublished(r leaseResult) {
	e, sw := l.e, l.switching
	l.republishing = false
	if l.renewDue {
		defer l.startRenew() // a renewal that came due meanwhile
		l.renewDue = false
	}
	if l.ctx.Err() != nil || sw == nil {
		return
	}
	if r.gen != e.leaseGen {
		// Our lease was replaced meanwhile (an acquisition): what this
		// wrote was built on the old one. Again, on the new.
		l.startRepublish()
		return
	}
	switch {
	case errors.Is(r.err, etcd.ErrLeaseLost):
		e.log.Warn("our lease changed in etcd during the switch; acquiring it again with the new backend", "subnet", e.lease.String(), "reason", r.err)
		l.adopt(sw)
		l.startReacquire()
		return
	case r.err != nil:
		if !sw.retried {
			e.log.Warn("cannot re-publish the lease with the new backend; retrying every second (both backends serve meanwhile)",
				"subnet", e.lease.String(), "new_backend", sw.cfg.BackendType, "error", r.err)
		}
		sw.retried = true
		e.health.metrics.etcdErrors.WithLabelValues("republish").Inc()
		l.republishRetry.Reset(reconcileRetry)
		return
	}
	e.setLease(r.lease)
	l.adopt(sw)
	l.reconcile()
	took := time.Since(sw.start)
	e.health.metrics.switches.WithLabelValues("ok").Inc()
	e.health.metrics.switchSeconds.Set(took.Seconds())
	e.log.Info("backend switched", "backend", sw.cfg.BackendType, "old_backend", sw.from, "subnet", e.lease.String(), "mtu", sw.mtu,
		"took", took.Round(time.Millisecond), "peers_by_backend", fmt.Sprint(l.peers.ByType()))
	l.afterSwitch()
}

// adopt makes the new net-conf the running one: what we publish, the
// peers' checks against it, subnet.env.
func (l *loop) adopt(sw *pendingSwitch) {
	e := l.e
	e.net, e.attrs = sw.cfg, sw.attrs
	e.mux.Published()
	l.logFold(l.peers.SetOwnAttrs(sw.attrs))
	if err := e.writeSubnetEnv(e.lease, sw.mtu); err != nil {
		e.health.Set("subnet.env", err)
		e.log.Error("cannot rewrite subnet.env after the switch; new pods would get the old MTU", "file", e.cfg.SubnetFile, "error", err)
	}
	if old := e.mtu; sw.mtu < old {
		e.log.Warn("the new backend's MTU is smaller: pods created before the switch keep theirs, and their larger packets to other hosts "+
			"are answered with ICMP fragmentation-needed by this host (path MTU discovery; keep ICMP open) or fragmented; recreate pods to give them the new MTU",
			"old_mtu", old, "mtu", sw.mtu)
	}
	e.mtu = sw.mtu
	e.health.Set("netconf", nil)
}

// switchRetryPeriod is the wait before a switch that failed to bring up
// the new backend is tried again.
const switchRetryPeriod = 10 * time.Second

// retrySwitch tries a failed switch again, unless a newer net-conf came.
func (l *loop) retrySwitch() {
	if ch := l.failedConf; ch != nil && l.switching == nil {
		l.failedConf = nil
		l.onNetConf(*ch)
	}
}

// afterSwitch ends the switch and takes a net-conf that came meanwhile.
func (l *loop) afterSwitch() {
	l.switching = nil
	if next := l.nextConf; next != nil {
		l.nextConf = nil
		l.onNetConf(*next)
	}
}

// republishStale re-publishes what we serve when an acquisition that
// started before a switch finished after it: the lease it got carries the
// old backend's attributes.
func (l *loop) republishStale() {
	e := l.e
	if l.switching != nil || e.mux == nil || e.lease.Attrs.Equal(e.attrs) {
		return
	}
	l.switching = &pendingSwitch{cfg: e.net, from: mux.LeaseType(e.lease), start: time.Now(), attrs: e.attrs, mtu: e.mtu}
	e.log.Info("the lease acquired again carries the backend we had before the switch; re-publishing it", "subnet", e.lease.String(),
		"backend", e.net.BackendType)
	l.startRepublish()
}
