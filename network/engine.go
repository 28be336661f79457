// Package network is the per-host engine: it wires this host's subnet lease
// to a backend, keeps the lease renewed, feeds the backend the peer leases
// from etcd, maintains the ip-masq and forwarding rules, and writes
// subnet.env for the CNI plugin.
//
// Flow of one daemon run:
//
//	etcd config -> backend type -> external interface -> the Network holds
//	no host address (danger.go) -> backend.Prepare -> acquire lease
//	-> backend.Start -> firewall rules -> subnet.env -> ready
//	-> loop { lease events | net-conf changes (switch.go) | reconcile timer | renew timer }
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
	"github.com/flanneld-go/flannel/backend/mux"
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
	// HostID is this host's identity in its lease (--host-id). Run fills
	// it in when empty (see HostIdentity); an engine from NewEngine uses
	// it as it is.
	HostID string
	// MachineIDFile is read for the default HostID (DefaultMachineIDFile
	// when empty).
	MachineIDFile string
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
	leases, err := defaultBackendLeases(ctx, netcfg, sm)
	if err != nil {
		return fmt.Errorf("listing the leases to check the default backend: %w", err)
	}
	if err := checkDefaultBackend(netcfg, leases, nc.src); err != nil {
		return err
	}
	iface := c.Iface
	iface.IPv6 = netcfg.EnableIPv6
	nl := &netlink.Handle{}
	ext, err := FindExternal(nl, iface, log)
	if err != nil {
		return err
	}
	log.Info("using external interface", "iface", ext.Name, "addr", ext.Addr, "public_ip", ext.PublicIP,
		"addr6", ext.Addr6, "public_ipv6", ext.PublicIPv6, "mtu", ext.MTU)
	// Before anything is set up: a pod network holding our own address
	// would cut this host off its peers and etcd.
	if err := checkHost(nl, netcfg, ext); err != nil {
		return fmt.Errorf("refusing the net-conf at %s: %w", nc.src, err)
	}
	source, err := c.fillHostID(ext, log)
	if err != nil {
		return err
	}
	be, err := newBackend(c, netcfg, ext, nc.opts, log)
	if err != nil {
		return err
	}
	e := NewEngine(c, sm, netcfg, ext, be)
	e.hostIDSource = source
	e.netConfSrc, e.netConfRaw = nc.src, nc.raw
	return e.Run(ctx)
}

// fillHostID sets c.HostID to this host's identity (see HostIdentity),
// logs it, and returns where it comes from.
func (c *Config) fillHostID(ext *backend.ExternalInterface, log *slog.Logger) (source string, err error) {
	mac, err := interfaceMAC(ext.Index)
	if err != nil {
		return "", err
	}
	id, source, err := HostIdentity(c.HostID, c.MachineIDFile, ext.Name, mac)
	if err != nil {
		return "", err
	}
	if id == "" {
		log.Warn("this host has no identity: its lease carries none, and another host given the same public IP could take it; set --host-id",
			"reason", source)
	} else {
		log.Info("host identity", "host_id", id, "source", source)
	}
	c.HostID = id
	return source, nil
}

// Engine runs one host's lease and backend.
type Engine struct {
	cfg Config
	log *slog.Logger
	sm  *etcd.Manager
	net *subnet.Config
	ext *backend.ExternalInterface
	be  backend.Backend
	// mux is be when it is a mux.Mux (the net-conf's backend can be mixed
	// with others): peers of every mixable type are served.
	mux *mux.Mux

	attrs subnet.LeaseAttrs
	// mtu is the pods' MTU in subnet.env.
	mtu int
	// netConfSrc is where the net-conf is read (the key, or the file of
	// NetConfPath), netConfRaw the document the daemon started with; the
	// etcd key is watched from it (none when netConfSrc is empty, as for
	// an engine from NewEngine).
	netConfSrc string
	netConfRaw []byte
	// hostIDSource says where cfg.HostID comes from, for errors.
	hostIDSource string
	// acquireTimeout bounds one acquisition round (etcdRequestTimeout
	// when zero; shorter in tests).
	acquireTimeout time.Duration
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
	if m, ok := be.(*mux.Mux); ok {
		e.mux = m
	}
	h.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "flannel_watch_restarts_total",
		Help: "Times the lease watch was re-established (compaction, broken stream, etcd outage)."},
		func() float64 { return float64(sm.WatchRestarts()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "flannel_netconf_watch_restarts_total",
			Help: "Times the watch of the net-conf key was re-established (compaction, broken stream, etcd outage)."},
			func() float64 { return float64(sm.ConfigWatchRestarts()) }))
	return e
}

