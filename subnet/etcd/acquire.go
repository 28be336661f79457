package etcd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flanneld-go/flannel/internal/backoff"
	"github.com/flanneld-go/flannel/subnet"
)

// ErrLostRaces means Acquire gave up after losing the creation race every
// time: other writers kept changing the subnet table between its read and
// its write. It is not an etcd outage.
var ErrLostRaces = errors.New("lost the race for a subnet")

// acquireAttempts bounds the reads and writes of one Acquire.
const acquireAttempts = 50

// Acquire gets this host a lease for attrs (PublicIP identifies the host;
// HostID tells it from another host given the same PublicIP):
//  1. a lease already held under our PublicIP is reused if it fits cfg
//     (a reservation is used as is; a non-fitting lease is deleted), unless
//     it carries another HostID: then no lease is taken and the error is a
//     *HostConflictError (a lease with no HostID is ours, as upstream has it);
//  2. else the hinted subnet from the previous subnet file, if free;
//  3. else a random free subnet in [SubnetMin, SubnetMax] (and the same for
//     IPv6 when enabled).
//
// Creation is a transaction that succeeds only if no key holds the subnet,
// so concurrent hosts never get the same one; a lost race re-reads and
// tries again, up to acquireAttempts times (then ErrLostRaces). Keys that
// are not leases hold their subnet by the rule of subnet.Malformed, the
// same rule as the transaction's guard, so they never make it fail; each
// is logged once per Acquire, with the command that deletes it.
func (m *Manager) Acquire(ctx context.Context, cfg *subnet.Config, attrs subnet.LeaseAttrs, hint subnet.Hint) (subnet.Lease, error) {
	// After a lost race (someone else changed the subnet table between our
	// read and our write) back off a little, fully jittered so that racers
	// spread out: up to 20 ms after the first race, 40 ms after the second,
	// and so on. Growing linearly, not doubling, keeps a storm of hosts
	// starting at once short (make bench's acquisition storm).
	retry := backoff.Linear(10*time.Millisecond, time.Second).WithJitter(1)
	bad := newMalformedLog(m.log, "acquiring a lease")
	races := 0
	for range acquireAttempts {
		l, err := m.tryAcquire(ctx, cfg, attrs, hint, bad)
		if err == nil {
			return l, nil
		}
		if errors.Is(err, errLostRace) {
			races++
			err = retry.Wait(ctx)
		}
		if err == nil {
			continue
		}
		// The deadline may strike in a request as well as in the wait:
		// after lost races, that is still contention, not an outage.
		if races > 0 && ctx.Err() != nil {
			return subnet.Lease{}, fmt.Errorf("%w %d times before the deadline (%w)", ErrLostRaces, races, ctx.Err())
		}
		return subnet.Lease{}, err
	}
	return subnet.Lease{}, fmt.Errorf("%w %d times in a row: other writers keep changing %s (many hosts starting at once, "+
		"or something rewriting keys there: etcdctl watch --prefix %s)", ErrLostRaces, acquireAttempts, m.subnetsDir(), m.subnetsDir())
}

var errLostRace = errors.New("another host changed the subnet table concurrently")

