// Package network is the per-host engine: it wires this host's subnet lease
// to a backend, keeps the lease renewed, feeds the backend the peer leases
// from etcd, maintains the ip-masq and forwarding rules, and writes
// subnet.env for the CNI plugin.
//
// Flow of one daemon run:
//
//	etcd config -> backend type -> external interface -> backend.Prepare
//	-> acquire lease -> backend.Start -> firewall rules -> subnet.env -> ready
//	-> loop { lease events | reconcile timer | renew timer }
//
// On shutdown nothing is torn down: routes, devices and rules stay so that
// traffic keeps flowing while the daemon restarts, and the lease stays in
// etcd so the restarted daemon gets the same subnet back.
package network

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netlink"
	"golang.org/x/sync/errgroup"

	"github.com/flanneld-go/flannel/backend"
	"github.com/flanneld-go/flannel/backend/registry"
	"github.com/flanneld-go/flannel/internal/backoff"
	"github.com/flanneld-go/flannel/subnet"
	"github.com/flanneld-go/flannel/subnet/etcd"
)

// Config is the daemon's configuration, from flags and FLANNELD_* variables.
type Config struct {
	Etcd                 etcd.Config
	Iface                IfaceOptions
	SubnetFile           string
	RenewMargin          time.Duration
	LeaseTTL             time.Duration // 0: 24 h (upstream); shorter only for tests
	IPMasq               bool
	IPTablesResync       time.Duration
	IPTablesForwardRules bool
	ReconcilePeriod      time.Duration
	// HealthzAddr is where /healthz, /readyz and /metrics are served
	// ("" disables the endpoint; readiness is still tracked).
	HealthzAddr string
	// Health collects readiness and metrics; nil means a new one.
	Health *Health
	// ProbePeriod is how often etcd is checked while all is quiet (5 s).
	ProbePeriod time.Duration
	Log         *slog.Logger
	// Ready is called once, after subnet.env is written and the backend and
	// rules are in place.
	Ready func()
}

// Run runs the daemon until ctx is done. It returns an error for anything
// the operator must fix (bad config, no interface, no free subnet); etcd
// outages are waited out.
func Run(ctx context.Context, c Config) error {
	log := c.Log
	if log == nil {
		log = slog.Default()
	}
	cli, err := etcd.Dial(ctx, c.Etcd, log)
	if err != nil {
		return err
	}
	defer cli.Close()
	sm := etcd.NewManager(cli, c.Etcd.Prefix, c.LeaseTTL, log)

	netcfg, err := sm.WaitConfig(ctx)
	if err != nil {
		return err
	}
	bt, err := registry.Lookup(netcfg.BackendType)
	if err != nil {
		return fmt.Errorf("invalid net-conf at %s: %w", sm.ConfigKey(), err)
	}
	opts, err := bt.ParseOptions(netcfg.Backend)
	if err != nil {
		return fmt.Errorf("invalid net-conf at %s: %w", sm.ConfigKey(), err)
	}
	iface := c.Iface
	iface.IPv6 = netcfg.EnableIPv6
	ext, err := FindExternal(&netlink.Handle{}, iface)
	if err != nil {
		return err
	}
	log.Info("using external interface", "iface", ext.Name, "addr", ext.Addr, "public_ip", ext.PublicIP,
		"addr6", ext.Addr6, "public_ipv6", ext.PublicIPv6, "mtu", ext.MTU)
	be, err := bt.New(backend.Params{Ext: ext, Config: netcfg, Options: opts, Log: log})
	if err != nil {
		return err
	}
	return NewEngine(c, sm, netcfg, ext, be).Run(ctx)
}

// Engine runs one host's lease and backend.
type Engine struct {
	cfg Config
	log *slog.Logger
	sm  *etcd.Manager
	net *subnet.Config
	ext *backend.ExternalInterface
	be  backend.Backend

	attrs subnet.LeaseAttrs
	// lease is written only by the engine's goroutine (under leaseMu) and
	// read there freely; other goroutines use Lease().
	lease    subnet.Lease
	leaseGen uint64 // counts setLease calls, to spot stale renewals
	leaseMu  sync.Mutex
	fw       *firewallRunner
	health   *Health
	relist   chan struct{}
}

