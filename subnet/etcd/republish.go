package etcd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flanneld-go/flannel/subnet"
)

// republishAttempts bounds the rewrites of one Republish. A second attempt
// is made only when the key still holds our lease at another revision
// than the caller knew (an identical rewrite by someone, or a lease whose
// ModRevision the caller never had), so two are enough in practice.
const republishAttempts = 3

// errStaleRevision is an attempt of Republish whose guard failed on a key
// that is still ours: the caller's ModRevision was stale.
var errStaleRevision = errors.New("our lease is at another mod revision")

// Republish rewrites the value of our lease l with attrs, in place: the
// same key and the same etcd lease, so that the TTL runs on and no new
// etcd lease is granted (a backend switch changes BackendType and
// BackendData, not who holds the subnet). A reservation is rewritten as a
// reservation, with no etcd lease.
//
// The write is one transaction guarded by the key's mod revision (l's)
// and its etcd lease (l's, 0 for a reservation), so it never overwrites
// what someone else wrote after our last read. When the guard fails, the
// same transaction reads the key: a key that still holds l's attributes
// under l's etcd lease is ours, as Renew judges it, and the write is tried
// again at its revision; anything else is ErrLeaseLost (key deleted,
// rewritten with other attributes, given another etcd lease, or turned
// into a value that is not a lease), and the key is left as it is.
//
// attrs must name the same host as l (PublicIP and HostID): taking a
// lease over is Acquire's work. The lease returned has attrs and the new
// ModRevision; its Expiration, EtcdLeaseID and CreateRevision are l's,
// since none of them changes.
func (m *Manager) Republish(ctx context.Context, l subnet.Lease, attrs subnet.LeaseAttrs) (subnet.Lease, error) {
	if attrs.PublicIP != l.Attrs.PublicIP || attrs.HostID != l.Attrs.HostID {
		return l, fmt.Errorf("republishing %s: the new attributes name another host (PublicIP %s, HostID %q; the lease has %s, %q)",
			l.String(), attrs.PublicIP, attrs.HostID, l.Attrs.PublicIP, l.Attrs.HostID)
	}
	value, err := json.Marshal(attrs)
	if err != nil {
		return l, err
	}
	for range republishAttempts {
		var cur int64
		cur, err = m.rewrite(ctx, l, attrs, value)
		if err == nil {
			old := l.Attrs
			l.Attrs, l.ModRevision = attrs, cur
			m.log.Info("republished our lease", "subnet", l.String(), "backend_type", attrs.BackendType,
				"old_backend_type", old.BackendType, "reserved", l.Reserved())
			return l, nil
		}
		if !errors.Is(err, errStaleRevision) {
			return l, err
		}
		l.ModRevision = cur
	}
	return l, fmt.Errorf("republishing %s: %w", l.String(), err)
}

// rewrite is one attempt of Republish. It returns the revision of the
// write; or, with errStaleRevision, the mod revision at which the key
// still holds our lease.
func (m *Manager) rewrite(ctx context.Context, l subnet.Lease, attrs subnet.LeaseAttrs, value []byte) (int64, error) {
	key := m.LeaseKey(l)
	guard := []clientv3.Cmp{
		clientv3.Compare(clientv3.ModRevision(key), "=", l.ModRevision),
		clientv3.Compare(clientv3.LeaseValue(key), "=", l.EtcdLeaseID),
	}
	// A put without a lease option detaches the key from its etcd lease:
	// name ours (none for a reservation), which the guard has checked.
	var opts []clientv3.OpOption
	if !l.Reserved() {
		opts = append(opts, clientv3.WithLease(clientv3.LeaseID(l.EtcdLeaseID)))
	}
	resp, err := m.cli.Txn(ctx).If(guard...).Then(clientv3.OpPut(key, string(value), opts...)).Else(clientv3.OpGet(key)).Commit()
	if err != nil {
		return 0, fmt.Errorf("republishing lease %s: %w", key, err)
	}
	if resp.Succeeded {
		return resp.Header.Revision, nil
	}
	var kvs []*mvccpb.KeyValue
	if len(resp.Responses) == 1 {
		if r := resp.Responses[0].GetResponseRange(); r != nil {
			kvs = r.Kvs
		}
	}
	return m.stillOurs(key, l, attrs, kvs)
}

// stillOurs judges what the key holds after a failed guard, by Renew's
// rule: our attributes under our etcd lease. The new attributes under
// our etcd lease are an earlier attempt that committed but whose answer
// was lost (a timeout): done, at the key's revision.
func (m *Manager) stillOurs(key string, l subnet.Lease, attrs subnet.LeaseAttrs, kvs []*mvccpb.KeyValue) (int64, error) {
	if len(kvs) == 0 {
		return 0, fmt.Errorf("%w: key %s is gone", ErrLeaseLost, key)
	}
	cur, bad := m.classify(kvs[0])
	if bad != nil {
		return 0, fmt.Errorf("%w: key %s now holds a value that is not a lease (%v)", ErrLeaseLost, key, bad.Err)
	}
	if cur.EtcdLeaseID == l.EtcdLeaseID && cur.Attrs.Equal(attrs) {
		return cur.ModRevision, nil
	}
	if !cur.Attrs.Equal(l.Attrs) || cur.EtcdLeaseID != l.EtcdLeaseID {
		return 0, fmt.Errorf("%w: key %s was changed by someone else", ErrLeaseLost, key)
	}
	return cur.ModRevision, errStaleRevision
}
