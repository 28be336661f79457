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
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sync/errgroup"

	"github.com/flanneld-go/flannel/backend"
	"github.com/flanneld-go/flannel/backend/registry"
	"github.com/flanneld-go/flannel/subnet"
)

// Config is the daemon's configuration, from flags and FLANNELD_* variables.
type Config struct {
	Etcd                 EtcdConfig
	Iface                IfaceOptions
	SubnetFile           string
	RenewMargin          time.Duration
	LeaseTTL             time.Duration // 0: 24 h (upstream); shorter only for tests
	IPMasq               bool
	IPTablesResync       time.Duration
	IPTablesForwardRules bool
	ReconcilePeriod      time.Duration
	Log                  *slog.Logger
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
	cli, err := NewEtcdClient(c.Etcd)
	if err != nil {
		return err
	}
	defer cli.Close()
	sm := subnet.NewManager(cli, c.Etcd.Prefix, c.LeaseTTL, log)

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
	e := &Engine{cfg: c, log: log, sm: sm, net: netcfg, ext: ext, be: be}
	return e.Run(ctx)
}

// Engine runs one host's lease and backend.
type Engine struct {
	cfg Config
	log *slog.Logger
	sm  *subnet.Manager
	net *subnet.Config
	ext *backend.ExternalInterface
	be  backend.Backend

	attrs subnet.LeaseAttrs
	lease subnet.Lease
	fw    *firewallRunner
}

// NewEngine builds an engine from parts, for tests and embedders.
func NewEngine(c Config, sm *subnet.Manager, netcfg *subnet.Config, ext *backend.ExternalInterface, be backend.Backend) *Engine {
	log := c.Log
	if log == nil {
		log = slog.Default()
	}
	return &Engine{cfg: c, log: log, sm: sm, net: netcfg, ext: ext, be: be}
}

// Lease returns the lease currently held (valid once Ready was called).
func (e *Engine) Lease() subnet.Lease { return e.lease }

// Run acquires the lease, starts the backend and serves until ctx is done.
func (e *Engine) Run(ctx context.Context) error {
	attrs, err := e.be.Prepare(ctx)
	if err != nil {
		return fmt.Errorf("preparing the %s backend: %w", e.net.BackendType, err)
	}
	attrs.PublicIP, attrs.PublicIPv6 = e.ext.PublicIP, e.ext.PublicIPv6
	e.attrs = attrs

	hint := e.previousSubnet()
	lease, err := e.acquire(ctx, hint)
	if err != nil {
		return err
	}
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
	}
	if err := e.applyLease(ctx, lease); err != nil {
		return err
	}
	if e.cfg.Ready != nil {
		e.cfg.Ready()
	}

	g, gctx := errgroup.WithContext(ctx)
	events := make(chan []subnet.Event)
	g.Go(func() error { return e.sm.WatchLeases(gctx, events) })
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
	outage := subnet.NewOutageLog(e.log, "acquiring a lease")
	delay := time.Second
	for {
		l, err := e.sm.Acquire(ctx, e.net, e.attrs, hint)
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
		outage.Fail(err)
		select {
		case <-ctx.Done():
			return subnet.Lease{}, ctx.Err()
		case <-time.After(delay):
		}
		delay = min(delay*2, 30*time.Second)
	}
}

// applyLease configures the backend, rules and subnet.env for l.
func (e *Engine) applyLease(ctx context.Context, l subnet.Lease) error {
	mtu, err := e.be.Start(ctx, l)
	if err != nil {
		return fmt.Errorf("starting the %s backend for %s: %w", e.net.BackendType, l.String(), err)
	}
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
	e.lease = l
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
	tick := time.NewTicker(period)
	defer tick.Stop()
	renew := time.NewTimer(e.renewDelay())
	defer renew.Stop()
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	synced := false
	renewOutage := subnet.NewOutageLog(e.log, "renewing the lease")

	reconcile := func() {
		if !synced {
			return
		}
		if err := e.be.Reconcile(ctx, sortedPeers(peers)); err != nil {
			e.log.Error("reconcile failed; retrying in 1s", "backend", e.net.BackendType, "error", err)
			retry.Reset(time.Second)
		}
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
					delete(peers, l.Key())
					e.log.Info("peer left", "peer_subnet", l.String(), "peer_ip", l.Attrs.PublicIP)
				} else {
					if _, known := peers[l.Key()]; !known {
						e.log.Info("peer joined", "peer_subnet", l.String(), "peer_ip", l.Attrs.PublicIP, "peer_backend", l.Attrs.BackendType)
					}
					peers[l.Key()] = l
				}
			}
			synced = true
			if lost {
				e.log.Warn("our lease was deleted from etcd (by an operator?); acquiring again", "subnet", e.lease.String())
				if err := e.reacquire(ctx); err != nil {
					return err
				}
				renew.Reset(e.renewDelay())
			}
			reconcile()
		case <-tick.C:
			reconcile()
		case <-retry.C:
			reconcile()
		case <-renew.C:
			l, err := e.sm.Renew(ctx, e.lease)
			switch {
			case err == nil:
				renewOutage.OK()
				e.lease = l
				e.log.Info("lease renewed", "subnet", l.String(), "expires", l.Expiration.Format(time.RFC3339))
				renew.Reset(e.renewDelay())
			case errors.Is(err, subnet.ErrLeaseLost):
				e.log.Warn("our lease is gone from etcd; acquiring again", "subnet", e.lease.String(), "reason", err)
				if err := e.reacquire(ctx); err != nil {
					return err
				}
				renew.Reset(e.renewDelay())
			default:
				renewOutage.Fail(err)
				renew.Reset(min(30*time.Second, max(time.Second, time.Until(e.lease.Expiration)/4)))
			}
		}
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
		e.lease = l
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
