package etcd

import (
	"context"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flanneld-go/flannel/internal/backoff"
	"github.com/flanneld-go/flannel/subnet"
)

// WatchLeases sends batches of lease changes to out until ctx is done, and
// closes out when it returns. A signal on relist (may be nil) makes it drop
// the watch and list again, e.g. after an etcd outage. The first batch holds every current lease as
// EventAdded (it is sent even when empty, so the receiver knows the initial
// state is complete).
//
// It lists the subnets, then watches from the list's revision + 1. When the
// watch breaks (compaction, lost leader, etcd restart) it lists again and
// emits only the difference from what it had sent, so the receiver's view
// is always exact. Keys that are not leases (subnet.Malformed) are logged
// once per value, with the command that deletes them, and skipped.
func (m *Manager) WatchLeases(ctx context.Context, out chan<- []subnet.Event, relist <-chan struct{}) error {
	defer close(out)
	var known map[string]subnet.Lease // by Key; sized by the first list
	bad := newMalformedLog(m.log, "watching leases")
	outage := NewOutageLog(m.log, "watching leases")
	retry := backoff.New(500*time.Millisecond, 30*time.Second).WithJitter(0.25)
	first := true
	for {
		var t Table
		if !readRetrying(ctx, outage, retry, func() (err error) { t, err = m.ListAll(ctx, false); return err }) {
			return nil
		}
		for _, b := range t.Malformed {
			bad.report(b, "")
		}
		if known == nil {
			known = make(map[string]subnet.Lease, len(t.Leases))
		}
		batch := subnet.DiffLeases(known, t.Leases)
		if len(batch) > 0 || first {
			first = false
			if !send(ctx, out, batch) {
				return nil
			}
		}
		m.watchFrom(ctx, t.Revision+1, known, bad, out, relist)
		if ctx.Err() != nil {
			return nil
		}
		m.watchRestarts.Add(1)
	}
}

// watchFrom follows changes from rev until the watch breaks or ctx ends.
func (m *Manager) watchFrom(ctx context.Context, rev int64, known map[string]subnet.Lease, bad *malformedLog, out chan<- []subnet.Event, relist <-chan struct{}) {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := m.cli.Watch(wctx, m.subnetsDir(), clientv3.WithPrefix(), clientv3.WithRev(rev))
	for {
		var resp clientv3.WatchResponse
		var ok bool
		select {
		case <-relist:
			m.log.Info("re-listing leases on request")
			return
		case resp, ok = <-wch:
		}
		if !ok {
			break
		}
		if resp.CompactRevision != 0 {
			m.log.Warn("lease watch fell behind a compaction; re-listing", "compact_revision", resp.CompactRevision)
			return
		}
		if err := resp.Err(); err != nil {
			m.log.Warn("lease watch broke; re-listing", "error", err)
			return
		}
		if batch := m.fold(resp.Events, known, bad); len(batch) > 0 && !send(ctx, out, batch) {
			return
		}
	}
	if ctx.Err() == nil {
		m.log.Warn("lease watch closed; re-listing")
	}
}

// fold applies the events of one watch response to known and returns them
// as lease events. A key that is not a lease is reported to bad and
// skipped; if it held a lease before, that lease is gone now. known is
// keyed by the name under subnets/, which for a lease is its Key().
func (m *Manager) fold(events []*clientv3.Event, known map[string]subnet.Lease, bad *malformedLog) []subnet.Event {
	var batch []subnet.Event
	remove := func(short string) {
		if old, ok := known[short]; ok {
			delete(known, short)
			batch = append(batch, subnet.Event{Type: subnet.EventRemoved, Lease: old})
		}
	}
	for _, ev := range events {
		key := string(ev.Kv.Key)
		name := strings.TrimPrefix(key, m.subnetsDir())
		switch ev.Type {
		case mvccpb.PUT:
			l, b := m.classify(ev.Kv)
			if b != nil {
				bad.report(*b, "")
				remove(name)
				continue
			}
			known[name] = l
			batch = append(batch, subnet.Event{Type: subnet.EventAdded, Lease: l})
		case mvccpb.DELETE:
			bad.forget(key)
			remove(name)
		}
	}
	return batch
}

func send(ctx context.Context, out chan<- []subnet.Event, batch []subnet.Event) bool {
	select {
	case out <- batch:
		return true
	case <-ctx.Done():
		return false
	}
}

// readRetrying runs read until it succeeds: while it fails, the outage is
// logged once and the next try waits out the backoff. It reports false
// when ctx is done first. Both watches re-read their keys this way after
// a broken watch.
func readRetrying(ctx context.Context, outage *OutageLog, retry *backoff.Backoff, read func() error) bool {
	for {
		err := read()
		if err == nil {
			outage.OK()
			retry.Reset()
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		outage.Fail(err)
		if retry.Wait(ctx) != nil {
			return false
		}
	}
}
