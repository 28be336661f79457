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
// The parts: engine.go sets up (backend, firewall, lease) and runs the
// goroutines; lease.go acquires, applies and renews the lease; loop.go is
// the event loop; peers.go is the pure rule of which leases are peers.
// Nothing on the loop waits for etcd: renewal and re-acquisition run in
// goroutines of their own and report back.
//
// On shutdown the lease stays in etcd, so the restarted daemon gets the
// same subnet back, and so do the rules and, for host-gw and vxlan, the
// routes and devices, so traffic between the other hosts and this one's
// pods keeps flowing while the daemon restarts. udp's flannel0 goes away
// with the daemon (see backend).
package network

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netlink"
	"golang.org/x/sync/errgroup"

	"github.com/flanneld-go/flannel/backend"
	"github.com/flanneld-go/flannel/backend/dataplane"
	"github.com/flanneld-go/flannel/backend/registry"
	"github.com/flanneld-go/flannel/backend/udp"
	"github.com/flanneld-go/flannel/network/firewall"
	"github.com/flanneld-go/flannel/subnet"
	"github.com/flanneld-go/flannel/subnet/etcd"
)

// Config is the daemon's configuration, from flags and FLANNELD_* variables.
type Config struct {
	Etcd        etcd.Config
	Iface       IfaceOptions
	SubnetFile  string
	RenewMargin time.Duration
	LeaseTTL    time.Duration // 0: 24 h (upstream); shorter only for tests
	IPMasq      bool
	// IPMasqNoRandomFully leaves --random-fully out of the MASQUERADE
	// rules (--ip-masq-fully-random-disable).
	IPMasqNoRandomFully  bool
	IPTablesResync       time.Duration
	IPTablesForwardRules bool
	ReconcilePeriod      time.Duration
	// BlackholeRoute keeps a blackhole route for this host's own subnets
	// (--ip-blackhole-route); off, one left by an earlier run is removed.
	BlackholeRoute bool
	// NetConfPath, when set, is the file the net-conf is read from instead
	// of etcd (--net-config-path); it is checked every NetConfPoll (5 s)
	// and a change is reported.
	NetConfPath string
	NetConfPoll time.Duration
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
	// UDP is the udp backend's tuning (FLANNEL_UDP_* variables).
	UDP udp.Tuning
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

	nc, err := loadNetConf(ctx, c, sm, log)
	if err != nil {
		return err
	}
	netcfg := nc.cfg
	bt, err := registry.Lookup(netcfg.BackendType)
	if err != nil {
		return err
	}
	iface := c.Iface
	iface.IPv6 = netcfg.EnableIPv6
	ext, err := FindExternal(&netlink.Handle{}, iface, log)
	if err != nil {
		return err
	}
	log.Info("using external interface", "iface", ext.Name, "addr", ext.Addr, "public_ip", ext.PublicIP,
		"addr6", ext.Addr6, "public_ipv6", ext.PublicIPv6, "mtu", ext.MTU)
	be, err := bt.New(backend.Params{Ext: ext, Config: netcfg, Options: nc.opts, Log: log, Tuning: c.UDP})
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
	fw       *firewall.Runner
	health   *Health
	relist   chan struct{}
	// enableForwarding is firewall.EnableForwarding; tests of the engine
	// replace it, so they run without root.
	enableForwarding func(log *slog.Logger, v6 bool) error
	// kernel holds the engine's own routes (the blackholes); tests replace
	// it with a fake.
	kernel       dataplane.Kernel
	blackholeErr string // the last error of syncBlackholes, logged once
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
	e := &Engine{cfg: c, log: log, sm: sm, net: netcfg, ext: ext, be: be, health: h, relist: make(chan struct{}, 1),
		enableForwarding: firewall.EnableForwarding, kernel: dataplane.NewNetlink(nil)}
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
	if err := e.enableForwarding(e.log, e.net.EnableIPv6); err != nil {
		return err
	}
	stopFirewall, err := e.setupFirewall()
	if err != nil {
		return err
	}
	defer stopFirewall()

	lease, err := e.acquire(ctx, e.previousSubnet())
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
	return e.serve(ctx)
}

// serve runs the lease watch, the backend's own work and the loop until
// ctx is done or one of them fails.
func (e *Engine) serve(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	events := make(chan []subnet.Event)
	g.Go(func() error { return e.sm.WatchLeases(gctx, events, e.relist) })
	if r, ok := e.be.(backend.Runner); ok {
		g.Go(func() error { return r.Run(gctx) })
	}
	if e.cfg.NetConfPath != "" {
		w := newNetConfWatch(e.cfg.NetConfPath, e.net, e.log)
		g.Go(func() error { return w.run(gctx, cmp.Or(e.cfg.NetConfPoll, 5*time.Second)) })
	}
	g.Go(func() error { return e.loop(gctx, events) })
	err := g.Wait()
	if ctx.Err() != nil {
		e.log.Info("shutting down; the lease and the rules stay in place (and, for host-gw and vxlan, the routes and devices)",
			"subnet", e.lease.String(), "backend", e.net.BackendType)
		return nil
	}
	return err
}

// setupFirewall starts keeping the ip-masq and forwarding rules when
// either is on, or removes an earlier run's rules when both are off. The
// returned function stops the resync.
func (e *Engine) setupFirewall() (stop func(), err error) {
	if !e.cfg.IPMasq && !e.cfg.IPTablesForwardRules {
		if fw, err := firewall.NewFirewall(e.log); err == nil {
			if err := fw.Remove(); err != nil {
				e.log.Warn("cannot remove the iptables rules of an earlier run", "error", err)
			}
		}
		return func() {}, nil
	}
	fw, err := firewall.NewRunner(e.log, e.cfg.IPTablesResync)
	if err != nil {
		return nil, err
	}
	e.fw = fw
	e.health.AddCheck("iptables", fw.Status)
	e.health.reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "flannel_iptables_resyncs_total", Help: "iptables rule checks made."},
			func() float64 { r, _ := fw.Counts(); return float64(r) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "flannel_iptables_repairs_total", Help: "iptables rule checks that had to restore rules."},
			func() float64 { _, r := fw.Counts(); return float64(r) }))
	return fw.Stop, nil
}
