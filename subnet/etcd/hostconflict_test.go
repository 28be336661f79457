package etcd

import (
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flanneld-go/flannel/subnet"
)

func withID(a subnet.LeaseAttrs, id string) subnet.LeaseAttrs {
	a.HostID = id
	return a
}

// valueAt reads the lease JSON and etcd lease of key.
func valueAt(t *testing.T, cli *clientv3.Client, key string) (subnet.LeaseAttrs, int64, int64) {
	t.Helper()
	resp, err := cli.Get(ctxT(t), key)
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("get %s: %v %v", key, resp, err)
	}
	var a subnet.LeaseAttrs
	if err := json.Unmarshal(resp.Kvs[0].Value, &a); err != nil {
		t.Fatal(err)
	}
	return a, resp.Kvs[0].Lease, resp.Kvs[0].ModRevision
}

// A restarted host (same identity) gets its lease back, with its identity
// in the value; renewal keeps it.
func TestAcquireSameHostIDGetsItsLeaseBack(t *testing.T) {
	m, cli, cfg := testManager(t, `{"Network":"10.244.0.0/16"}`, time.Hour)
	ctx := ctxT(t)
	a := withID(hostAttrs(1), "host-a")
	first, err := m.Acquire(ctx, cfg, a, subnet.Hint{})
	if err != nil {
		t.Fatal(err)
	}
	again, err := m.Acquire(ctx, cfg, a, subnet.Hint{})
	if err != nil || again.Subnet != first.Subnet {
		t.Fatalf("restart got %s %v, want %s", again.Subnet, err, first.Subnet)
	}
	renewed, err := m.Renew(ctx, again)
	if err != nil {
		t.Fatal(err)
	}
	if got, _, _ := valueAt(t, cli, m.LeaseKey(renewed)); got.HostID != "host-a" {
		t.Fatalf("lease value has HostID %q", got.HostID)
	}
	// Someone rewrites the value with another identity: our renewal sees
	// the lease as lost.
	b := withID(hostAttrs(1), "host-b")
	v, _ := json.Marshal(b)
	cli.Put(ctx, m.LeaseKey(renewed), string(v), clientv3.WithLease(clientv3.LeaseID(renewed.EtcdLeaseID)))
	if _, err := m.Renew(ctx, renewed); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("renew after a rewrite with another HostID: %v", err)
	}
}

// A second host with the same PublicIP and another identity takes
// nothing: it gets a HostConflictError naming both identities, the
// PublicIP, the subnet and the command that frees the lease, and the first
// host's lease is untouched. That holds for a lease that no longer fits the
// net-conf too (it is not deleted).
func TestAcquireRefusesLeaseOfAnotherHost(t *testing.T) {
	for _, fits := range []bool{true, false} {
		name := "fitting"
		if !fits {
			name = "not fitting"
		}
		t.Run(name, func(t *testing.T) {
			m, cli, cfg := testManager(t, `{"Network":"10.244.0.0/16"}`, time.Hour)
			ctx := ctxT(t)
			l, err := m.Acquire(ctx, cfg, withID(hostAttrs(1), "host-a"), subnet.Hint{})
			if err != nil {
				t.Fatal(err)
			}
			key := m.LeaseKey(l)
			_, etcdLease, rev := valueAt(t, cli, key)
			if !fits {
				cli.Put(ctx, m.ConfigKey(), `{"Network":"10.50.0.0/16"}`)
				cfg, _, _ = m.GetConfig(ctx)
			}
			_, err = m.Acquire(ctx, cfg, withID(hostAttrs(1), "host-b"), subnet.Hint{})
			var hc *HostConflictError
			if !errors.As(err, &hc) || !errors.Is(err, ErrHostConflict) {
				t.Fatalf("got %v, want a HostConflictError", err)
			}
			if hc.Key != key || hc.Theirs != "host-a" || hc.Ours != "host-b" || hc.PublicIP != hostAttrs(1).PublicIP || hc.Reserved {
				t.Errorf("conflict %+v", hc)
			}
			t.Logf("%v", err)
			for _, want := range []string{"host-a", "host-b", "192.168.0.1", l.Subnet.String(), "etcdctl del " + key} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error lacks %q: %v", want, err)
				}
			}
			got, etcdLease2, rev2 := valueAt(t, cli, key)
			if got.HostID != "host-a" || etcdLease2 != etcdLease || rev2 != rev {
				t.Errorf("the first host's lease changed: %+v lease %x rev %d (was %x %d)", got, etcdLease2, rev2, etcdLease, rev)
			}
			if leases, _, _ := m.List(ctx, false); len(leases) != 1 {
				t.Errorf("want only the first host's lease, got %v", leases)
			}
		})
	}
}