// registerBackendMetrics serves the backend's own metrics, when it has
// any. Only after Prepare: Prepare sets up what Collect reads (the udp
// backend's per-queue counters), and /metrics is served from the start.
func (e *Engine) registerBackendMetrics() {
	if col, ok := e.be.(prometheus.Collector); ok {
		if err := e.health.Register(col); err != nil {
			e.log.Warn("cannot register the backend's metrics", "error", err)
		}
	}
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
	e.registerBackendMetrics()
	attrs.PublicIP, attrs.PublicIPv6 = e.ext.PublicIP, e.ext.PublicIPv6
	attrs.HostID = e.cfg.HostID
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
	e.removeOtherFirewallMode()
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
	netconfs := make(chan etcd.ConfigChange, 1)
	if r, ok := e.be.(backend.Runner); ok {
		g.Go(func() error { return r.Run(gctx) })
	}
	switch {
	case e.cfg.NetConfPath != "":
		w := newNetConfWatch(e.cfg.NetConfPath, e.netConfRaw, e.log, netconfs)
		g.Go(func() error { return w.run(gctx, cmp.Or(e.cfg.NetConfPoll, 5*time.Second)) })
	case e.netConfSrc != "":
		g.Go(func() error { return e.sm.WatchConfig(gctx, e.netConfRaw, netconfs) })
	default:
		close(netconfs)
	}
	g.Go(func() error { return e.loop(gctx, events, netconfs) })
	err := g.Wait()
	if ctx.Err() != nil {
		e.log.Info("shutting down; the lease and the rules stay in place (and, for host-gw and vxlan, the routes and devices)",
			"subnet", e.lease.String(), "backend", e.net.BackendType)
		return nil
	}
	return err
}

// setupFirewall starts keeping the ip-masq and forwarding rules, with
// iptables or (EnableNFTables) nftables, when either feature is on. With
// both features off it removes the rules of both modes. The returned
// function stops the resync.
func (e *Engine) setupFirewall() (stop func(), err error) {
	if !e.cfg.IPMasq && !e.cfg.IPTablesForwardRules {
		if _, err := firewall.RemoveAll(e.log); err != nil {
			e.log.Warn("cannot remove the firewall rules of an earlier run", "error", err)
		}
		return func() {}, nil
	}
	mode := firewall.IPTables
	if e.net.EnableNFTables {
		mode = firewall.NFTables
	}
	fw, err := firewall.NewRunner(e.log, e.cfg.IPTablesResync, mode)
	if err != nil {
		return nil, err
	}
	e.fw = fw
	e.health.AddCheck(string(mode), fw.Status)
	e.health.reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "flannel_" + string(mode) + "_resyncs_total", Help: string(mode) + " rule checks made."},
			func() float64 { r, _ := fw.Counts(); return float64(r) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "flannel_" + string(mode) + "_repairs_total", Help: string(mode) + " rule checks that had to restore rules."},
			func() float64 { _, r := fw.Counts(); return float64(r) }))
	return fw.Stop, nil
}

// removeOtherFirewallMode deletes the rules of the mode not in use (an
// earlier run's, or upstream flanneld's, same names), so the host keeps one
// set. It runs once this mode's rules are in place, so pod traffic is never
// without rules.
func (e *Engine) removeOtherFirewallMode() {
	if e.fw == nil {
		return
	}
	if _, err := firewall.RemoveOthers(e.log, e.fw.Mode()); err != nil {
		e.log.Warn("cannot remove the rules of the other firewall mode; remove them by hand (see flanneld cleanup)",
			"mode", e.fw.Mode(), "error", err)
	}
}