// NewEngine builds an engine from parts, for tests and embedders.
func NewEngine(c Config, sm *etcd.Manager, netcfg *subnet.Config, ext *backend.ExternalInterface, be backend.Backend) *Engine {
	log := c.Log
	if log == nil {
		log = slog.Default()
	}
	h := c.Health
	if h == nil {
		h = NewHealth()
	}
	e := &Engine{cfg: c, log: log, sm: sm, net: netcfg, ext: ext, be: be, health: h, relist: make(chan struct{}, 1)}
	h.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "flannel_watch_restarts_total",
		Help: "Times the lease watch was re-established (compaction, broken stream, etcd outage)."},
		func() float64 { return float64(sm.WatchRestarts()) }))
	if col, ok := be.(prometheus.Collector); ok {
		if err := h.Register(col); err != nil {
			log.Warn("cannot register the backend's metrics", "error", err)
		}
	}
	return e
}

// Lease returns the lease currently held (valid once Ready was called).
// Safe to call from any goroutine.
func (e *Engine) Lease() subnet.Lease {
	e.leaseMu.Lock()
	defer e.leaseMu.Unlock()
	return e.lease
}

// Run acquires the lease, starts the backend and serves until ctx is done.
func (e *Engine) Run(ctx context.Context) error {
	if e.cfg.HealthzAddr != "" {
		if err := e.health.Start(ctx, e.cfg.HealthzAddr, e.log); err != nil {
			return err
		}
	}
	attrs, err := e.be.Prepare(ctx)
	if err != nil {
		return fmt.Errorf("preparing the %s backend: %w", e.net.BackendType, err)
	}
	attrs.PublicIP, attrs.PublicIPv6 = e.ext.PublicIP, e.ext.PublicIPv6
	e.attrs = attrs

	// Host prerequisites come before the lease, so a host that cannot
	// serve does not hold a subnet in etcd.
	if err := EnableForwarding(e.log, e.net.EnableIPv6); err != nil {
		return err
	}
	if e.cfg.IPMasq || e.cfg.IPTablesForwardRules {
		fw, err := newFirewallRunner(e.log, e.cfg.IPTablesResync)
		if err != nil {
			return err
		}
		e.fw = fw
		defer fw.stop()
		e.health.AddCheck("iptables", fw.fw.Status)
		e.health.reg.MustRegister(
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "flannel_iptables_resyncs_total", Help: "iptables rule checks made."},
				func() float64 { r, _ := fw.fw.Counts(); return float64(r) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "flannel_iptables_repairs_total", Help: "iptables rule checks that had to restore rules."},
				func() float64 { _, r := fw.fw.Counts(); return float64(r) }))
	} else if fw, err := NewFirewall(e.log); err == nil {
		// Both rule sets are off: remove what an earlier run installed.
		if err := fw.Remove(); err != nil {
			e.log.Warn("cannot remove the iptables rules of an earlier run", "error", err)
		}
	}

	hint := e.previousSubnet()
	lease, err := e.acquire(ctx, hint)
	if err != nil {
		return err
	}
	if err := e.applyLease(ctx, lease); err != nil {
		return err
	}
	if e.cfg.Ready != nil {
		e.cfg.Ready()
	}
	if err := Notify("READY=1"); err != nil {
		e.log.Warn("cannot tell systemd we are ready", "error", err)
	}
	defer func() {
		if err := Notify("STOPPING=1"); err != nil {
			e.log.Warn("cannot tell systemd we are stopping", "error", err)
		}
	}()

	g, gctx := errgroup.WithContext(ctx)
	events := make(chan []subnet.Event)
	g.Go(func() error { return e.sm.WatchLeases(gctx, events, e.relist) })
	if r, ok := e.be.(backend.Runner); ok {
		g.Go(func() error { return r.Run(gctx) })
	}
	g.Go(func() error { return e.loop(gctx, events) })
	err = g.Wait()
	if ctx.Err() != nil {
		e.log.Info("shutting down; routes, devices, rules and the lease stay in place", "subnet", e.lease.String())
		return nil
	}
	return err
}

func (e *Engine) previousSubnet() subnet.Hint {
	if e.cfg.SubnetFile == "" {
		return subnet.Hint{}
	}
	env, err := ReadSubnetEnv(e.cfg.SubnetFile)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			e.log.Warn("cannot read the previous subnet file; not reusing its subnet", "file", e.cfg.SubnetFile, "error", err)
		}
		return subnet.Hint{}
	}
	return env.Hint()
}