// A host without an identity does not take a lease that has one.
func TestAcquireWithoutHostIDRefusesLeaseWithOne(t *testing.T) {
	m, _, cfg := testManager(t, `{"Network":"10.244.0.0/16"}`, time.Hour)
	ctx := ctxT(t)
	if _, err := m.Acquire(ctx, cfg, withID(hostAttrs(1), "host-a"), subnet.Hint{}); err != nil {
		t.Fatal(err)
	}
	_, err := m.Acquire(ctx, cfg, hostAttrs(1), subnet.Hint{})
	if !errors.Is(err, ErrHostConflict) || !strings.Contains(err.Error(), "this host has no identity (set --host-id)") {
		t.Fatalf("got %v", err)
	}
}

// A lease with our PublicIP and no identity (upstream's, or our older
// versions') is ours, as upstream has it: taken over and given our
// identity.
func TestAcquireTakesOverLeaseWithoutHostID(t *testing.T) {
	m, cli, cfg := testManager(t, `{"Network":"10.244.0.0/16"}`, time.Hour)
	ctx := ctxT(t)
	grant, err := cli.Grant(ctx, 3600)
	if err != nil {
		t.Fatal(err)
	}
	key := m.subnetsDir() + "10.244.9.0-24"
	if _, err := cli.Put(ctx, key, `{"PublicIP":"192.168.0.1","PublicIPv6":null,"BackendType":"host-gw"}`, clientv3.WithLease(grant.ID)); err != nil {
		t.Fatal(err)
	}
	l, err := m.Acquire(ctx, cfg, withID(hostAttrs(1), "host-a"), subnet.Hint{})
	if err != nil || l.Subnet != netip.MustParsePrefix("10.244.9.0/24") {
		t.Fatalf("got %s %v, want the upstream lease's 10.244.9.0/24", l.Subnet, err)
	}
	if got, _, _ := valueAt(t, cli, key); got.HostID != "host-a" {
		t.Fatalf("taken-over lease has HostID %q", got.HostID)
	}
}

// A reservation for our PublicIP with no identity is used and bound to the
// host that uses it; another host with that PublicIP is refused and told
// how to unbind it (the reservation is the operator's: not deleted); after
// that put it gets the reservation.
func TestReservationIsBoundToItsFirstHost(t *testing.T) {
	m, cli, cfg := testManager(t, `{"Network":"10.244.0.0/16"}`, time.Hour)
	ctx := ctxT(t)
	key := m.subnetsDir() + "10.244.50.0-24"
	cli.Put(ctx, key, `{"PublicIP":"192.168.0.1","PublicIPv6":null,"BackendType":"host-gw"}`)
	l, err := m.Acquire(ctx, cfg, withID(hostAttrs(1), "host-a"), subnet.Hint{})
	if err != nil || !l.Reserved() || l.Subnet != netip.MustParsePrefix("10.244.50.0/24") {
		t.Fatalf("got %s reserved=%v %v", l.Subnet, l.Reserved(), err)
	}
	if got, etcdLease, _ := valueAt(t, cli, key); got.HostID != "host-a" || etcdLease != 0 {
		t.Fatalf("reservation after use: %+v lease %d", got, etcdLease)
	}
	_, err = m.Acquire(ctx, cfg, withID(hostAttrs(1), "host-b"), subnet.Hint{})
	var hc *HostConflictError
	if !errors.As(err, &hc) || !hc.Reserved || !strings.HasPrefix(hc.Fix, "etcdctl put "+key+" '") {
		t.Fatalf("got %v", err)
	}
	// The fix's value: the reservation without its HostID.
	value := strings.TrimSuffix(strings.TrimPrefix(hc.Fix, "etcdctl put "+key+" '"), "'")
	var unbound subnet.LeaseAttrs
	if err := json.Unmarshal([]byte(value), &unbound); err != nil || unbound.HostID != "" || unbound.PublicIP != hostAttrs(1).PublicIP {
		t.Fatalf("fix value %q: %+v %v", value, unbound, err)
	}
	if _, err := cli.Put(ctx, key, value); err != nil {
		t.Fatal(err)
	}
	l, err = m.Acquire(ctx, cfg, withID(hostAttrs(1), "host-b"), subnet.Hint{})
	if err != nil || l.Subnet != netip.MustParsePrefix("10.244.50.0/24") || l.Attrs.HostID != "host-b" {
		t.Fatalf("after unbinding: %s %+v %v", l.Subnet, l.Attrs, err)
	}
}

func TestShellQuote(t *testing.T) {
	for in, want := range map[string]string{
		"/coreos.com/network/subnets/10.244.3.0-24":           "/coreos.com/network/subnets/10.244.3.0-24",
		"/coreos.com/network/subnets/10.244.3.0-24&fd00::-64": "'/coreos.com/network/subnets/10.244.3.0-24&fd00::-64'",
		`{"PublicIP":"1.2.3.4"}`:                              `'{"PublicIP":"1.2.3.4"}'`,
		"it's":                                                `'it'\''s'`,
		"":                                                    "''",
	} {
		if got := shellQuote(in); got != want {
			t.Errorf("shellQuote(%q) = %s, want %s", in, got, want)
		}
	}
}
