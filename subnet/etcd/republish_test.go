package etcd

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flanneld-go/flannel/internal/etcdtest"
	"github.com/flanneld-go/flannel/subnet"
)

// vxlanAttrs is hostAttrs(i) switched to vxlan, as after a backend switch.
func vxlanAttrs(i int) subnet.LeaseAttrs {
	a := hostAttrs(i)
	a.BackendType = "vxlan"
	a.BackendData = json.RawMessage(`{"VNI":1,"VtepMAC":"0a:58:0a:f4:03:00"}`)
	return a
}

// TestRepublishKeepsKeyAndEtcdLease: the new backend type and data are
// stored in upstream's lease JSON under the same key, attached to the same
// etcd lease, whose TTL was not reset.
func TestRepublishKeepsKeyAndEtcdLease(t *testing.T) {
	m, cli, cfg := testManager(t, `{"Network":"10.244.0.0/16"}`, time.Hour)
	ctx := ctxT(t)
	l, err := m.Acquire(ctx, cfg, hostAttrs(1), subnet.Hint{})
	if err != nil {
		t.Fatal(err)
	}
	// Let the TTL run for a while, so that a reset would show.
	time.Sleep(2100 * time.Millisecond)
	attrs := vxlanAttrs(1)
	got, err := m.Republish(ctx, l, attrs)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Attrs.Equal(attrs) || got.EtcdLeaseID != l.EtcdLeaseID || !got.Expiration.Equal(l.Expiration) ||
		got.Subnet != l.Subnet || got.ModRevision <= l.ModRevision {
		t.Errorf("returned %+v, from %+v", got, l)
	}
	resp, err := cli.Get(ctx, m.LeaseKey(l))
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("reading the key: %v %v", resp, err)
	}
	kv := resp.Kvs[0]
	want, _ := json.Marshal(attrs)
	if string(kv.Value) != string(want) || string(kv.Value) != `{"PublicIP":"192.168.0.1","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0a:58:0a:f4:03:00"}}` {
		t.Errorf("stored %s", kv.Value)
	}
	if kv.Lease != l.EtcdLeaseID || kv.ModRevision != got.ModRevision {
		t.Errorf("key on etcd lease %x at revision %d, want %x at %d", kv.Lease, kv.ModRevision, l.EtcdLeaseID, got.ModRevision)
	}
	ttl, err := cli.TimeToLive(ctx, clientv3.LeaseID(l.EtcdLeaseID))
	if err != nil {
		t.Fatal(err)
	}
	if ttl.GrantedTTL != 3600 || ttl.TTL > 3598 || ttl.TTL < 3500 {
		t.Errorf("etcd lease granted %d s, %d s left: want 3600 granted and the 2 s that ran gone", ttl.GrantedTTL, ttl.TTL)
	}
	// The lease returned is the one the daemon renews from now on.
	if _, err := m.Renew(ctx, got); err != nil {
		t.Errorf("renewing the republished lease: %v", err)
	}
}

// TestRepublishLostToAnotherWriter: a key rewritten with other attributes,
// moved to another etcd lease, or deleted after our read is not ours any
// more: ErrLeaseLost, and what the other wrote stays.
func TestRepublishLostToAnotherWriter(t *testing.T) {
	m, cli, cfg := testManager(t, `{"Network":"10.244.0.0/16"}`, time.Hour)
	ctx := ctxT(t)
	for _, tc := range []struct {
		name  string
		other func(key string, l subnet.Lease) error
		want  string // the value left, "" for none
	}{
		{"other attributes", func(key string, l subnet.Lease) error {
			_, err := cli.Put(ctx, key, `{"PublicIP":"192.168.9.9","PublicIPv6":null,"BackendType":"host-gw"}`, clientv3.WithLease(clientv3.LeaseID(l.EtcdLeaseID)))
			return err
		}, `{"PublicIP":"192.168.9.9","PublicIPv6":null,"BackendType":"host-gw"}`},
		{"made a reservation", func(key string, l subnet.Lease) error {
			_, err := cli.Put(ctx, key, `{"PublicIP":"192.168.0.1","PublicIPv6":null,"BackendType":"host-gw"}`)
			return err
		}, `{"PublicIP":"192.168.0.1","PublicIPv6":null,"BackendType":"host-gw"}`},
		{"not a lease", func(key string, l subnet.Lease) error {
			_, err := cli.Put(ctx, key, `garbage`)
			return err
		}, `garbage`},
		{"deleted", func(key string, l subnet.Lease) error {
			_, err := cli.Delete(ctx, key)
			return err
		}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := m.Acquire(ctx, cfg, hostAttrs(1), subnet.Hint{})
			if err != nil {
				t.Fatal(err)
			}
			key := m.LeaseKey(l)
			if err := tc.other(key, l); err != nil {
				t.Fatal(err)
			}
			if _, err := m.Republish(ctx, l, vxlanAttrs(1)); !errors.Is(err, ErrLeaseLost) {
				t.Fatalf("Republish: %v, want ErrLeaseLost", err)
			}
			resp, err := cli.Get(ctx, key)
			if err != nil {
				t.Fatal(err)
			}
			left := ""
			if len(resp.Kvs) == 1 {
				left = string(resp.Kvs[0].Value)
			}
			if left != tc.want {
				t.Errorf("key holds %q, want the other's %q", left, tc.want)
			}
			cli.Delete(ctx, key)
		})
	}
}

