package network

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/flanneld-go/flannel/internal/backoff"
	"github.com/flanneld-go/flannel/network/firewall"
	"github.com/flanneld-go/flannel/subnet"
	"github.com/flanneld-go/flannel/subnet/etcd"
)

// etcdRequestTimeout bounds the engine's own etcd requests (acquire,
// renew).
const etcdRequestTimeout = 10 * time.Second

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

// lostRaceRounds bounds the acquisitions that end in lost races (each
// Acquire tries up to 50 times) before the daemon gives up: contention
// clears in a few rounds; what does not is a writer to fix.
const lostRaceRounds = 3

// acquire gets a lease, waiting out etcd outages. What only the operator
// can fix is returned at once: no free subnet, another host holding a
// lease for our PublicIP, etcd refusing our requests. Lost races are
// retried for lostRaceRounds rounds. While it retries, /readyz says why.
func (e *Engine) acquire(ctx context.Context, hint subnet.Hint) (subnet.Lease, error) {
	return e.acquireAs(ctx, hint, e.net, e.attrs)
}

// acquireAs is acquire with the net-conf and attributes given: off the
// loop, a switch may replace e.net and e.attrs meanwhile.
func (e *Engine) acquireAs(ctx context.Context, hint subnet.Hint, net *subnet.Config, attrs subnet.LeaseAttrs) (subnet.Lease, error) {
	outage := etcd.NewOutageLog(e.log, "acquiring a lease")
	retry := backoff.New(time.Second, 30*time.Second)
	races := 0
	for {
		// Each attempt is bounded: the etcd client waits for a connection
		// without limit, and an outage must be logged, not waited on.
		timeout := e.acquireTimeout
		if timeout <= 0 {
			timeout = etcdRequestTimeout
		}
		actx, cancel := context.WithTimeout(ctx, timeout)
		l, err := e.sm.Acquire(actx, net, attrs, hint)
		cancel()
		if err == nil {
			outage.OK()
			return l, nil
		}
		if ctx.Err() != nil {
			return subnet.Lease{}, ctx.Err()
		}
		reason, fatal := e.acquireFailed(err, &races, outage)
		if fatal != nil {
			e.health.Set("lease", fmt.Errorf("acquiring a lease: gave up: %w", fatal))
			return subnet.Lease{}, fatal
		}
		e.health.Set("lease", fmt.Errorf("acquiring a lease: %s", reason))
		if err := retry.Wait(ctx); err != nil {
			return subnet.Lease{}, err
		}
	}
}

// acquireFailed sorts out a failed acquisition: an error to stop with, or
// the reason to retry (for /readyz). races counts the rounds lost to races.
func (e *Engine) acquireFailed(err error, races *int, outage *etcd.OutageLog) (reason string, fatal error) {
	switch {
	case errors.Is(err, subnet.ErrNoFreeSubnet):
		return "", err
	case errors.Is(err, etcd.ErrHostConflict):
		if e.hostIDSource != "" {
			err = fmt.Errorf("%w (this host's identity %s is %s)", err, e.cfg.HostID, e.hostIDSource)
		}
		return "", err
	case errors.Is(err, etcd.ErrLostRaces):
		*races++
		if *races >= lostRaceRounds {
			return "", fmt.Errorf("acquiring a lease: giving up after %d rounds: %w", *races, err)
		}
		e.log.Warn("acquiring a lease: lost every race for a subnet; retrying", "round", *races, "rounds", lostRaceRounds, "error", err)
		return fmt.Sprintf("lost the race for a subnet (round %d of %d): %v", *races, lostRaceRounds, err), nil
	case !etcd.IsTransient(err):
		return "", fmt.Errorf("acquiring a lease: etcd refused the request; check the etcd user's permissions on the prefix: %w", err)
	}
	e.health.metrics.etcdErrors.WithLabelValues("acquire").Inc()
	outage.Fail(err)
	return "etcd unreachable: " + err.Error(), nil
}

