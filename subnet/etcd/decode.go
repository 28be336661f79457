package etcd

import (
	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/flanneld-go/flannel/subnet"
)

// decodeKV makes a lease of one etcd key-value, with the etcd lease and
// the revisions etcd reports for it.
func decodeKV(kv *mvccpb.KeyValue) (subnet.Lease, error) {
	l, err := subnet.DecodeLease(string(kv.Key), kv.Value, kv.Lease, kv.ModRevision)
	if err != nil {
		return l, err
	}
	l.CreateRevision = kv.CreateRevision
	return l, nil
}