// acquire gets a lease, waiting out etcd outages. Running out of subnets is
// returned at once: only the operator can fix it.
func (e *Engine) acquire(ctx context.Context, hint subnet.Hint) (subnet.Lease, error) {
	outage := etcd.NewOutageLog(e.log, "acquiring a lease")
	retry := backoff.New(time.Second, 30*time.Second)
	for {
		// Each attempt is bounded: the etcd client waits for a connection
		// without limit, and an outage must be logged, not waited on.
		actx, cancel := context.WithTimeout(ctx, etcdRequestTimeout)
		l, err := e.sm.Acquire(actx, e.net, e.attrs, hint)
		cancel()
		if err == nil {
			outage.OK()
			return l, nil
		}
		if ctx.Err() != nil {
			return subnet.Lease{}, ctx.Err()
		}
		if errors.Is(err, subnet.ErrNoFreeSubnet) {
			return subnet.Lease{}, err
		}
		e.health.metrics.etcdErrors.WithLabelValues("acquire").Inc()
		outage.Fail(err)
		if err := retry.Wait(ctx); err != nil {
			return subnet.Lease{}, err
		}
	}
}

// applyLease configures the backend, rules and subnet.env for l.
func (e *Engine) applyLease(ctx context.Context, l subnet.Lease) error {
	e.setLease(l)
	mtu, err := e.be.Start(ctx, l)
	if err != nil {
		return fmt.Errorf("starting the %s backend for %s: %w", e.net.BackendType, l.String(), err)
	}
	e.health.Set("backend", nil)
	if e.fw != nil {
		rc := RuleConfig{Network: e.net.Network, Subnet: l.Subnet, Masquerade: e.cfg.IPMasq, Forward: e.cfg.IPTablesForwardRules}
		if e.net.EnableIPv6 {
			rc.IPv6Network, rc.IPv6Subnet = e.net.IPv6Network, l.IPv6Subnet
		}
		if err := e.fw.apply(ctx, rc); err != nil {
			return err
		}
	}
	removeStaleDevices(&netlink.Handle{}, e.be, e.log)
	env := EnvFor(e.net, l, mtu, e.cfg.IPMasq)
	if e.cfg.SubnetFile != "" {
		if err := WriteSubnetEnv(e.cfg.SubnetFile, env); err != nil {
			return err
		}
	}
	e.health.Set("subnet.env", nil)
	e.log.Info("lease ready", "subnet", l.String(), "mtu", mtu, "subnet_file", e.cfg.SubnetFile, "backend", e.net.BackendType)
	return nil
}

