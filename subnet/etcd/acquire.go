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

// Acquire gets this host a lease for attrs (PublicIP identifies the host):
//  1. a lease already held under our PublicIP is reused if it fits cfg
//     (a reservation is used as is; a non-fitting lease is deleted);
//  2. else the hinted subnet from the previous subnet file, if free;
//  3. else a random free subnet in [SubnetMin, SubnetMax] (and the same for
//     IPv6 when enabled).
//
// Creation is a transaction that succeeds only if nobody holds the subnet,
// so concurrent hosts never get the same one; a lost race re-reads and
// tries again.
func (m *Manager) Acquire(ctx context.Context, cfg *subnet.Config, attrs subnet.LeaseAttrs, hint subnet.Hint) (subnet.Lease, error) {
	const attempts = 50
	// After a lost race (someone else changed the subnet table between our
	// read and our write) back off a little, fully jittered so that racers
	// spread out: up to 20 ms after the first race, 40 ms after the second,
	// and so on. Growing linearly, not doubling, keeps a storm of hosts
	// starting at once short (make bench's acquisition storm).
	retry := backoff.Linear(10*time.Millisecond, time.Second).WithJitter(1)
	var lastErr error
	for range attempts {
		l, err := m.tryAcquire(ctx, cfg, attrs, hint)
		if err == nil {
			return l, nil
		}
		if !errors.Is(err, errLostRace) {
			return subnet.Lease{}, err
		}
		lastErr = err
		if err := retry.Wait(ctx); err != nil {
			return subnet.Lease{}, err
		}
	}
	return subnet.Lease{}, fmt.Errorf("acquiring a subnet: gave up after %d attempts: %w", attempts, lastErr)
}

var errLostRace = errors.New("another host changed the subnet table concurrently")

func (m *Manager) tryAcquire(ctx context.Context, cfg *subnet.Config, attrs subnet.LeaseAttrs, hint subnet.Hint) (subnet.Lease, error) {
	leases, rev, err := m.List(ctx, false)
	if err != nil {
		return subnet.Lease{}, err
	}

	// 1. A lease that is already ours.
	for _, l := range leases {
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
	if want.Subnet, want.IPv6Subnet, err = cfg.PickSubnets(leases, attrs.PublicIP, hint); err != nil {
		return subnet.Lease{}, err
	}
	return m.create(ctx, want, rev)
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
		l.Attrs, l.ModRevision = attrs, resp.Header.Revision
		m.log.Info("using the subnet reserved for this host", "subnet", l.String(), "public_ip", attrs.PublicIP, "key", key)
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
	l.Attrs, l.EtcdLeaseID, l.ModRevision = attrs, int64(grant.ID), resp.Header.Revision
	l.Expiration = time.Now().Add(m.ttl)
	m.log.Info("reusing our existing lease", "subnet", l.String(), "public_ip", attrs.PublicIP, "expires", l.Expiration.Format(time.RFC3339))
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
	kv := resp.Kvs[0]
	cur, err := decodeKV(kv)
	if err != nil || !cur.Attrs.Equal(l.Attrs) || cur.EtcdLeaseID != l.EtcdLeaseID {
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
