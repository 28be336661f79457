package etcd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flanneld-go/flannel/internal/etcdtest"
	"github.com/flanneld-go/flannel/subnet"
)

var etcdSrv *etcdtest.Server

func TestMain(m *testing.M) {
	var err error
	if etcdSrv, err = etcdtest.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	etcdSrv.Close()
	os.Exit(code)
}

var prefixSeq atomic.Int64

// testPrefix is an etcd prefix no other test (nor another -count round of
// this one) uses, so tests can share the server.
func testPrefix(t *testing.T) string {
	return fmt.Sprintf("/test/%s-%d", strings.ReplaceAll(t.Name(), "/", "_"), prefixSeq.Add(1))
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// testManager returns a manager under a prefix of its own, with the config
// written, so tests can share the server.
func testManager(t *testing.T, netconf string, ttl time.Duration) (*Manager, *clientv3.Client, *subnet.Config) {
	t.Helper()
	cli := etcdSrv.Client(t)
	prefix := testPrefix(t)
	m := NewManager(cli, prefix, ttl, quiet)
	ctx := context.Background()
	if _, err := cli.Put(ctx, m.ConfigKey(), netconf); err != nil {
		t.Fatal(err)
	}
	cfg, _, err := m.GetConfig(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return m, cli, cfg
}

func hostAttrs(i int) subnet.LeaseAttrs {
	return subnet.LeaseAttrs{PublicIP: netip.AddrFrom4([4]byte{192, 168, byte(i >> 8), byte(i)}), BackendType: "host-gw"}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestConcurrentAcquireGivesDistinctSubnets(t *testing.T) {
	m, _, cfg := testManager(t, `{"Network":"10.244.0.0/16"}`, time.Hour)
	ctx := ctxT(t)
	const n = 200
	got := make([]subnet.Lease, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			// Each host has its own manager and client, like separate daemons.
			cli := etcdSrv.Client(t)
			mi := NewManager(cli, m.prefix, time.Hour, quiet)
			got[i], errs[i] = mi.Acquire(ctx, cfg, hostAttrs(i+1), subnet.Hint{})
		}(i)
	}
	wg.Wait()
	t.Logf("%d concurrent acquisitions took %v", n, time.Since(start))
	seen := map[netip.Prefix]int{}
	for i := 0; i < n; i++ {
		if errs[i] != nil {
			t.Fatalf("host %d: %v", i, errs[i])
		}
		if j, dup := seen[got[i].Subnet]; dup {
			t.Fatalf("hosts %d and %d both got %s", j, i, got[i].Subnet)
		}
		seen[got[i].Subnet] = i
		if !cfg.SubnetFits(got[i].Subnet) {
			t.Errorf("host %d got %s outside the config", i, got[i].Subnet)
		}
	}
	leases, _, err := m.List(ctx, false)
	if err != nil || len(leases) != n {
		t.Fatalf("etcd holds %d leases (%v), want %d", len(leases), err, n)
	}
}

func TestAcquireReusesLeaseByPublicIP(t *testing.T) {
	m, _, cfg := testManager(t, `{"Network":"10.244.0.0/16"}`, time.Hour)
	ctx := ctxT(t)
	first, err := m.Acquire(ctx, cfg, hostAttrs(1), subnet.Hint{})
	if err != nil {
		t.Fatal(err)
	}
	// A restart: new backend data, same PublicIP, a hint pointing elsewhere.
	attrs := hostAttrs(1)
	attrs.BackendData = []byte(`{"x":1}`)
	again, err := m.Acquire(ctx, cfg, attrs, subnet.Hint{Subnet: netip.MustParsePrefix("10.244.200.0/24")})
	if err != nil {
		t.Fatal(err)
	}
	if again.Subnet != first.Subnet {
		t.Fatalf("restart got %s, want the same %s", again.Subnet, first.Subnet)
	}
	leases, _, _ := m.List(ctx, false)
	if len(leases) != 1 || string(leases[0].Attrs.BackendData) != `{"x":1}` {
		t.Fatalf("want one lease with the new backend data, got %+v", leases)
	}
}

func TestAcquireReleasesLeaseThatNoLongerFits(t *testing.T) {
	m, cli, cfg := testManager(t, `{"Network":"10.244.0.0/16"}`, time.Hour)
	ctx := ctxT(t)
	old, err := m.Acquire(ctx, cfg, hostAttrs(1), subnet.Hint{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, m.ConfigKey(), `{"Network":"10.50.0.0/16"}`); err != nil {
		t.Fatal(err)
	}
	cfg2, _, _ := m.GetConfig(ctx)
	l, err := m.Acquire(ctx, cfg2, hostAttrs(1), subnet.Hint{})
	if err != nil {
		t.Fatal(err)
	}
	if !cfg2.SubnetFits(l.Subnet) {
		t.Fatalf("got %s, not in the new network", l.Subnet)
	}
	leases, _, _ := m.List(ctx, false)
	for _, x := range leases {
		if x.Subnet == old.Subnet {
			t.Fatalf("old lease %s still in etcd", old.Subnet)
		}
	}
}

func TestAcquireUsesSubnetFileHintWhenFree(t *testing.T) {
	m, _, cfg := testManager(t, `{"Network":"10.244.0.0/16"}`, time.Hour)
	ctx := ctxT(t)
	want := netip.MustParsePrefix("10.244.77.0/24")
	l, err := m.Acquire(ctx, cfg, hostAttrs(1), subnet.Hint{Subnet: want})
	if err != nil || l.Subnet != want {
		t.Fatalf("got %s %v, want the hinted %s", l.Subnet, err, want)
	}
	// Another host hinting the same subnet must not get it.
	l2, err := m.Acquire(ctx, cfg, hostAttrs(2), subnet.Hint{Subnet: want})
	if err != nil || l2.Subnet == want {
		t.Fatalf("second host got %s %v; the hinted subnet is taken", l2.Subnet, err)
	}
	// A hint outside the config is ignored.
	l3, err := m.Acquire(ctx, cfg, hostAttrs(3), subnet.Hint{Subnet: netip.MustParsePrefix("10.99.0.0/24")})
	if err != nil || !cfg.SubnetFits(l3.Subnet) {
		t.Fatalf("third host got %s %v", l3.Subnet, err)
	}
}

func TestEnablingIPv6KeepsTheIPv4Subnet(t *testing.T) {
	m, cli, cfg := testManager(t, `{"Network":"10.244.0.0/16"}`, time.Hour)
	ctx := ctxT(t)
	l, err := m.Acquire(ctx, cfg, hostAttrs(1), subnet.Hint{})
	if err != nil {
		t.Fatal(err)
	}
	cli.Put(ctx, m.ConfigKey(), `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/56"}`)
	cfg6, _, _ := m.GetConfig(ctx)
	a := hostAttrs(1)
	a.PublicIPv6 = netip.MustParseAddr("fd00:50::1")
	// The old lease has no IPv6 part: it is replaced, but the subnet file's
	// IPv4 subnet is kept.
	l6, err := m.Acquire(ctx, cfg6, a, subnet.Hint{Subnet: l.Subnet})
	if err != nil || l6.Subnet != l.Subnet || !cfg6.SubnetFits(l6.IPv6Subnet) {
		t.Fatalf("got %s, want %s plus an IPv6 subnet (%v)", l6, l.Subnet, err)
	}
}

func TestReservationIsHonoured(t *testing.T) {
	m, cli, cfg := testManager(t, `{"Network":"10.0.0.0/24","SubnetLen":28}`, time.Hour)
	ctx := ctxT(t)
	// Reserve every subnet but one... for 192.168.0.1 (no etcd lease = reservation).
	reserved := netip.MustParsePrefix("10.0.0.32/28")
	if _, err := cli.Put(ctx, m.subnetsDir()+"10.0.0.32-28", `{"PublicIP":"192.168.0.1","PublicIPv6":null,"BackendType":"host-gw"}`); err != nil {
		t.Fatal(err)
	}
	for i := 2; i <= 16; i++ {
		l, err := m.Acquire(ctx, cfg, hostAttrs(i), subnet.Hint{Subnet: reserved})
		if i < 16 {
			if err != nil {
				t.Fatalf("host %d: %v", i, err)
			}
			if l.Subnet == reserved {
				t.Fatalf("host %d took the reserved subnet", i)
			}
			continue
		}
		// 15 subnets (10.0.0.16 .. 10.0.0.240) minus one reserved: host 16 finds none.
		if !errors.Is(err, subnet.ErrNoFreeSubnet) {
			t.Fatalf("host 16: got %v, want exhaustion", err)
		}
	}
	l, err := m.Acquire(ctx, cfg, hostAttrs(1), subnet.Hint{})
	if err != nil || l.Subnet != reserved || !l.Reserved() {
		t.Fatalf("owner of the reservation got %s reserved=%v %v", l.Subnet, l.Reserved(), err)
	}
	// The reservation keeps having no TTL after being used.
	resp, _ := cli.Get(ctx, m.subnetsDir()+"10.0.0.32-28")
	if resp.Kvs[0].Lease != 0 {
		t.Error("reservation got an etcd lease attached")
	}
	if _, err := m.Renew(ctx, l); err != nil {
		t.Errorf("renewing a reservation: %v", err)
	}
}

func TestExhaustionMessage(t *testing.T) {
	m, cli, cfg := testManager(t, `{"Network":"10.0.0.0/28"}`, time.Hour)
	ctx := ctxT(t)
	// /28 into /30s: SubnetMin is the second, so 3 subnets can be leased.
	if _, err := cli.Put(ctx, m.subnetsDir()+"10.0.0.4-30", `{"PublicIP":"192.168.9.9","PublicIPv6":null}`); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 2; i++ {
		if _, err := m.Acquire(ctx, cfg, hostAttrs(i), subnet.Hint{}); err != nil {
			t.Fatal(err)
		}
	}
	_, err := m.Acquire(ctx, cfg, hostAttrs(3), subnet.Hint{})
	want := "no free subnet in 10.0.0.0/28 (SubnetLen 30): 2 leased, 1 reserved"
	if err == nil || err.Error() != want {
		t.Fatalf("got %v, want %q", err, want)
	}
}

func TestIPv6ExhaustionNamesTheFamily(t *testing.T) {
	m, _, cfg := testManager(t, `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/124"}`, time.Hour)
	ctx := ctxT(t)
	// fd00::/124 in /126s: 3 leasable IPv6 subnets, plenty of IPv4 ones.
	for i := 1; i <= 3; i++ {
		a := hostAttrs(i)
		a.PublicIPv6 = netip.MustParseAddr(fmt.Sprintf("fd00:50::%d", i))
		if _, err := m.Acquire(ctx, cfg, a, subnet.Hint{}); err != nil {
			t.Fatal(err)
		}
	}
	a := hostAttrs(4)
	a.PublicIPv6 = netip.MustParseAddr("fd00:50::4")
	_, err := m.Acquire(ctx, cfg, a, subnet.Hint{})
	want := "no free subnet in IPv6 fd00::/124 (SubnetLen 126): 3 leased, 0 reserved"
	if err == nil || err.Error() != want {
		t.Fatalf("got %v, want %q", err, want)
	}
}

func TestDualStackAcquire(t *testing.T) {
	m, _, cfg := testManager(t, `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56"}`, time.Hour)
	ctx := ctxT(t)
	const n = 20
	var wg sync.WaitGroup
	got := make([]subnet.Lease, n)
	errs := make([]error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			a := hostAttrs(i + 1)
			a.PublicIPv6 = netip.MustParseAddr(fmt.Sprintf("fd00:50::%x", i+1))
			got[i], errs[i] = NewManager(etcdSrv.Client(t), m.prefix, time.Hour, quiet).Acquire(ctx, cfg, a, subnet.Hint{})
		}(i)
	}
	wg.Wait()
	s4, s6 := map[netip.Prefix]bool{}, map[netip.Prefix]bool{}
	for i := range got {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if s4[got[i].Subnet] || s6[got[i].IPv6Subnet] {
			t.Fatalf("duplicate subnet in %s", got[i])
		}
		s4[got[i].Subnet], s6[got[i].IPv6Subnet] = true, true
		if !cfg.SubnetFits(got[i].IPv6Subnet) {
			t.Fatalf("bad IPv6 subnet %s", got[i].IPv6Subnet)
		}
	}
	leases, _, _ := m.List(ctx, false)
	if len(leases) != n || !strings.Contains(m.LeaseKey(leases[0]), "&fd00:10:244:") {
		t.Fatalf("leases in etcd: %d, key %s", len(leases), m.LeaseKey(leases[0]))
	}
}

func TestRenewExtendsTTL(t *testing.T) {
	m, cli, cfg := testManager(t, `{"Network":"10.244.0.0/16"}`, 30*time.Second)
	ctx := ctxT(t)
	l, err := m.Acquire(ctx, cfg, hostAttrs(1), subnet.Hint{})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(2500 * time.Millisecond)
	before, _ := cli.TimeToLive(ctx, clientv3.LeaseID(l.EtcdLeaseID))
	l2, err := m.Renew(ctx, l)
	if err != nil {
		t.Fatal(err)
	}
	after, _ := cli.TimeToLive(ctx, clientv3.LeaseID(l.EtcdLeaseID))
	if before.TTL > 28 || after.TTL < 29 {
		t.Fatalf("TTL before renew %d, after %d: renewal did not extend it", before.TTL, after.TTL)
	}
	if !l2.Expiration.After(l.Expiration) {
		t.Errorf("expiration not moved: %v -> %v", l.Expiration, l2.Expiration)
	}
	// Deleted by an operator: Renew says the lease is lost.
	if _, err := cli.Delete(ctx, m.LeaseKey(l)); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Renew(ctx, l2); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("renew after delete: %v, want ErrLeaseLost", err)
	}
}

func TestLeaseExpires(t *testing.T) {
	m, _, cfg := testManager(t, `{"Network":"10.244.0.0/16"}`, 2*time.Second)
	ctx := ctxT(t)
	l, err := m.Acquire(ctx, cfg, hostAttrs(1), subnet.Hint{})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		leases, _, _ := m.List(ctx, false)
		if len(leases) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("lease did not expire")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if _, err := m.Renew(ctx, l); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("renew after expiry: %v", err)
	}
	// Re-acquired with the same subnet since it is free.
	l2, err := m.Acquire(ctx, cfg, hostAttrs(1), subnet.Hint{Subnet: l.Subnet})
	if err != nil || l2.Subnet != l.Subnet {
		t.Fatalf("re-acquire: %s %v", l2.Subnet, err)
	}
}