func (m *Manager) tryAcquire(ctx context.Context, cfg *subnet.Config, attrs subnet.LeaseAttrs, hint subnet.Hint, bad *malformedLog) (subnet.Lease, error) {
	t, err := m.ListAll(ctx, false)
	if err != nil {
		return subnet.Lease{}, err
	}
	for _, b := range t.Malformed {
		if v4, v6 := b.Holds(cfg); v4.IsValid() || v6.IsValid() {
			bad.report(b, holdsString(v4, v6))
		}
	}
	// Another host's lease under our PublicIP stops us before we touch
	// anything: neither it nor a lease of ours is changed.
	for _, l := range t.Leases {
		if l.Attrs.PublicIP == attrs.PublicIP {
			if err := m.checkOwner(l, attrs); err != nil {
				return subnet.Lease{}, err
			}
		}
	}

	// 1. A lease that is already ours.
	for _, l := range t.Leases {
		if l.Attrs.PublicIP != attrs.PublicIP {
			continue
		}
		if cfg.LeaseFits(l) {
			return m.takeOver(ctx, l, attrs)
		}
		if l.Reserved() {
			m.log.Warn("ignoring reservation for this host: it does not fit the network config; fix or delete the key",
				"key", m.LeaseKey(l), "network", cfg.Network)
			continue
		}
		m.log.Info("releasing our old lease: it does not fit the network config", "subnet", l.String(), "network", cfg.Network)
		if _, err := m.cli.Delete(ctx, m.LeaseKey(l)); err != nil {
			return subnet.Lease{}, fmt.Errorf("deleting old lease %s: %w", l.String(), err)
		}
	}

	// 2. The subnets from our previous subnet file, each family on its own
	// (turning IPv6 on must not renumber the IPv4 subnet); 3. else random.
	want := subnet.Lease{Attrs: attrs}
	if want.Subnet, want.IPv6Subnet, err = cfg.PickSubnets(t.Leases, t.Malformed, attrs.PublicIP, hint); err != nil {
		return subnet.Lease{}, err
	}
	return m.create(ctx, want, t.Revision)
}

// holdsString is the subnets a malformed key holds, for its log line.
func holdsString(v4, v6 netip.Prefix) string {
	switch {
	case v4.IsValid() && v6.IsValid():
		return v4.String() + "+" + v6.String()
	case v6.IsValid():
		return v6.String()
	default:
		return v4.String()
	}
}

// create writes a new lease if nobody holds its subnets. The IPv4 subnet is
// guarded by "no key starts with <v4>-<len>". IPv6 is the second part of the
// key, which etcd cannot match by prefix, so with IPv6 the whole subnet
// table must be unchanged since our read: safe, at the price of more
// retries when many dual-stack hosts start at once.
func (m *Manager) create(ctx context.Context, l subnet.Lease, readRev int64) (subnet.Lease, error) {
	value, err := json.Marshal(l.Attrs)
	if err != nil {
		return subnet.Lease{}, err
	}
	grant, err := m.cli.Grant(ctx, int64(m.ttl/time.Second))
	if err != nil {
		return subnet.Lease{}, fmt.Errorf("granting an etcd lease: %w", err)
	}
	key := m.LeaseKey(l)
	conds := []clientv3.Cmp{clientv3.Compare(clientv3.Version(m.subnetsDir()+subnet.SubnetKey(l.Subnet, netip.Prefix{})), "=", 0).WithPrefix()}
	if l.IPv6Subnet.IsValid() {
		conds = append(conds, clientv3.Compare(clientv3.ModRevision(m.subnetsDir()), "<", readRev+1).WithPrefix())
	}
	resp, err := m.cli.Txn(ctx).If(conds...).Then(clientv3.OpPut(key, string(value), clientv3.WithLease(grant.ID))).Commit()
	if err != nil {
		m.revoke(grant.ID)
		return subnet.Lease{}, fmt.Errorf("creating lease %s: %w", key, err)
	}
	if !resp.Succeeded {
		m.revoke(grant.ID)
		return subnet.Lease{}, errLostRace
	}
	l.EtcdLeaseID = int64(grant.ID)
	l.ModRevision = resp.Header.Revision
	l.Expiration = time.Now().Add(m.ttl)
	m.log.Info("acquired new lease", "subnet", l.String(), "public_ip", l.Attrs.PublicIP, "expires", l.Expiration.Format(time.RFC3339))
	return l, nil
}

