package subnet

import (
	"context"
	crand "crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"math/rand/v2"
	"net/netip"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// ErrNoFreeSubnet means every subnet in the range is taken.
var ErrNoFreeSubnet = errors.New("no free subnet")

// Hint is the subnet this host held before (from its subnet file), tried
// after a lease under our PublicIP and before a random pick.
type Hint struct {
	Subnet     netip.Prefix
	IPv6Subnet netip.Prefix
}

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
func (m *Manager) Acquire(ctx context.Context, cfg *Config, attrs LeaseAttrs, hint Hint) (Lease, error) {
	const attempts = 50
	var lastErr error
	for i := 0; i < attempts; i++ {
		l, err := m.tryAcquire(ctx, cfg, attrs, hint)
		if err == nil {
			return l, nil
		}
		if !errors.Is(err, errLostRace) {
			return Lease{}, err
		}
		lastErr = err
		// Someone else changed the subnet table between our read and our
		// write: back off a little, with jitter so racers spread out.
		select {
		case <-ctx.Done():
			return Lease{}, ctx.Err()
		case <-time.After(time.Duration(rand.IntN(20*(i+1))) * time.Millisecond):
		}
	}
	return Lease{}, fmt.Errorf("acquiring a subnet: gave up after %d attempts: %w", attempts, lastErr)
}

var errLostRace = errors.New("another host changed the subnet table concurrently")

func (m *Manager) tryAcquire(ctx context.Context, cfg *Config, attrs LeaseAttrs, hint Hint) (Lease, error) {
	leases, rev, err := m.List(ctx, false)
	if err != nil {
		return Lease{}, err
	}

	// 1. A lease that is already ours.
	for _, l := range leases {
		if l.Attrs.PublicIP != attrs.PublicIP {
			continue
		}
		if fitsConfig(cfg, l) {
			return m.takeOver(ctx, l, attrs)
		}
		if l.Reserved() {
			m.log.Warn("ignoring reservation for this host: it does not fit the network config; fix or delete the key",
				"key", m.LeaseKey(l), "network", cfg.Network)
			continue
		}
		m.log.Info("releasing our old lease: it does not fit the network config", "subnet", l.String(), "network", cfg.Network)
		if _, err := m.cli.Delete(ctx, m.LeaseKey(l)); err != nil {
			return Lease{}, fmt.Errorf("deleting old lease %s: %w", l.String(), err)
		}
	}

	taken := newTakenSet(leases, attrs.PublicIP)

	// 2. The subnets from our previous subnet file, each family on its own
	// (turning IPv6 on must not renumber the IPv4 subnet); 3. else random.
	want := Lease{Attrs: attrs}
	if cfg.SubnetFits(hint.Subnet) && !taken.v4[hint.Subnet] {
		want.Subnet = hint.Subnet
	} else if want.Subnet, err = pickFree(cfg.Network, cfg.SubnetLen, cfg.SubnetMin, cfg.SubnetMax, taken.v4, "", taken); err != nil {
		return Lease{}, err
	}
	if cfg.EnableIPv6 {
		if cfg.SubnetFits(hint.IPv6Subnet) && !taken.v6[hint.IPv6Subnet] {
			want.IPv6Subnet = hint.IPv6Subnet
		} else if want.IPv6Subnet, err = pickFree(cfg.IPv6Network, cfg.IPv6SubnetLen, cfg.IPv6SubnetMin, cfg.IPv6SubnetMax, taken.v6, "IPv6 ", taken); err != nil {
			return Lease{}, err
		}
	}
	return m.create(ctx, want, rev)
}

// fitsConfig reports whether an existing lease can serve cfg as it is.
func fitsConfig(cfg *Config, l Lease) bool {
	if !cfg.SubnetFits(l.Subnet) {
		return false
	}
	if cfg.EnableIPv6 {
		return cfg.SubnetFits(l.IPv6Subnet)
	}
	return !l.IPv6Subnet.IsValid()
}

type takenSet struct {
	v4, v6             map[netip.Prefix]bool
	leased, reserved   int
	leased6, reserved6 int
}

// newTakenSet collects the subnets held by others. Leases under our own
// PublicIP were handled (reused or deleted) before this is called.
func newTakenSet(leases []Lease, self netip.Addr) takenSet {
	t := takenSet{v4: map[netip.Prefix]bool{}, v6: map[netip.Prefix]bool{}}
	for _, l := range leases {
		if l.Attrs.PublicIP == self && !l.Reserved() {
			continue
		}
		t.v4[l.Subnet] = true
		if l.IPv6Subnet.IsValid() {
			t.v6[l.IPv6Subnet] = true
		}
	}
	for _, l := range leases {
		if l.Reserved() {
			t.reserved++
		} else {
			t.leased++
		}
	}
	return t
}

// pickFree chooses a free subnet of length l in [lo, hi] uniformly at
// random when the range is small, else from a random starting point,
// skipping taken ones (at most len(taken)+1 steps).
func pickFree(n netip.Prefix, l int, lo, hi netip.Addr, taken map[netip.Prefix]bool, family string, ts takenSet) (netip.Prefix, error) {
	count := subnetIndex(lo, hi, l)
	count.Add(count, big.NewInt(1))
	exhausted := func() error {
		return fmt.Errorf("%w in %s%s (SubnetLen %d): %d leased, %d reserved", ErrNoFreeSubnet, family, n, l, ts.leased, ts.reserved)
	}
	if count.IsInt64() && count.Int64() <= 4096 {
		var free []netip.Prefix
		for i := int64(0); i < count.Int64(); i++ {
			sn := nthSubnet(lo, l, big.NewInt(i))
			if !taken[sn] {
				free = append(free, sn)
			}
		}
		if len(free) == 0 {
			return netip.Prefix{}, exhausted()
		}
		return free[rand.IntN(len(free))], nil
	}
	// Large range: start at a random index below count.
	start, err := crand.Int(crand.Reader, count)
	if err != nil {
		return netip.Prefix{}, err
	}
	for i := 0; i <= len(taken); i++ {
		idx := new(big.Int).Add(start, big.NewInt(int64(i)))
		idx.Mod(idx, count)
		sn := nthSubnet(lo, l, idx)
		if !taken[sn] {
			return sn, nil
		}
	}
	return netip.Prefix{}, exhausted()
}

// create writes a new lease if nobody holds its subnets. The IPv4 subnet is
// guarded by "no key starts with <v4>-<len>". IPv6 is the second part of the
// key, which etcd cannot match by prefix, so with IPv6 the whole subnet
// table must be unchanged since our read: safe, at the price of more
// retries when many dual-stack hosts start at once.
func (m *Manager) create(ctx context.Context, l Lease, readRev int64) (Lease, error) {
	value, err := json.Marshal(l.Attrs)
	if err != nil {
		return Lease{}, err
	}
	grant, err := m.cli.Grant(ctx, int64(m.ttl/time.Second))
	if err != nil {
		return Lease{}, fmt.Errorf("granting an etcd lease: %w", err)
	}
	key := m.LeaseKey(l)
	conds := []clientv3.Cmp{clientv3.Compare(clientv3.Version(m.subnetsDir()+SubnetKey(l.Subnet, netip.Prefix{})), "=", 0).WithPrefix()}
	if l.IPv6Subnet.IsValid() {
		conds = append(conds, clientv3.Compare(clientv3.ModRevision(m.subnetsDir()), "<", readRev+1).WithPrefix())
	}
	resp, err := m.cli.Txn(ctx).If(conds...).Then(clientv3.OpPut(key, string(value), clientv3.WithLease(grant.ID))).Commit()
	if err != nil {
		m.revoke(grant.ID)
		return Lease{}, fmt.Errorf("creating lease %s: %w", key, err)
	}
	if !resp.Succeeded {
		m.revoke(grant.ID)
		return Lease{}, errLostRace
	}
	l.etcdLease = int64(grant.ID)
	l.revision = resp.Header.Revision
	l.Expiration = time.Now().Add(m.ttl)
	m.log.Info("acquired new lease", "subnet", l.String(), "public_ip", l.Attrs.PublicIP, "expires", l.Expiration.Format(time.RFC3339))
	return l, nil
}

// takeOver reuses an existing lease of ours, rewriting its attributes (the
// backend data may have changed) and, unless it is a reservation, its TTL.
func (m *Manager) takeOver(ctx context.Context, l Lease, attrs LeaseAttrs) (Lease, error) {
	value, err := json.Marshal(attrs)
	if err != nil {
		return Lease{}, err
	}
	key := m.LeaseKey(l)
	guard := clientv3.Compare(clientv3.ModRevision(key), "=", l.revision)
	if l.Reserved() {
		resp, err := m.cli.Txn(ctx).If(guard).Then(clientv3.OpPut(key, string(value))).Commit()
		if err != nil {
			return Lease{}, fmt.Errorf("updating reservation %s: %w", key, err)
		}
		if !resp.Succeeded {
			return Lease{}, errLostRace
		}
		l.Attrs, l.revision = attrs, resp.Header.Revision
		m.log.Info("using the subnet reserved for this host", "subnet", l.String(), "public_ip", attrs.PublicIP, "key", key)
		return l, nil
	}
	grant, err := m.cli.Grant(ctx, int64(m.ttl/time.Second))
	if err != nil {
		return Lease{}, fmt.Errorf("granting an etcd lease: %w", err)
	}
	resp, err := m.cli.Txn(ctx).If(guard).Then(clientv3.OpPut(key, string(value), clientv3.WithLease(grant.ID))).Commit()
	if err != nil || !resp.Succeeded {
		m.revoke(grant.ID)
		if err != nil {
			return Lease{}, fmt.Errorf("renewing lease %s: %w", key, err)
		}
		return Lease{}, errLostRace
	}
	// The old etcd lease now holds no key; drop it rather than let it linger.
	m.revoke(clientv3.LeaseID(l.etcdLease))
	l.Attrs, l.etcdLease, l.revision = attrs, int64(grant.ID), resp.Header.Revision
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
func (m *Manager) Renew(ctx context.Context, l Lease) (Lease, error) {
	key := m.LeaseKey(l)
	resp, err := m.cli.Get(ctx, key)
	if err != nil {
		return l, fmt.Errorf("reading our lease %s: %w", key, err)
	}
	if len(resp.Kvs) == 0 {
		return l, fmt.Errorf("%w: key %s is gone", ErrLeaseLost, key)
	}
	kv := resp.Kvs[0]
	cur, err := m.decode(key, kv.Value, kv.Lease, kv.ModRevision)
	if err != nil || !cur.Attrs.Equal(l.Attrs) || cur.etcdLease != l.etcdLease {
		return l, fmt.Errorf("%w: key %s was changed by someone else", ErrLeaseLost, key)
	}
	if l.Reserved() {
		return cur, nil
	}
	ka, err := m.cli.KeepAliveOnce(ctx, clientv3.LeaseID(l.etcdLease))
	if err != nil {
		if errors.Is(err, rpctypes.ErrLeaseNotFound) {
			return l, fmt.Errorf("%w: etcd lease of %s expired", ErrLeaseLost, key)
		}
		return l, fmt.Errorf("renewing lease %s: %w", key, err)
	}
	cur.Expiration = time.Now().Add(time.Duration(ka.TTL) * time.Second)
	return cur, nil
}
