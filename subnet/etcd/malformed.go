package etcd

import (
	"fmt"
	"log/slog"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/flanneld-go/flannel/subnet"
)

// Table is one read of <prefix>/subnets/: the leases, the keys that are
// not leases (see subnet.Malformed for the rule), and the revision of the
// read.
type Table struct {
	Leases    []subnet.Lease
	Malformed []subnet.Malformed
	Revision  int64
}

// classify makes a lease of one key-value under subnets/, or says why it
// is none. A lease's name is one canonical SubnetKey right under subnets/:
// a nested key ("subnets/x/10.244.3.0-24") is not one, since the creation
// guard and the watch know keys by their whole name.
func (m *Manager) classify(kv *mvccpb.KeyValue) (subnet.Lease, *subnet.Malformed) {
	key := string(kv.Key)
	name := strings.TrimPrefix(key, m.subnetsDir())
	bad := func(err error) (subnet.Lease, *subnet.Malformed) {
		return subnet.Lease{}, &subnet.Malformed{Key: key, Name: name, Err: err, ModRevision: kv.ModRevision}
	}
	if strings.Contains(name, "/") {
		return bad(fmt.Errorf("nested key: a lease key has no '/' after %s", m.subnetsDir()))
	}
	l, err := decodeKV(kv)
	if err != nil {
		return bad(err)
	}
	return l, nil
}

// malformedLog reports the malformed keys one activity (acquiring a lease,
// watching leases) meets: each key once per value (a new mod revision is a
// new value), not at every read. It is not safe for concurrent use.
type malformedLog struct {
	log      *slog.Logger
	activity string
	seen     map[string]int64
}

func newMalformedLog(log *slog.Logger, activity string) *malformedLog {
	return &malformedLog{log: log, activity: activity, seen: map[string]int64{}}
}

// report logs bad unless it was logged with this value already. holds is
// the subnet the key keeps from being leased ("" when none or unknown).
func (r *malformedLog) report(bad subnet.Malformed, holds string) {
	if rev, ok := r.seen[bad.Key]; ok && rev == bad.ModRevision {
		return
	}
	r.seen[bad.Key] = bad.ModRevision
	attrs := []any{"activity", r.activity, "key", bad.Key, "error", bad.Err}
	if holds != "" {
		attrs = append(attrs, "holds", holds)
	}
	r.log.Warn("malformed key in etcd: not a lease; delete it", append(attrs, "fix", delHint(bad.Key))...)
}

// forget drops a deleted key, so that a new malformed value at it is
// reported again.
func (r *malformedLog) forget(key string) { delete(r.seen, key) }
