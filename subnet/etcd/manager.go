package etcd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flanneld-go/flannel/internal/backoff"
	"github.com/flanneld-go/flannel/subnet"
)

// DefaultPrefix is upstream flannel's etcd prefix.
const DefaultPrefix = "/coreos.com/network"

// DefaultTTL is the life of a subnet lease, as upstream.
const DefaultTTL = 24 * time.Hour

// ErrNoConfig means the config key does not exist yet.
var ErrNoConfig = errors.New("network config not found")

// ErrInvalidConfig means the config key holds a document that does not
// validate; waiting will not help.
var ErrInvalidConfig = errors.New("invalid net-conf")

// ErrLeaseLost means our lease is gone from etcd (deleted by an operator,
// or expired); the caller acquires again.
var ErrLeaseLost = errors.New("lease lost")

// Manager reads the net-conf and leases subnets under one prefix, in the
// key layout of the package doc. It is safe for concurrent use.
type Manager struct {
	cli    *clientv3.Client
	prefix string
	ttl    time.Duration
	log    *slog.Logger

	watchRestarts       atomic.Uint64
	configWatchRestarts atomic.Uint64
}

// WatchRestarts counts how often the lease watch was re-established.
func (m *Manager) WatchRestarts() uint64 { return m.watchRestarts.Load() }

// Ping checks that etcd answers, with a cheap read of the config key.
func (m *Manager) Ping(ctx context.Context) error {
	_, err := m.cli.Get(ctx, m.ConfigKey(), clientv3.WithCountOnly())
	return err
}

// NewManager returns a manager for the keys under prefix. A zero ttl means
// DefaultTTL.
func NewManager(cli *clientv3.Client, prefix string, ttl time.Duration, log *slog.Logger) *Manager {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	if log == nil {
		log = slog.Default()
	}
	return &Manager{cli: cli, prefix: strings.TrimSuffix(prefix, "/"), ttl: ttl, log: log}
}

// ConfigKey is where the net-conf lives.
func (m *Manager) ConfigKey() string { return m.prefix + "/config" }

func (m *Manager) subnetsDir() string { return m.prefix + "/subnets/" }

// LeaseKey is the full etcd key of a lease.
func (m *Manager) LeaseKey(l subnet.Lease) string { return m.subnetsDir() + l.Key() }

// GetConfig reads and validates the net-conf once. It returns ErrNoConfig
// (wrapped) when the key does not exist.
func (m *Manager) GetConfig(ctx context.Context) (*subnet.Config, []string, error) {
	_, cfg, warnings, err := m.GetConfigRaw(ctx)
	return cfg, warnings, err
}

// GetConfigRaw is GetConfig that also returns the document as stored
// (also when it does not validate: ErrInvalidConfig), the baseline that
// WatchConfig compares later values with.
func (m *Manager) GetConfigRaw(ctx context.Context) ([]byte, *subnet.Config, []string, error) {
	resp, err := m.cli.Get(ctx, m.ConfigKey())
	if err != nil {
		return nil, nil, nil, fmt.Errorf("reading %s from etcd: %w", m.ConfigKey(), err)
	}
	if len(resp.Kvs) == 0 {
		return nil, nil, nil, fmt.Errorf("%w at %s", ErrNoConfig, m.ConfigKey())
	}
	raw := resp.Kvs[0].Value
	cfg, warnings, err := m.parseConfig(raw)
	return raw, cfg, warnings, err
}

// parseConfig validates a stored net-conf; the error names the key.
func (m *Manager) parseConfig(raw []byte) (*subnet.Config, []string, error) {
	cfg, warnings, err := subnet.ParseConfig(raw)
	if err != nil {
		return nil, warnings, fmt.Errorf("%w at %s: %w", ErrInvalidConfig, m.ConfigKey(), err)
	}
	return cfg, warnings, nil
}

// configReadTimeout bounds one read of the net-conf in WaitConfig: the etcd
// client waits for a ready connection, so without it a read during an
// outage would block silently until etcd is back.
const configReadTimeout = 5 * time.Second

// WaitConfig reads the net-conf, waiting while the key is missing or etcd
// is unreachable, with a log line every few seconds that names the key to
// create. An invalid config, and an etcd error that retrying cannot fix
// (authentication, permission, TLS), is returned as an error at once: the
// operator must see it.
func (m *Manager) WaitConfig(ctx context.Context) (*subnet.Config, error) {
	_, cfg, err := m.WaitConfigRaw(ctx)
	return cfg, err
}