func recv(t *testing.T, ch <-chan []subnet.Event) []subnet.Event {
	t.Helper()
	select {
	case b := <-ch:
		return b
	case <-time.After(10 * time.Second):
		t.Fatal("no lease events within 10s")
		return nil
	}
}

func TestWatchSeesAddsAndRemoves(t *testing.T) {
	m, cli, cfg := testManager(t, `{"Network":"10.244.0.0/16"}`, time.Hour)
	ctx, cancel := context.WithCancel(ctxT(t))
	a, err := m.Acquire(ctx, cfg, hostAttrs(1), subnet.Hint{})
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan []subnet.Event)
	done := make(chan error, 1)
	go func() { done <- m.WatchLeases(ctx, ch, nil) }()
	first := recv(t, ch)
	if len(first) != 1 || first[0].Type != subnet.EventAdded || first[0].Lease.Subnet != a.Subnet {
		t.Fatalf("initial batch %+v", first)
	}
	b, err := m.Acquire(ctx, cfg, hostAttrs(2), subnet.Hint{})
	if err != nil {
		t.Fatal(err)
	}
	ev := recv(t, ch)
	if len(ev) != 1 || ev[0].Type != subnet.EventAdded || ev[0].Lease.Subnet != b.Subnet || ev[0].Lease.Attrs.PublicIP != hostAttrs(2).PublicIP {
		t.Fatalf("add event %+v", ev)
	}
	// Garbage is skipped, not fatal.
	if _, err := cli.Put(ctx, m.subnetsDir()+"garbage", "x"); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Delete(ctx, m.LeaseKey(a)); err != nil {
		t.Fatal(err)
	}
	ev = recv(t, ch)
	if len(ev) != 1 || ev[0].Type != subnet.EventRemoved || ev[0].Lease.Subnet != a.Subnet {
		t.Fatalf("remove event %+v", ev)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, open := <-ch; open {
		t.Fatal("channel not closed by the producer")
	}
}

