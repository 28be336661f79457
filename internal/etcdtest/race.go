package etcdtest

import (
	"context"
	"fmt"
	"sync/atomic"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Interfere makes every transaction cli commits from now on lose a race
// it is guarded against: just before the commit, another write puts key
// (a new value each time), as a concurrent writer would between the
// caller's read and its write. Reads and plain writes are untouched. It
// returns the number of transactions interfered with so far.
func Interfere(cli *clientv3.Client, key string) func() int64 {
	kv := &interferingKV{KV: cli.KV, key: key}
	cli.KV = kv
	return kv.n.Load
}

type interferingKV struct {
	clientv3.KV
	key string
	n   atomic.Int64
}

func (k *interferingKV) Txn(ctx context.Context) clientv3.Txn {
	return &interferingTxn{Txn: k.KV.Txn(ctx), kv: k, ctx: ctx}
}

type interferingTxn struct {
	clientv3.Txn
	kv  *interferingKV
	ctx context.Context
}

// If, Then and Else return the wrapper, so that Commit stays ours.
func (t *interferingTxn) If(cs ...clientv3.Cmp) clientv3.Txn { t.Txn = t.Txn.If(cs...); return t }
func (t *interferingTxn) Then(ops ...clientv3.Op) clientv3.Txn {
	t.Txn = t.Txn.Then(ops...)
	return t
}
func (t *interferingTxn) Else(ops ...clientv3.Op) clientv3.Txn {
	t.Txn = t.Txn.Else(ops...)
	return t
}

func (t *interferingTxn) Commit() (*clientv3.TxnResponse, error) {
	n := t.kv.n.Add(1)
	if _, err := t.kv.KV.Put(t.ctx, t.kv.key, fmt.Sprint(n)); err != nil {
		return nil, err
	}
	return t.Txn.Commit()
}