// WaitConfigRaw is WaitConfig that also returns the document as stored,
// the baseline to give WatchConfig.
func (m *Manager) WaitConfigRaw(ctx context.Context) ([]byte, *subnet.Config, error) {
	var lastLog time.Time
	retry := backoff.New(time.Second, time.Second)
	for {
		rctx, cancel := context.WithTimeout(ctx, configReadTimeout)
		raw, cfg, warnings, err := m.GetConfigRaw(rctx)
		cancel()
		if err != nil && ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("etcd did not answer a read of %s within %v: %w", m.ConfigKey(), configReadTimeout, err)
		}
		for _, w := range warnings {
			m.log.Warn("net-conf warning", "key", m.ConfigKey(), "warning", w)
		}
		if err == nil {
			return raw, cfg, nil
		}
		if errors.Is(err, ErrInvalidConfig) || !errors.Is(err, ErrNoConfig) && !isTransient(err) {
			return nil, nil, err
		}
		if time.Since(lastLog) >= 5*time.Second {
			if errors.Is(err, ErrNoConfig) {
				m.log.Warn("waiting for the network config: create it with etcdctl put", "key", m.ConfigKey(),
					"example", `etcdctl put `+m.ConfigKey()+` '{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}'`)
			} else {
				m.log.Warn("waiting for etcd to read the network config", "key", m.ConfigKey(), "error", err)
			}
			lastLog = time.Now()
		}
		if err := retry.Wait(ctx); err != nil {
			return nil, nil, err
		}
	}
}

// List returns every lease and the revision of the read; keys that are not
// leases are left out (ListAll has them).
func (m *Manager) List(ctx context.Context, expiry bool) ([]subnet.Lease, int64, error) {
	t, err := m.ListAll(ctx, expiry)
	return t.Leases, t.Revision, err
}

// ListAll reads every key under subnets/: the leases, and the malformed
// keys with why each is not a lease (callers report them; see
// malformedLog). With expiry, the remaining TTL of each etcd lease is
// looked up (one request per lease, for the leases command; the daemon
// does not need it).
func (m *Manager) ListAll(ctx context.Context, expiry bool) (Table, error) {
	var t Table
	rev, err := m.eachPage(ctx, func(kvs []*mvccpb.KeyValue, total int64) {
		if t.Leases == nil {
			t.Leases = make([]subnet.Lease, 0, total)
		}
		for _, kv := range kvs {
			l, bad := m.classify(kv)
			if bad != nil {
				t.Malformed = append(t.Malformed, *bad)
				continue
			}
			if expiry && !l.Reserved() {
				ttl, err := m.cli.TimeToLive(ctx, clientv3.LeaseID(l.EtcdLeaseID))
				if err == nil && ttl.TTL > 0 {
					l.Expiration = time.Now().Add(time.Duration(ttl.TTL) * time.Second).Truncate(time.Second)
				}
			}
			t.Leases = append(t.Leases, l)
		}
	})
	if err != nil {
		return Table{}, fmt.Errorf("listing %s in etcd: %w", m.subnetsDir(), err)
	}
	if t.Leases == nil {
		t.Leases = []subnet.Lease{}
	}
	t.Revision = rev
	return t, nil
}

// listPage is how many keys one range request of a list reads: 10,000
// leases are ten requests at one revision rather than one response of
// several MiB that etcd must build in memory at once.
var listPage int64 = 1000

// eachPage reads every key under subnets/ in pages, all at the revision
// of the first page, which it returns, and hands each page to f with the
// number of keys in the whole range; a page is decoded and dropped before
// the next is read, so a list of 10,000 leases never holds the raw
// responses of all of them. A compaction of that revision between two
// pages fails the list (the callers retry).
func (m *Manager) eachPage(ctx context.Context, f func(kvs []*mvccpb.KeyValue, total int64)) (int64, error) {
	dir := m.subnetsDir()
	end := clientv3.GetPrefixRangeEnd(dir)
	key, rev := dir, int64(0)
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(listPage)}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := m.cli.Get(ctx, key, opts...)
		if err != nil {
			return 0, err
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		f(resp.Kvs, resp.Count)
		if !resp.More || len(resp.Kvs) == 0 {
			return rev, nil
		}
		key = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}
