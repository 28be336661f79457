package e2e_test

// The end-to-end suite every backend runs: real flanneld daemons on
// simulated hosts (network namespaces) with a real etcd, real pods, real
// pings. Each test builds its own testbed and tears it down, also on failure.

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/flanneld-go/flannel/e2e/testbed"
)

// requireTestbed skips, with the reason, when the testbed cannot run here.
func requireTestbed(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("end-to-end tests need root (network namespaces); make test runs them as root")
	}
	if testing.Short() {
		t.Skip("end-to-end tests are skipped with -short")
	}
}

func netconf(backend string) string {
	return fmt.Sprintf(`{"Network":"10.244.0.0/16","Backend":%s}`, backend)
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// newCluster starts a testbed of n hosts running flanneld with the given
// backend object and pods pods per host.
func newCluster(t *testing.T, ctx context.Context, backend string, n, pods int, opts testbed.Options, args ...string) *testbed.Testbed {
	t.Helper()
	opts.Hosts, opts.PodsPerHost = n, pods
	tb := testbed.NewT(t, opts)
	if err := tb.PutNetConfig(ctx, netconf(backend)); err != nil {
		t.Fatal(err)
	}
	if err := tb.StartDaemons(ctx, args...); err != nil {
		t.Fatal(err)
	}
	return tb
}

// pingMesh checks that every pod reaches every other pod.
func pingMesh(t *testing.T, ctx context.Context, tb *testbed.Testbed) {
	t.Helper()
	var pods []*testbed.Pod
	for _, h := range tb.Hosts() {
		pods = append(pods, h.Pods...)
	}
	for _, src := range pods {
		for _, dst := range pods {
			if src == dst {
				continue
			}
			if err := src.WaitPing(ctx, dst.Addr); err != nil {
				t.Fatalf("pod %s (%s) -> pod %s (%s): %v", src.Name, src.Addr, dst.Name, dst.Addr, err)
			}
		}
	}
	t.Logf("ping mesh: %d pods, %d pairs reachable", len(pods), len(pods)*(len(pods)-1))
}

// leaseSubnet returns a host's subnet from its subnet file.
func leaseSubnet(t *testing.T, ctx context.Context, h *testbed.Host) netip.Prefix {
	t.Helper()
	env, err := h.WaitSubnetFile(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return netip.MustParsePrefix(env["FLANNEL_SUBNET"]).Masked()
}

// waitFor polls cond every 20 ms until it holds or d passes, and returns
// how long it took.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > d {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

func routeTo(ctx context.Context, h *testbed.Host, sn netip.Prefix) string {
	out, _ := h.Exec(ctx, "ip", "route", "show", sn.String())
	return withoutNhid(strings.TrimSpace(out))
}

// nhid is the nexthop object a route of ours names in `ip route` output
// ("10.244.2.0/24 nhid 253362176 via ..."; see backend/dataplane).
var nhid = regexp.MustCompile(`nhid [0-9]+ `)

// withoutNhid leaves the nexthop ids out of `ip route` output: routes read
// as the backends describe them, and dumps compare equal when a nexthop
// was made again under another id.
func withoutNhid(s string) string { return nhid.ReplaceAllString(s, "") }

// expectRoute is a backend's view of what the route to a peer looks like.
type expectRoute func(peer *testbed.Host, sn netip.Prefix) string

// meshSuite: ping mesh across 3 hosts, a 4th host joining, a lease deleted
// with etcdctl, and a route deleted by hand coming back.
func meshSuite(t *testing.T, backend string, want expectRoute) {
	meshSuiteWith(t, backend, meshChecks{want: want})
}

// meshChecks adapt the mesh suite to a backend.
type meshChecks struct {
	// want is the route to a peer. nil means the backend has no per-peer
	// route (udp): a host has programmed a peer when its pod reaches the
	// peer's pod, and has dropped it when pings get ICMP net unreachable.
	want expectRoute
	// needsDaemon: the data plane is in the daemon (udp), so traffic stops
	// with it; the suite checks it flows again after the restart instead.
	needsDaemon bool
	// handRoute, when valid, is the route deleted by hand, expected back
	// containing handWant (default: the route to the new host's subnet).
	handRoute netip.Prefix
	handWant  string
	// dropped, when set, tells that h no longer serves the departed host
	// (for a backend whose data plane drops such traffic silently).
	dropped func(ctx context.Context, h, gone *testbed.Host, sn netip.Prefix) bool
}

func meshSuiteWith(t *testing.T, backend string, m meshChecks) {
	want := m.want
	requireTestbed(t)
	ctx := ctxFor(t, 3*time.Minute)
	tb := newCluster(t, ctx, backend, 3, 2, testbed.Options{}, "--reconcile-period", "2s")
	hosts := tb.Hosts()
	pingMesh(t, ctx, tb)
	for _, h := range hosts {
		for _, p := range hosts {
			if h == p || want == nil {
				continue
			}
			sn := leaseSubnet(t, ctx, p)
			if got := routeTo(ctx, h, sn); !strings.Contains(got, want(p, sn)) {
				t.Errorf("%s: route to %s is %q, want it to contain %q", h.Name, sn, got, want(p, sn))
			}
		}
	}

	// A 4th host joins: every other host routes to it within 2 s of its lease.
	h4, err := tb.AddHost(ctx, testbed.HostOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := h4.StartDaemon(ctx, "--reconcile-period", "2s"); err != nil {
		t.Fatal(err)
	}
	sn4 := waitLease(t, ctx, tb, h4.Addr)
	programmed := func(h *testbed.Host) bool { return strings.Contains(routeTo(ctx, h, sn4), want(h4, sn4)) }
	if want == nil {
		if err := h4.AddPods(ctx, 2); err != nil {
			t.Fatal(err)
		}
		programmed = func(h *testbed.Host) bool { return h.Pods[0].Ping(ctx, h4.Pods[0].Addr, 1) == nil }
	}
	for _, h := range hosts {
		took := waitFor(t, h.Name+" routes to the new host", 2*time.Second, func() bool { return programmed(h) })
		t.Logf("%s programmed the new host %s in %v", h.Name, sn4, took.Round(time.Millisecond))
	}
	if want != nil {
		if err := h4.AddPods(ctx, 2); err != nil {
			t.Fatal(err)
		}
	}
	pingMesh(t, ctx, tb)

	// A daemon stopped (SIGTERM) leaves its data plane in place: pods keep
	// reaching each other, and the restarted daemon gets the same subnet.
	sn1 := leaseSubnet(t, ctx, hosts[0])
	if err := hosts[0].StopDaemon(); err != nil {
		t.Fatal(err)
	}
	if m.needsDaemon {
		t.Logf("%s: the data plane stops with the daemon; checking that it comes back after the restart", backend)
	} else {
		if err := hosts[0].Pods[0].Ping(ctx, hosts[1].Pods[0].Addr, 3); err != nil {
			t.Fatalf("traffic broke while the daemon was stopped: %v", err)
		}
		if err := hosts[1].Pods[0].Ping(ctx, hosts[0].Pods[0].Addr, 3); err != nil {
			t.Fatalf("traffic broke while the daemon was stopped: %v", err)
		}
	}
	if err := hosts[0].StartDaemon(ctx, "--reconcile-period", "2s"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "restarted daemon rewrites subnet.env", 20*time.Second, func() bool {
		return strings.Count(hosts[0].Log(), `msg="lease ready"`) == 2
	})
	if got := leaseSubnet(t, ctx, hosts[0]); got != sn1 {
		t.Fatalf("restart changed the subnet from %s to %s", sn1, got)
	}
	if m.needsDaemon {
		pingMesh(t, ctx, tb)
	}

	// A route deleted by hand comes back at the next reconcile (2 s here).
	handRoute, handWant := sn4, ""
	if want != nil {
		handWant = want(h4, sn4)
	}
	if m.handRoute.IsValid() {
		handRoute, handWant = m.handRoute, m.handWant
	}
	if _, err := hosts[0].Exec(ctx, "ip", "route", "del", handRoute.String()); err != nil {
		t.Fatal(err)
	}
	took := waitFor(t, "hand-deleted route restored", 5*time.Second, func() bool {
		return strings.Contains(routeTo(ctx, hosts[0], handRoute), handWant)
	})
	t.Logf("hand-deleted route restored after %v", took.Round(time.Millisecond))

	// The 4th host is decommissioned: daemon stopped, lease deleted with
	// etcdctl. Every other host drops its route within 2 s.
	if err := h4.StopDaemon(); err != nil {
		t.Fatal(err)
	}
	key := "/coreos.com/network/subnets/" + strings.ReplaceAll(sn4.String(), "/", "-")
	if out, err := tb.Etcdctl(ctx, "del", key); err != nil || strings.TrimSpace(out) != "1" {
		t.Fatalf("etcdctl del %s: %q %v", key, out, err)
	}
	dropped := func(h *testbed.Host) bool { return routeTo(ctx, h, sn4) == "" }
	switch {
	case m.dropped != nil:
		dropped = func(h *testbed.Host) bool { return m.dropped(ctx, h, h4, sn4) }
	case want == nil:
		dropped = func(h *testbed.Host) bool {
			out, _ := h.Pods[0].Exec(ctx, "ping", "-c", "1", "-W", "1", h4.Pods[0].Addr.String())
			return strings.Contains(out, "Net Unreachable")
		}
	}
	for _, h := range hosts {
		took := waitFor(t, h.Name+" drops the departed host", 2*time.Second, func() bool { return dropped(h) })
		t.Logf("%s dropped %s in %v", h.Name, sn4, took.Round(time.Millisecond))
	}
	for _, h := range hosts {
		if strings.Contains(h.Log(), "level=ERROR") {
			t.Errorf("%s logged errors:\n%s", h.Name, h.Log())
		}
	}
}

// waitLease waits until etcd holds a lease for the host address and
// returns its subnet.
func waitLease(t *testing.T, ctx context.Context, tb *testbed.Testbed, addr netip.Addr) netip.Prefix {
	t.Helper()
	var sn netip.Prefix
	waitFor(t, "lease of "+addr.String()+" in etcd", 20*time.Second, func() bool {
		out, err := tb.Etcdctl(ctx, "get", "--prefix", "/coreos.com/network/subnets/")
		if err != nil {
			return false
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		for i := 0; i+1 < len(lines); i += 2 {
			if strings.Contains(lines[i+1], `"PublicIP":"`+addr.String()+`"`) {
				k := lines[i][strings.LastIndex(lines[i], "/")+1:]
				k, _, _ = strings.Cut(k, "&")
				sn = netip.MustParsePrefix(strings.Replace(k, "-", "/", 1))
				return true
			}
		}
		return false
	})
	return sn
}