// applyLease configures the backend, rules and subnet.env for l.
func (e *Engine) applyLease(ctx context.Context, l subnet.Lease) error {
	e.setLease(l)
	mtu, err := e.be.Start(ctx, l)
	if err != nil {
		return fmt.Errorf("starting the %s backend for %s: %w", e.net.BackendType, l.String(), err)
	}
	e.health.Set("backend", nil)
	e.syncBlackholes()
	if e.fw != nil {
		rc := firewall.RuleConfig{Network: e.net.Network, Subnet: l.Subnet, Masquerade: e.cfg.IPMasq, Forward: e.cfg.IPTablesForwardRules,
			FullyRandomDisable: e.cfg.IPMasqNoRandomFully}
		if e.net.EnableIPv6 {
			rc.IPv6Network, rc.IPv6Subnet = e.net.IPv6Network, l.IPv6Subnet
		}
		if err := e.fw.Apply(ctx, rc); err != nil {
			return err
		}
	}
	if e.mux == nil {
		// With a Mux, after the first full pass: the peers' types say
		// which devices stay (see loop.members).
		removeStaleDevices(&netlink.Handle{}, e.be, e.log)
	}
	if err := e.writeSubnetEnv(l, mtu); err != nil {
		return err
	}
	e.mtu = mtu
	e.log.Info("lease ready", "subnet", l.String(), "mtu", mtu, "subnet_file", e.cfg.SubnetFile, "backend", e.net.BackendType)
	return nil
}

// writeSubnetEnv writes subnet.env for lease l and the pods' MTU.
func (e *Engine) writeSubnetEnv(l subnet.Lease, mtu int) error {
	if e.cfg.SubnetFile != "" {
		if err := WriteSubnetEnv(e.cfg.SubnetFile, EnvFor(e.net, l, mtu, e.cfg.IPMasq)); err != nil {
			return err
		}
	}
	e.health.Set("subnet.env", nil)
	return nil
}

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

// leaseResult is what a renewal or re-acquisition goroutine reports.
type leaseResult struct {
	lease subnet.Lease
	err   error
	gen   uint64 // e.leaseGen when it started
}

// renewAsync renews l off the loop and reports on done.
func (e *Engine) renewAsync(ctx context.Context, done chan<- leaseResult) {
	l, gen := e.lease, e.leaseGen
	go func() {
		rctx, cancel := context.WithTimeout(ctx, etcdRequestTimeout)
		defer cancel()
		nl, err := e.sm.Renew(rctx, l)
		done <- leaseResult{nl, err, gen}
	}()
}

// reacquireAsync acquires a lease again off the loop, preferring the
// subnet held now, waiting out etcd outages, and reports on done.
func (e *Engine) reacquireAsync(ctx context.Context, done chan<- leaseResult) {
	old, gen, net, attrs := e.lease, e.leaseGen, e.net, e.attrs
	go func() {
		l, err := e.acquireAs(ctx, subnet.Hint{Subnet: old.Subnet, IPv6Subnet: old.IPv6Subnet}, net, attrs)
		done <- leaseResult{l, err, gen}
	}()
}

// reacquired takes the result of reacquireAsync on the loop: the same
// subnet just replaces the lease; another one reconfigures everything.
func (e *Engine) reacquired(ctx context.Context, r leaseResult) error {
	if r.err != nil {
		return r.err
	}
	old := e.lease
	if r.lease.Subnet == old.Subnet && r.lease.IPv6Subnet == old.IPv6Subnet {
		e.setLease(r.lease)
		e.log.Info("lease re-acquired with the same subnet", "subnet", r.lease.String())
		return nil
	}
	e.log.Error("lease re-acquired with a DIFFERENT subnet; pods on this host keep old addresses until they are recreated",
		"old_subnet", old.String(), "new_subnet", r.lease.String())
	return e.applyLease(ctx, r.lease)
}