// loop feeds lease events and timers to the backend and keeps the lease.
func (e *Engine) loop(ctx context.Context, events <-chan []subnet.Event) error {
	peers := map[string]subnet.Lease{}
	period := e.cfg.ReconcilePeriod
	if period <= 0 {
		period = 10 * time.Second
	}
	probePeriod := e.cfg.ProbePeriod
	if probePeriod <= 0 {
		probePeriod = 5 * time.Second
	}
	tick := time.NewTicker(period)
	defer tick.Stop()
	probe := time.NewTicker(probePeriod)
	defer probe.Stop()
	renew := time.NewTimer(e.renewDelay())
	defer renew.Stop()
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	// Lease changes are coalesced for a moment, so a burst (a hundred hosts
	// restarting, a re-list after an outage) costs one reconcile, not one
	// per event.
	debounce := time.NewTimer(time.Hour)
	debounce.Stop()
	pending := false
	synced := false
	renewOutage := etcd.NewOutageLog(e.log, "renewing the lease")
	etcdOutage := etcd.NewOutageLog(e.log, "checking etcd")
	m := e.health.metrics

	reconcile := func() {
		if !synced {
			return
		}
		start := time.Now()
		err := e.be.Reconcile(ctx, sortedPeers(peers))
		m.reconcileDuration.WithLabelValues(e.net.BackendType).Observe(time.Since(start).Seconds())
		m.reconciles.WithLabelValues(e.net.BackendType).Inc()
		if err != nil {
			m.reconcileErrors.WithLabelValues(e.net.BackendType).Inc()
			e.health.Set("backend", fmt.Errorf("last reconcile failed: %w", err))
			e.log.Error("reconcile failed; retrying in 1s", "backend", e.net.BackendType, "error", err)
			retry.Reset(time.Second)
			return
		}
		e.health.Set("backend", nil)
	}
	// Renewal runs in its own goroutine and reports back, so an etcd that
	// does not answer never stalls the loop (and with it the reconcile
	// timer and the etcd check).
	type renewResult struct {
		lease subnet.Lease
		err   error
		gen   uint64 // e.leaseGen when the renewal started
	}
	renewDone := make(chan renewResult, 1)
	renewing := false
	startRenew := func() {
		if renewing {
			return
		}
		renewing = true
		l, gen := e.lease, e.leaseGen
		go func() {
			rctx, cancel := context.WithTimeout(ctx, etcdRequestTimeout)
			defer cancel()
			nl, err := e.sm.Renew(rctx, l)
			renewDone <- renewResult{nl, err, gen}
		}()
	}
	renewed := func(r renewResult) error {
		renewing = false
		switch {
		case ctx.Err() != nil:
			return nil
		case r.gen != e.leaseGen:
			// The lease was replaced (re-acquired) while this renewal ran.
			renew.Reset(e.renewDelay())
		case r.err == nil:
			renewOutage.OK()
			e.setLease(r.lease)
			e.log.Info("lease renewed", "subnet", r.lease.String(), "expires", r.lease.Expiration.Format(time.RFC3339))
			renew.Reset(e.renewDelay())
		case errors.Is(r.err, etcd.ErrLeaseLost):
			e.log.Warn("our lease is gone from etcd; acquiring again", "subnet", e.lease.String(), "reason", r.err)
			if err := e.reacquire(ctx); err != nil {
				return err
			}
			renew.Reset(e.renewDelay())
		default:
			m.etcdErrors.WithLabelValues("renew").Inc()
			renewOutage.Fail(r.err)
			delay := min(30*time.Second, max(time.Second, time.Until(e.lease.Expiration)/4))
			if !etcdOutage.Failing() {
				// etcd answers the check again (this renewal was started
				// before it came back): try again at once.
				delay = time.Second
			}
			renew.Reset(delay)
		}
		return nil
	}

	for {
		select {
		case <-ctx.Done():
			return nil
		case batch, ok := <-events:
			if !ok {
				return nil
			}
			lost := false
			for _, ev := range batch {
				l := ev.Lease
				if l.Subnet == e.lease.Subnet {
					if ev.Type == subnet.EventRemoved {
						lost = true
					}
					continue
				}
				if ev.Type == subnet.EventRemoved {
					if _, known := peers[l.Key()]; known {
						e.log.Info("peer left", "peer_subnet", l.String(), "peer_ip", l.Attrs.PublicIP)
					}
					delete(peers, l.Key())
				} else if !e.net.Network.Contains(l.Subnet.Addr()) {
					// A lease of another network config (a host not yet
					// restarted after a Network change): routing to it
					// could hijack addresses outside the pod network.
					delete(peers, l.Key())
					e.log.Warn("ignoring peer whose subnet is outside the network; restart it so it picks up the current net-conf",
						"peer_subnet", l.String(), "peer_ip", l.Attrs.PublicIP, "network", e.net.Network)
				} else {
					if _, known := peers[l.Key()]; !known {
						e.log.Info("peer joined", "peer_subnet", l.String(), "peer_ip", l.Attrs.PublicIP, "peer_backend", l.Attrs.BackendType)
					}
					peers[l.Key()] = l
				}
			}
			m.peers.Set(float64(len(peers)))
			synced = true
			if lost {
				e.log.Warn("our lease was deleted from etcd (by an operator?); acquiring again", "subnet", e.lease.String())
				if err := e.reacquire(ctx); err != nil {
					return err
				}
				renew.Reset(e.renewDelay())
			}
			if !pending {
				pending = true
				debounce.Reset(coalesceWindow)
			}
		case <-debounce.C:
			pending = false
			reconcile()
		case <-tick.C:
			reconcile()
		case <-retry.C:
			reconcile()
		case <-renew.C:
			startRenew()
		case r := <-renewDone:
			if err := renewed(r); err != nil {
				return err
			}
		case <-probe.C:
			// The watch alone does not notice an outage (the client
			// reconnects silently), so etcd is checked on a timer: readiness
			// reflects it, the outage is logged once, and on recovery the
			// leases are listed again and the lease renewed at once.
			pctx, cancel := context.WithTimeout(ctx, min(probePeriod, 3*time.Second))
			err := e.sm.Ping(pctx)
			cancel()
			if ctx.Err() != nil {
				return nil
			}
			if err != nil {
				m.etcdErrors.WithLabelValues("probe").Inc()
				etcdOutage.Fail(err)
				e.health.Set("etcd", fmt.Errorf("unreachable: %w", err))
				continue
			}
			if etcdOutage.Failing() {
				etcdOutage.OK()
				e.health.Set("etcd", nil)
				select {
				case e.relist <- struct{}{}:
				default:
				}
				startRenew()
			}
		}
	}
}

