package etcd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flanneld-go/flannel/internal/etcdtest"
	"github.com/flanneld-go/flannel/subnet"
)

// syncBuffer is a log sink for concurrent managers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// malformedLines counts the acquisition's warnings about key.
func malformedLines(log, key string) int {
	n := 0
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, `msg="malformed key in etcd: not a lease; delete it" activity="acquiring a lease" key=`+key+" ") {
			n++
		}
	}
	return n
}

// Each kind of key that is not a lease, at a subnet a host wants: the
// subnets the key holds are never picked (not even as the hint), so
// acquisition neither loses races on them nor hands them out; keys that
// hold nothing leave every subnet usable. The network has 3 subnets
// (10.0.0.4/30, .8, .12).
func TestAcquireWithMalformedKeys(t *testing.T) {
	const v4net = `{"Network":"10.0.0.0/28","SubnetLen":30}`
	const dual = `{"Network":"10.0.0.0/28","SubnetLen":30,"EnableIPv6":true,"IPv6Network":"fd00::/124","IPv6SubnetLen":126}`
	for _, tc := range []struct {
		name, netconf, key, value string
		holds                     string // the subnet the key keeps; "" when none
	}{
		{"value not JSON", v4net, "10.0.0.4-30", "garbage", "10.0.0.4/30"},
		{"value with a bad PublicIP", v4net, "10.0.0.4-30", `{"PublicIP":"not-an-ip"}`, "10.0.0.4/30"},
		{"empty value", v4net, "10.0.0.4-30", "", "10.0.0.4/30"},
		{"trailing garbage in the key", v4net, "10.0.0.4-30garbage", `{"PublicIP":"192.168.9.9"}`, "10.0.0.4/30"},
		{"key nested below a subnet key", v4net, "10.0.0.4-30/x", `{"PublicIP":"192.168.9.9"}`, "10.0.0.4/30"},
		{"dual-stack key, bad value", dual, "10.0.0.4-30&fd00::4-126", "garbage", "10.0.0.4/30"},
		{"non-canonical key", v4net, "10.0.0.4-030", `{"PublicIP":"192.168.9.9"}`, ""},
		{"no address at all", v4net, "garbage", "x", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, cli, cfg := testManager(t, tc.netconf, time.Hour)
			ctx := ctxT(t)
			key := m.subnetsDir() + tc.key
			if _, err := cli.Put(ctx, key, tc.value); err != nil {
				t.Fatal(err)
			}
			hint := subnet.Hint{Subnet: netip.MustParsePrefix("10.0.0.4/30"), IPv6Subnet: netip.MustParsePrefix("fd00::4/126")}
			free := 3
			if tc.holds != "" {
				free = 2
			}
			got := map[netip.Prefix]bool{}
			for i := 1; i <= free; i++ {
				l := acquireBeside(t, m, cli, cfg, i, hint, key, tc.holds)
				if tc.netconf == dual && l.IPv6Subnet == hint.IPv6Subnet {
					t.Fatalf("host %d got %s, which the malformed key %s holds", i, l.IPv6Subnet, tc.key)
				}
				got[l.Subnet] = true
			}
			if len(got) != free {
				t.Fatalf("%d hosts got %d distinct subnets", free, len(got))
			}
			// The network is full now: the next host is told so (not a
			// lost race), with the malformed key counted.
			_, err := m.Acquire(ctx, cfg, hostAttrs(9), subnet.Hint{})
			if !errors.Is(err, subnet.ErrNoFreeSubnet) {
				t.Fatalf("host 9: %v, want no free subnet", err)
			}
			if !strings.Contains(err.Error(), "1 malformed keys") {
				t.Errorf("exhaustion does not count the malformed key: %v", err)
			}
		})
	}
}

