package etcd

import (
	"bytes"
	"context"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flanneld-go/flannel/internal/backoff"
	"github.com/flanneld-go/flannel/subnet"
)

// ConfigChange is a new value of the net-conf key, as WatchConfig sends it.
type ConfigChange struct {
	// Raw is the document as stored now; nil when Deleted.
	Raw []byte
	// Config is Raw parsed and validated (subnet.ParseConfig; backend
	// options are the backend's to check); nil when Err or Deleted.
	Config   *subnet.Config
	Warnings []string
	// Err is why Raw does not validate; it wraps ErrInvalidConfig and
	// names the key, as GetConfig's.
	Err error
	// Deleted is set when the key is gone.
	Deleted bool
	// Revision is the etcd revision that made the change (after a
	// re-read, the key's mod revision, or the read's when it is gone).
	Revision int64
}

// configState is what the config key holds: absent, or a value.
type configState struct {
	present bool
	raw     []byte
}

func (s configState) equal(o configState) bool {
	return s.present == o.present && bytes.Equal(s.raw, o.raw)
}

// WatchConfig sends a ConfigChange to out each time the value of the
// net-conf key changes, until ctx is done; then it closes out and returns
// nil. from is the value the caller runs with (WaitConfigRaw's; nil when
// it saw no key): a change made between the caller's read and the start of
// the watch is reported, and a put that leaves the bytes as they were is
// not (whatever it means, the daemon runs with it already).
//
// It reads the key, reports it if it differs from from, and watches from
// the read's revision + 1. Changes that arrive in one watch response are
// folded into the last of them: the receiver wants the current value, not
// a history to replay. When the watch breaks (compaction, lost leader,
// etcd outage) it reads the key again, with backoff while etcd is down,
// and reports it only if it differs from the last value reported, so
// nothing is lost or sent twice across an outage. ConfigWatchRestarts
// counts the re-established watches.
func (m *Manager) WatchConfig(ctx context.Context, from []byte, out chan<- ConfigChange) error {
	defer close(out)
	last := configState{present: from != nil, raw: bytes.Clone(from)}
	outage := NewOutageLog(m.log, "watching the net-conf")
	retry := backoff.New(500*time.Millisecond, 30*time.Second).WithJitter(0.25)
	for {
		var resp *clientv3.GetResponse
		if !readRetrying(ctx, outage, retry, func() error {
			rctx, cancel := context.WithTimeout(ctx, configReadTimeout)
			defer cancel()
			var err error
			resp, err = m.cli.Get(rctx, m.ConfigKey())
			return err
		}) {
			return nil
		}
		cur, rev := configState{}, resp.Header.Revision
		if len(resp.Kvs) == 1 {
			cur, rev = configState{present: true, raw: resp.Kvs[0].Value}, resp.Kvs[0].ModRevision
		}
		if !cur.equal(last) {
			if !m.sendConfig(ctx, out, cur, rev) {
				return nil
			}
			last = cur
		}
		m.watchConfigFrom(ctx, resp.Header.Revision+1, &last, out)
		if ctx.Err() != nil {
			return nil
		}
		m.configWatchRestarts.Add(1)
	}
}

// ConfigWatchRestarts counts how often the net-conf watch was
// re-established.
func (m *Manager) ConfigWatchRestarts() uint64 { return m.configWatchRestarts.Load() }

// watchConfigFrom follows the config key from rev until the watch breaks
// or ctx ends, reporting values that differ from *last.
func (m *Manager) watchConfigFrom(ctx context.Context, rev int64, last *configState, out chan<- ConfigChange) {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	for resp := range m.cli.Watch(wctx, m.ConfigKey(), clientv3.WithRev(rev)) {
		if resp.CompactRevision != 0 {
			m.log.Warn("net-conf watch fell behind a compaction; re-reading the key", "key", m.ConfigKey(), "compact_revision", resp.CompactRevision)
			return
		}
		if err := resp.Err(); err != nil {
			m.log.Warn("net-conf watch broke; re-reading the key", "key", m.ConfigKey(), "error", err)
			return
		}
		if len(resp.Events) == 0 {
			continue
		}
		ev := resp.Events[len(resp.Events)-1]
		cur := configState{}
		if ev.Type == mvccpb.PUT {
			cur = configState{present: true, raw: ev.Kv.Value}
		}
		if cur.equal(*last) {
			continue
		}
		if !m.sendConfig(ctx, out, cur, ev.Kv.ModRevision) {
			return
		}
		*last = cur
	}
	if ctx.Err() == nil {
		m.log.Warn("net-conf watch closed; re-reading the key", "key", m.ConfigKey())
	}
}

// sendConfig parses s into a ConfigChange and sends it, unless ctx ends
// first.
func (m *Manager) sendConfig(ctx context.Context, out chan<- ConfigChange, s configState, rev int64) bool {
	c := ConfigChange{Deleted: !s.present, Revision: rev}
	if s.present {
		c.Raw = bytes.Clone(s.raw)
		c.Config, c.Warnings, c.Err = m.parseConfig(c.Raw)
	}
	select {
	case out <- c:
		return true
	case <-ctx.Done():
		return false
	}
}