// etcdRequestTimeout bounds the engine's own etcd requests (acquire,
// renew).
const etcdRequestTimeout = 10 * time.Second

// coalesceWindow is how long lease events are gathered before a reconcile.
const coalesceWindow = 20 * time.Millisecond

// setLease records the lease held now.
func (e *Engine) setLease(l subnet.Lease) {
	e.leaseMu.Lock()
	e.lease = l
	e.leaseGen++
	e.leaseMu.Unlock()
	e.health.Set("lease", nil)
	if l.Reserved() {
		e.health.metrics.leaseExpiry.Set(0)
	} else {
		e.health.metrics.leaseExpiry.Set(float64(l.Expiration.Unix()))
	}
}

// reacquire gets a lease again (preferring the same subnet) and, if the
// subnet changed, reconfigures everything for the new one.
func (e *Engine) reacquire(ctx context.Context) error {
	old := e.lease
	l, err := e.acquire(ctx, subnet.Hint{Subnet: old.Subnet, IPv6Subnet: old.IPv6Subnet})
	if err != nil {
		return err
	}
	if l.Subnet == old.Subnet && l.IPv6Subnet == old.IPv6Subnet {
		e.setLease(l)
		e.log.Info("lease re-acquired with the same subnet", "subnet", l.String())
		return nil
	}
	e.log.Error("lease re-acquired with a DIFFERENT subnet; pods on this host keep old addresses until they are recreated",
		"old_subnet", old.String(), "new_subnet", l.String())
	return e.applyLease(ctx, l)
}

// renewDelay is the time until the lease is due for renewal.
func (e *Engine) renewDelay() time.Duration {
	if e.lease.Reserved() {
		return 24 * time.Hour // reservations do not expire; the watch reports deletion
	}
	margin := e.cfg.RenewMargin
	if margin <= 0 {
		margin = time.Hour
	}
	return max(time.Until(e.lease.Expiration.Add(-margin)), time.Second)
}

func sortedPeers(m map[string]subnet.Lease) []subnet.Lease {
	out := make([]subnet.Lease, 0, len(m))
	for _, l := range m {
		out = append(out, l)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Subnet.Addr().Less(out[j].Subnet.Addr()) })
	return out
}

// firewallRunner keeps the rules of the current lease in place, restarting
// the resync loop when the lease changes.
type firewallRunner struct {
	fw     *Firewall
	resync time.Duration
	cancel context.CancelFunc
	done   chan struct{}
}

func newFirewallRunner(log *slog.Logger, resync time.Duration) (*firewallRunner, error) {
	fw, err := NewFirewall(log)
	if err != nil {
		return nil, err
	}
	if resync <= 0 {
		resync = 5 * time.Second
	}
	return &firewallRunner{fw: fw, resync: resync}, nil
}

// apply (re)starts the resync loop for rc and waits until the rules were
// in place once, so readiness is only signalled with the rules installed.
func (r *firewallRunner) apply(ctx context.Context, rc RuleConfig) error {
	r.stop()
	rctx, cancel := context.WithCancel(ctx)
	r.cancel, r.done = cancel, make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		defer close(r.done)
		errc <- r.fw.Run(rctx, rc, r.resync)
	}()
	select {
	case <-r.fw.Ready():
		return nil
	case err := <-errc:
		return fmt.Errorf("iptables rules: %w", err)
	case <-time.After(30 * time.Second):
		return fmt.Errorf("iptables rules not in place after 30s: %w", r.fw.Status())
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (r *firewallRunner) stop() {
	if r.cancel != nil {
		r.cancel()
		<-r.done
		r.cancel = nil
	}
}