// acquireBeside acquires a lease for host i with a malformed key at key
// holding the subnet holds ("" for none) and checks that the host did not
// get that subnet and logged the key once (or not at all if it holds
// nothing), with the subnets it holds and the command that deletes it.
func acquireBeside(t *testing.T, m *Manager, cli *clientv3.Client, cfg *subnet.Config, i int, hint subnet.Hint, key, holds string) subnet.Lease {
	t.Helper()
	var logs syncBuffer
	mi := NewManager(cli, m.prefix, time.Hour, slog.New(slog.NewTextHandler(&logs, nil)))
	a := hostAttrs(i)
	if cfg.EnableIPv6 {
		a.PublicIPv6 = netip.MustParseAddr(fmt.Sprintf("fd00:50::%d", i))
	}
	actx, cancel := context.WithTimeout(ctxT(t), 5*time.Second)
	defer cancel()
	l, err := mi.Acquire(actx, cfg, a, hint)
	if err != nil {
		t.Fatalf("host %d: %v", i, err)
	}
	if holds != "" && l.Subnet.String() == holds {
		t.Fatalf("host %d got %s, which the malformed key %s holds", i, l.Subnet, key)
	}
	wantLines := 0
	if holds != "" {
		wantLines = 1
		if cfg.EnableIPv6 {
			holds += "+" + hint.IPv6Subnet.String()
		}
	}
	if n := malformedLines(logs.String(), key); n != wantLines {
		t.Errorf("host %d logged the key %d times, want %d:\n%s", i, n, wantLines, logs.String())
	}
	if wantLines == 1 && !strings.Contains(logs.String(), `holds=`+holds+` fix="`+delHint(key)+`"`) {
		t.Errorf("host %d: the warning lacks the subnet or the fix:\n%s", i, logs.String())
	}
	return l
}

// After the operator deletes the key, its subnet is leased again.
func TestMalformedKeyDeletedFreesItsSubnet(t *testing.T) {
	m, cli, cfg := testManager(t, `{"Network":"10.244.0.0/16"}`, time.Hour)
	ctx := ctxT(t)
	key := m.subnetsDir() + "10.244.77.0-24"
	hint := subnet.Hint{Subnet: netip.MustParsePrefix("10.244.77.0/24")}
	cli.Put(ctx, key, "garbage")
	l, err := m.Acquire(ctx, cfg, hostAttrs(1), hint)
	if err != nil || l.Subnet == hint.Subnet {
		t.Fatalf("got %s %v with the hinted subnet held by a malformed key", l.Subnet, err)
	}
	cli.Delete(ctx, key)
	l2, err := m.Acquire(ctx, cfg, hostAttrs(2), hint)
	if err != nil || l2.Subnet != hint.Subnet {
		t.Fatalf("after the delete: got %s %v, want the hinted %s", l2.Subnet, err, hint.Subnet)
	}
}

// Many hosts acquiring at once with a malformed key present: each logs it
// once, however many races it loses.
func TestMalformedKeyLoggedOncePerAcquisition(t *testing.T) {
	m, cli, cfg := testManager(t, `{"Network":"10.244.0.0/22"}`, time.Hour)
	ctx := ctxT(t)
	key := m.subnetsDir() + "10.244.1.0-24"
	cli.Put(ctx, key, "{")
	hint := subnet.Hint{Subnet: netip.MustParsePrefix("10.244.1.0/24")}
	// 10.244.0.0/22 in /24s with SubnetMin the second: .1, .2, .3; .1 is
	// held, so 2 hosts get one and the third finds none.
	var wg sync.WaitGroup
	logs := make([]syncBuffer, 3)
	errs := make([]error, 3)
	for i := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mi := NewManager(etcdSrv.Client(t), m.prefix, time.Hour, slog.New(slog.NewTextHandler(&logs[i], nil)))
			_, errs[i] = mi.Acquire(ctx, cfg, hostAttrs(i+1), hint)
		}()
	}
	wg.Wait()
	full := 0
	for i := range 3 {
		if errors.Is(errs[i], subnet.ErrNoFreeSubnet) {
			full++
		} else if errs[i] != nil {
			t.Errorf("host %d: %v", i+1, errs[i])
		}
		if n := malformedLines(logs[i].String(), key); n != 1 {
			t.Errorf("host %d logged the key %d times, want once:\n%s", i+1, n, logs[i].String())
		}
	}
	if full != 1 {
		t.Errorf("%d hosts found the network full, want 1: %v", full, errs)
	}
}