// takeOver reuses an existing lease of ours, rewriting its attributes (the
// backend data may have changed) and, unless it is a reservation, its TTL.
func (m *Manager) takeOver(ctx context.Context, l subnet.Lease, attrs subnet.LeaseAttrs) (subnet.Lease, error) {
	value, err := json.Marshal(attrs)
	if err != nil {
		return subnet.Lease{}, err
	}
	key := m.LeaseKey(l)
	guard := clientv3.Compare(clientv3.ModRevision(key), "=", l.ModRevision)
	if l.Reserved() {
		resp, err := m.cli.Txn(ctx).If(guard).Then(clientv3.OpPut(key, string(value))).Commit()
		if err != nil {
			return subnet.Lease{}, fmt.Errorf("updating reservation %s: %w", key, err)
		}
		if !resp.Succeeded {
			return subnet.Lease{}, errLostRace
		}
		bound := l.Attrs.HostID == "" && attrs.HostID != ""
		l.Attrs, l.ModRevision = attrs, resp.Header.Revision
		m.log.Info("using the subnet reserved for this host", "subnet", l.String(), "public_ip", attrs.PublicIP, "key", key,
			"host_id", attrs.HostID, "bound_now", bound)
		return l, nil
	}
	grant, err := m.cli.Grant(ctx, int64(m.ttl/time.Second))
	if err != nil {
		return subnet.Lease{}, fmt.Errorf("granting an etcd lease: %w", err)
	}
	resp, err := m.cli.Txn(ctx).If(guard).Then(clientv3.OpPut(key, string(value), clientv3.WithLease(grant.ID))).Commit()
	if err != nil || !resp.Succeeded {
		m.revoke(grant.ID)
		if err != nil {
			return subnet.Lease{}, fmt.Errorf("renewing lease %s: %w", key, err)
		}
		return subnet.Lease{}, errLostRace
	}
	// The old etcd lease now holds no key; drop it rather than let it linger.
	m.revoke(clientv3.LeaseID(l.EtcdLeaseID))
	msg := "reusing our existing lease"
	if l.Attrs.HostID != attrs.HostID {
		// Upstream's rule for a lease that names no host: the PublicIP is
		// the host.
		msg = "taking over the lease of this public IP: it names no host identity (written by upstream flanneld, an older flanneld or by hand)"
	}
	l.Attrs, l.EtcdLeaseID, l.ModRevision = attrs, int64(grant.ID), resp.Header.Revision
	l.Expiration = time.Now().Add(m.ttl)
	m.log.Info(msg, "subnet", l.String(), "public_ip", attrs.PublicIP, "host_id", attrs.HostID, "expires", l.Expiration.Format(time.RFC3339))
	return l, nil
}

func (m *Manager) revoke(id clientv3.LeaseID) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := m.cli.Revoke(ctx, id); err != nil {
		m.log.Debug("revoking unused etcd lease", "id", fmt.Sprintf("%x", int64(id)), "error", err)
	}
}

// Renew resets the TTL of our lease and checks that our key still holds our
// attributes. It returns ErrLeaseLost when the key or its etcd lease is
// gone (deleted by an operator, or expired while we could not reach etcd).
// Reservations need no renewal.
func (m *Manager) Renew(ctx context.Context, l subnet.Lease) (subnet.Lease, error) {
	key := m.LeaseKey(l)
	resp, err := m.cli.Get(ctx, key)
	if err != nil {
		return l, fmt.Errorf("reading our lease %s: %w", key, err)
	}
	if len(resp.Kvs) == 0 {
		return l, fmt.Errorf("%w: key %s is gone", ErrLeaseLost, key)
	}
	cur, bad := m.classify(resp.Kvs[0])
	if bad != nil {
		return l, fmt.Errorf("%w: key %s now holds a value that is not a lease (%v)", ErrLeaseLost, key, bad.Err)
	}
	if !cur.Attrs.Equal(l.Attrs) || cur.EtcdLeaseID != l.EtcdLeaseID {
		return l, fmt.Errorf("%w: key %s was changed by someone else", ErrLeaseLost, key)
	}
	if l.Reserved() {
		return cur, nil
	}
	ka, err := m.cli.KeepAliveOnce(ctx, clientv3.LeaseID(l.EtcdLeaseID))
	if err != nil {
		if errors.Is(err, rpctypes.ErrLeaseNotFound) {
			return l, fmt.Errorf("%w: etcd lease of %s expired", ErrLeaseLost, key)
		}
		return l, fmt.Errorf("renewing lease %s: %w", key, err)
	}
	cur.Expiration = time.Now().Add(time.Duration(ka.TTL) * time.Second)
	return cur, nil
}
