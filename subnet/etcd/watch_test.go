package etcd

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flanneld-go/flannel/subnet"
)

// TestFold: watch events become lease events; a lease whose value turns
// malformed is reported removed, and a delete of an unknown key is not
// reported at all.
func TestFold(t *testing.T) {
	var logs bytes.Buffer
	m := NewManager(nil, "/p", 0, slog.New(slog.NewTextHandler(&logs, nil)))
	put := func(key, value string, lease int64) *clientv3.Event {
		return &clientv3.Event{Type: mvccpb.PUT, Kv: &mvccpb.KeyValue{Key: []byte("/p/subnets/" + key), Value: []byte(value), Lease: lease, ModRevision: 5}}
	}
	del := func(key string) *clientv3.Event {
		return &clientv3.Event{Type: mvccpb.DELETE, Kv: &mvccpb.KeyValue{Key: []byte("/p/subnets/" + key)}}
	}
	known := map[string]subnet.Lease{}
	bad := newMalformedLog(m.log, "watching leases")
	steps := []struct {
		name   string
		events []*clientv3.Event
		want   string
	}{
		{"two leases appear", []*clientv3.Event{put("10.244.1.0-24", `{"PublicIP":"192.168.0.1"}`, 7), put("10.244.2.0-24", `{"PublicIP":"192.168.0.2"}`, 0)},
			"added 10.244.1.0/24 lease 7, added 10.244.2.0/24 reserved"},
		{"one turns malformed", []*clientv3.Event{put("10.244.1.0-24", `garbage`, 7)}, "removed 10.244.1.0/24 lease 7"},
		{"garbage and unknown deletes are silent", []*clientv3.Event{put("nonsense", `{}`, 1), del("10.244.9.0-24"), del("10.244.1.0-24")}, ""},
		{"the other is deleted", []*clientv3.Event{del("10.244.2.0-24")}, "removed 10.244.2.0/24 reserved"},
	}
	for _, s := range steps {
		var got []string
		for _, e := range m.fold(s.events, known, bad) {
			what := "reserved"
			if !e.Lease.Reserved() {
				what = fmt.Sprintf("lease %d", e.Lease.EtcdLeaseID)
			}
			got = append(got, e.Type.String()+" "+e.Lease.String()+" "+what)
		}
		if g := strings.Join(got, ", "); g != s.want {
			t.Fatalf("%s: events %q, want %q", s.name, g, s.want)
		}
	}
	if len(known) != 0 {
		t.Errorf("known not empty at the end: %v", known)
	}
	if n := strings.Count(logs.String(), `msg="malformed key in etcd: not a lease; delete it"`); n != 2 {
		t.Errorf("%d malformed-lease warnings, want 2:\n%s", n, logs.String())
	}
}