// A writer that changes the subnet table between every read and write of
// a dual-stack acquisition (guarded by "table unchanged") makes it lose
// every race: it ends with ErrLostRaces, not an etcd error, and leaves no
// lease behind.
func TestAcquireLostRacesIsBounded(t *testing.T) {
	m, _, cfg := testManager(t, `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/56"}`, time.Hour)
	ctx := ctxT(t)
	cli := etcdSrv.Client(t)
	interfered := etcdtest.Interfere(cli, m.subnetsDir()+"churn")
	racer := NewManager(cli, m.prefix, time.Hour, quiet)
	a := hostAttrs(1)
	a.PublicIPv6 = netip.MustParseAddr("fd00:50::1")
	actx, cancel := context.WithTimeout(ctx, 2*time.Second)
	_, err := racer.Acquire(actx, cfg, a, subnet.Hint{})
	cancel()
	if !errors.Is(err, ErrLostRaces) || errors.Is(err, ErrUnreachable) {
		t.Fatalf("got %v, want ErrLostRaces", err)
	}
	if n := interfered(); !strings.Contains(err.Error(), fmt.Sprintf("lost the race for a subnet %d times before the deadline", n)) {
		t.Errorf("error %q does not count the %d lost races", err, n)
	}
	leases, _, _ := m.List(ctx, false)
	if len(leases) != 0 {
		t.Fatalf("leases left behind: %v", leases)
	}
}

// The watch knows keys by their whole name: a nested key is no lease, and
// deleting it does not remove the lease whose name it ends with.
func TestFoldNestedKey(t *testing.T) {
	var logs bytes.Buffer
	m := NewManager(nil, "/p", 0, slog.New(slog.NewTextHandler(&logs, nil)))
	put := func(key, value string, rev int64) *clientv3.Event {
		return &clientv3.Event{Type: mvccpb.PUT, Kv: &mvccpb.KeyValue{Key: []byte("/p/subnets/" + key), Value: []byte(value), Lease: 7, ModRevision: rev}}
	}
	known := map[string]subnet.Lease{}
	bad := newMalformedLog(m.log, "watching leases")
	if ev := m.fold([]*clientv3.Event{put("10.244.1.0-24", `{"PublicIP":"192.168.0.1"}`, 2)}, known, bad); len(ev) != 1 {
		t.Fatalf("lease not added: %v", ev)
	}
	nested := put("x/10.244.1.0-24", `{"PublicIP":"192.168.0.2"}`, 3)
	if ev := m.fold([]*clientv3.Event{nested, nested}, known, bad); len(ev) != 0 {
		t.Fatalf("a nested key became lease events: %v", ev)
	}
	del := &clientv3.Event{Type: mvccpb.DELETE, Kv: &mvccpb.KeyValue{Key: []byte("/p/subnets/x/10.244.1.0-24")}}
	if ev := m.fold([]*clientv3.Event{del}, known, bad); len(ev) != 0 || len(known) != 1 {
		t.Fatalf("deleting the nested key: events %v, known %v", ev, known)
	}
	// Logged once for its one value, though it was put twice at that
	// revision; a new value after the delete is logged again.
	m.fold([]*clientv3.Event{put("x/10.244.1.0-24", "y", 5)}, known, bad)
	if n := strings.Count(logs.String(), `key=/p/subnets/x/10.244.1.0-24 error="nested key`); n != 2 {
		t.Errorf("nested key logged %d times, want 2:\n%s", n, logs.String())
	}
}