func TestWatchRecoversFromCompaction(t *testing.T) {
	m, cli, cfg := testManager(t, `{"Network":"10.244.0.0/16"}`, time.Hour)
	ctx := ctxT(t)
	a, _ := m.Acquire(ctx, cfg, hostAttrs(1), subnet.Hint{})
	b, _ := m.Acquire(ctx, cfg, hostAttrs(2), subnet.Hint{})
	leases, rev, err := m.List(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	known := map[string]subnet.Lease{}
	subnet.DiffLeases(known, leases)
	// While "disconnected": a leaves, c joins, and history is compacted.
	cli.Delete(ctx, m.LeaseKey(a))
	c, _ := m.Acquire(ctx, cfg, hostAttrs(3), subnet.Hint{})
	cur, _ := cli.Get(ctx, "x")
	if _, err := cli.Compact(ctx, cur.Header.Revision); err != nil {
		t.Fatal(err)
	}
	// A watch from the old revision is refused with a compaction...
	out := make(chan []subnet.Event, 4)
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	m.watchFrom(wctx, rev+1, known, newMalformedLog(quiet, "test"), out, nil)
	if wctx.Err() != nil {
		t.Fatal("watchFrom did not return on compaction")
	}
	if len(out) != 0 {
		t.Fatalf("events from a compacted watch: %v", <-out)
	}
	// ...and the re-list emits exactly the difference.
	leases, _, _ = m.List(ctx, false)
	diff := subnet.DiffLeases(known, leases)
	var added, removed []netip.Prefix
	for _, e := range diff {
		if e.Type == subnet.EventAdded {
			added = append(added, e.Lease.Subnet)
		} else {
			removed = append(removed, e.Lease.Subnet)
		}
	}
	if len(added) != 1 || added[0] != c.Subnet || len(removed) != 1 || removed[0] != a.Subnet {
		t.Fatalf("diff after compaction: added %v removed %v (want +%s -%s)", added, removed, c.Subnet, a.Subnet)
	}
	if _, ok := known[b.Key()]; !ok || len(known) != 2 {
		t.Fatalf("known set wrong: %v", known)
	}
}

func TestWaitConfig(t *testing.T) {
	cli := etcdSrv.Client(t)
	m := NewManager(cli, testPrefix(t), time.Hour, quiet)
	ctx := ctxT(t)
	go func() {
		time.Sleep(1500 * time.Millisecond)
		cli.Put(ctx, m.ConfigKey(), `{"Network":"10.9.0.0/16"}`)
	}()
	cfg, err := m.WaitConfig(ctx)
	if err != nil || cfg.Network.String() != "10.9.0.0/16" {
		t.Fatalf("WaitConfig: %v %v", cfg, err)
	}
	cli.Put(ctx, m.ConfigKey(), `{"Network":"10.9.0.0/33"}`)
	if _, err := m.WaitConfig(ctx); err == nil || !strings.Contains(err.Error(), "invalid net-conf at "+m.ConfigKey()+": Network:") {
		t.Fatalf("bad config: %v", err)
	}
}

// A list larger than a page is read in several range requests at the
// first page's revision: every lease, and the revision to watch from.
func TestListPages(t *testing.T) {
	old := listPage
	listPage = 2
	defer func() { listPage = old }()
	m, cli, cfg := testManager(t, `{"Network":"10.244.0.0/16"}`, time.Hour)
	ctx := ctxT(t)
	want := map[netip.Prefix]bool{}
	for i := range 5 {
		l, err := m.Acquire(ctx, cfg, hostAttrs(i+1), subnet.Hint{})
		if err != nil {
			t.Fatal(err)
		}
		want[l.Subnet] = true
	}
	cur, err := cli.Get(ctx, "x")
	if err != nil {
		t.Fatal(err)
	}
	leases, rev, err := m.List(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(leases) != 5 || rev != cur.Header.Revision {
		t.Fatalf("%d leases at revision %d, want 5 at %d", len(leases), rev, cur.Header.Revision)
	}
	for _, l := range leases {
		if !want[l.Subnet] {
			t.Errorf("unexpected lease %s", l.Subnet)
		}
		delete(want, l.Subnet)
	}
	if len(want) != 0 {
		t.Errorf("missing leases %v", want)
	}
}