// TestRepublishRaced: a write by someone else between the caller's read
// and the commit (etcdtest.Interfere) makes the transaction fail; the
// other's value stays.
func TestRepublishRaced(t *testing.T) {
	m, cli, cfg := testManager(t, `{"Network":"10.244.0.0/16"}`, time.Hour)
	ctx := ctxT(t)
	l, err := m.Acquire(ctx, cfg, hostAttrs(1), subnet.Hint{})
	if err != nil {
		t.Fatal(err)
	}
	racy := etcdSrv.Client(t)
	races := etcdtest.Interfere(racy, m.LeaseKey(l))
	mr := NewManager(racy, m.prefix, time.Hour, quiet)
	if _, err := mr.Republish(ctx, l, vxlanAttrs(1)); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("Republish: %v, want ErrLeaseLost", err)
	}
	resp, err := cli.Get(ctx, m.LeaseKey(l))
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "1" || races() != 1 {
		t.Errorf("key %v (%v) after %d races, want the other's value 1 after one", resp.Kvs, err, races())
	}
}

// TestRepublishStaleRevision: a key that still holds our lease at a newer
// revision (rewritten identically by someone, or a lease whose revision
// the caller did not keep) is ours, as Renew judges it, and is rewritten.
func TestRepublishStaleRevision(t *testing.T) {
	m, cli, cfg := testManager(t, `{"Network":"10.244.0.0/16"}`, time.Hour)
	ctx := ctxT(t)
	l, err := m.Acquire(ctx, cfg, hostAttrs(1), subnet.Hint{})
	if err != nil {
		t.Fatal(err)
	}
	same, _ := json.Marshal(l.Attrs)
	if _, err := cli.Put(ctx, m.LeaseKey(l), string(same), clientv3.WithLease(clientv3.LeaseID(l.EtcdLeaseID))); err != nil {
		t.Fatal(err)
	}
	got, err := m.Republish(ctx, l, vxlanAttrs(1))
	if err != nil {
		t.Fatal(err)
	}
	if got.Attrs.BackendType != "vxlan" || got.EtcdLeaseID != l.EtcdLeaseID {
		t.Errorf("republished %+v", got)
	}
	got.ModRevision = 0 // unknown to the caller
	if _, err := m.Republish(ctx, got, hostAttrs(1)); err != nil {
		t.Errorf("with the revision unknown: %v", err)
	}
}

// TestRepublishAnswerLost: an attempt that committed but whose answer was
// lost is retried with the lease of before; the key holding the new
// attributes under our etcd lease is success, not a lost lease.
func TestRepublishAnswerLost(t *testing.T) {
	m, cli, cfg := testManager(t, `{"Network":"10.244.0.0/16"}`, time.Hour)
	ctx := ctxT(t)
	l, err := m.Acquire(ctx, cfg, hostAttrs(1), subnet.Hint{})
	if err != nil {
		t.Fatal(err)
	}
	done, _ := json.Marshal(vxlanAttrs(1)) // what the lost attempt wrote
	if _, err := cli.Put(ctx, m.LeaseKey(l), string(done), clientv3.WithLease(clientv3.LeaseID(l.EtcdLeaseID))); err != nil {
		t.Fatal(err)
	}
	got, err := m.Republish(ctx, l, vxlanAttrs(1))
	if err != nil {
		t.Fatalf("the retry of a committed republish: %v", err)
	}
	if got.Attrs.BackendType != "vxlan" || got.ModRevision <= l.ModRevision {
		t.Errorf("republished %+v", got)
	}
}

// TestRepublishReservation: a reservation is rewritten without an etcd
// lease, and stays one.
func TestRepublishReservation(t *testing.T) {
	m, cli, cfg := testManager(t, `{"Network":"10.244.0.0/16"}`, time.Hour)
	ctx := ctxT(t)
	key := m.subnetsDir() + "10.244.7.0-24"
	if _, err := cli.Put(ctx, key, `{"PublicIP":"192.168.0.1","PublicIPv6":null,"BackendType":"host-gw"}`); err != nil {
		t.Fatal(err)
	}
	l, err := m.Acquire(ctx, cfg, hostAttrs(1), subnet.Hint{})
	if err != nil || !l.Reserved() {
		t.Fatalf("acquired %+v %v, want the reservation", l, err)
	}
	got, err := m.Republish(ctx, l, vxlanAttrs(1))
	if err != nil {
		t.Fatal(err)
	}
	if !got.Reserved() || !got.Expiration.IsZero() || got.Attrs.BackendType != "vxlan" {
		t.Errorf("returned %+v", got)
	}
	resp, err := cli.Get(ctx, key)
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("reading the key: %v %v", resp, err)
	}
	if resp.Kvs[0].Lease != 0 {
		t.Errorf("the reservation got etcd lease %x", resp.Kvs[0].Lease)
	}
	if _, err := m.Renew(ctx, got); err != nil {
		t.Errorf("checking the republished reservation: %v", err)
	}
}

// TestRepublishRefusesAnotherHost: attributes naming another host are
// refused before anything is written; that is a takeover, not a rewrite.
func TestRepublishRefusesAnotherHost(t *testing.T) {
	m, _, cfg := testManager(t, `{"Network":"10.244.0.0/16"}`, time.Hour)
	ctx := ctxT(t)
	l, err := m.Acquire(ctx, cfg, hostAttrs(1), subnet.Hint{})
	if err != nil {
		t.Fatal(err)
	}
	other := vxlanAttrs(2)
	if _, err := m.Republish(ctx, l, other); err == nil || errors.Is(err, ErrLeaseLost) {
		t.Fatalf("Republish with another PublicIP: %v", err)
	}
	if _, err := m.Renew(ctx, l); err != nil {
		t.Errorf("the lease changed: %v", err)
	}
}
