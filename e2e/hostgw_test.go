package e2e_test

import (
	"encoding/json"
	"net/netip"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flanneld-go/flannel/e2e/testbed"
)

const hostGW = `{"Type":"host-gw"}`

func hostGWRoute(peer *testbed.Host, sn netip.Prefix) string {
	return sn.String() + " via " + peer.Addr.String() + " dev eth0 proto 98"
}

func TestHostGWMesh(t *testing.T) { meshSuite(t, hostGW, hostGWRoute) }

// TestHostGWLayout checks what an operator sees in etcd with the real
// etcdctl and with flanneld leases.
func TestHostGWLayout(t *testing.T) {
	requireTestbed(t)
	ctx := ctxFor(t, 2*time.Minute)
	tb := newCluster(t, ctx, hostGW, 2, 0, testbed.Options{})
	for _, h := range tb.Hosts() {
		sn := leaseSubnet(t, ctx, h)
		key := "/coreos.com/network/subnets/" + sn.Addr().String() + "-24"
		out, err := tb.Etcdctl(ctx, "get", key, "--print-value-only")
		if err != nil {
			t.Fatal(err)
		}
		// Upstream's fields in upstream's order, then our host identity
		// (16 hex digits, different on every host).
		want := regexp.MustCompile(`^\{"PublicIP":"` + regexp.QuoteMeta(h.Addr.String()) +
			`","PublicIPv6":null,"BackendType":"host-gw","HostID":"[0-9a-f]{16}"\}$`)
		if !want.MatchString(strings.TrimSpace(out)) {
			t.Errorf("%s value %q, want %s", key, out, want)
		}
		// The key is attached to an etcd lease of 24 h.
		js, err := tb.Etcdctl(ctx, "get", key, "-w", "json")
		if err != nil {
			t.Fatal(err)
		}
		var resp struct {
			Kvs []struct{ Lease int64 }
		}
		if err := json.Unmarshal([]byte(js), &resp); err != nil || len(resp.Kvs) != 1 || resp.Kvs[0].Lease == 0 {
			t.Fatalf("etcdctl json %s: %v", js, err)
		}
		ttl, err := tb.Etcdctl(ctx, "lease", "timetolive", strconv.FormatInt(resp.Kvs[0].Lease, 16))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(ttl, "granted with TTL(86400s)") {
			t.Errorf("lease TTL: %s", ttl)
		}
	}
	out, err := tb.Hosts()[0].Exec(ctx, tb.FlanneldBin(), "leases", "--etcd-endpoints", tb.EtcdEndpoint())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("flanneld leases:\n%s", out)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "SUBNET") {
		t.Fatalf("leases output:\n%s", out)
	}
	for _, h := range tb.Hosts() {
		if !strings.Contains(out, h.Addr.String()+"  host-gw  -") || !strings.Contains(out, "(in 24h0m0s)") && !strings.Contains(out, "(in 23h59m0s)") {
			t.Errorf("leases output lacks %s:\n%s", h.Addr, out)
		}
	}
}

// TestHostGWMasquerade: with --ip-masq a pod reaching a machine outside the
// pod network is seen there with its host's underlay address, while
// pod-to-pod traffic keeps the pod's own address.
func TestHostGWMasquerade(t *testing.T) {
	requireTestbed(t)
	ctx := ctxFor(t, 2*time.Minute)
	tb := newCluster(t, ctx, hostGW, 2, 1, testbed.Options{}, "--ip-masq")
	out, err := tb.AddOutside(ctx)
	if err != nil {
		t.Fatal(err)
	}
	h1, h2 := tb.Hosts()[0], tb.Hosts()[1]
	p1, p2 := h1.Pods[0], h2.Pods[0]

	wait, err := out.CaptureSources(ctx, "icmp[icmptype] == icmp-echo", 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := p1.WaitPing(ctx, out.Addr); err != nil {
		t.Fatalf("pod -> outside: %v", err)
	}
	srcs, err := wait()
	if err != nil || len(srcs) != 1 || srcs[0] != h1.Addr {
		t.Fatalf("outside saw sources %v (%v), want the host address %s", srcs, err, h1.Addr)
	}

	wait, err = p2.CaptureSources(ctx, "icmp[icmptype] == icmp-echo", 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := p1.WaitPing(ctx, p2.Addr); err != nil {
		t.Fatalf("pod -> pod: %v", err)
	}
	srcs, err = wait()
	if err != nil || len(srcs) != 1 || srcs[0] != p1.Addr {
		t.Fatalf("remote pod saw sources %v (%v), want the pod address %s", srcs, err, p1.Addr)
	}
	rules, err := h1.Exec(ctx, "iptables", "-t", "nat", "-S", "FLANNEL-POSTRTG")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("h1 FLANNEL-POSTRTG:\n%s", rules)
	if !strings.Contains(h1.Log(), "msg=\"lease ready\"") {
		t.Errorf("h1 log lacks the lease line:\n%s", h1.Log())
	}
}

// TestHostGWOtherSegment: a host on another L2 segment cannot be served by
// host-gw. Both sides say so clearly, once per peer, and the hosts on the
// same segment keep working.
func TestHostGWOtherSegment(t *testing.T) {
	requireTestbed(t)
	ctx := ctxFor(t, 2*time.Minute)
	tb := newCluster(t, ctx, hostGW, 2, 1, testbed.Options{}, "--reconcile-period", "1s")
	if err := tb.AddSegment(ctx); err != nil {
		t.Fatal(err)
	}
	far, err := tb.AddHost(ctx, testbed.HostOptions{Segment: 2})
	if err != nil {
		t.Fatal(err)
	}
	if err := far.StartDaemon(ctx, "--reconcile-period", "1s"); err != nil {
		t.Fatal(err)
	}
	if err := far.AddPods(ctx, 1); err != nil {
		t.Fatal(err)
	}
	h1, h2 := tb.Hosts()[0], tb.Hosts()[1]
	msg := "peer is not on this host's L2 segment, host-gw cannot route to it; use the vxlan backend"
	waitFor(t, "h1 reports the far host", 5*time.Second, func() bool { return strings.Contains(h1.Log(), msg) })
	waitFor(t, "far host reports h1", 5*time.Second, func() bool { return strings.Contains(far.Log(), msg) })
	time.Sleep(2500 * time.Millisecond) // a few reconciles: still one line per peer
	if n := strings.Count(h1.Log(), msg); n != 1 {
		t.Errorf("h1 logged the L2 problem %d times, want once:\n%s", n, h1.Log())
	}
	if n := strings.Count(far.Log(), msg); n != 2 {
		t.Errorf("far host logged the L2 problem %d times, want once per peer (2):\n%s", n, far.Log())
	}
	if !strings.Contains(h1.Log(), "peer_ip="+far.Addr.String()) {
		t.Errorf("h1's message does not name the peer:\n%s", h1.Log())
	}
	if err := h1.Pods[0].Ping(ctx, h2.Pods[0].Addr, 3); err != nil {
		t.Fatalf("same-segment pods stopped working: %v", err)
	}
	if r := routeTo(ctx, h1, leaseSubnet(t, ctx, far)); r != "" {
		t.Errorf("h1 installed a route to the far host anyway: %s", r)
	}
}

// TestBadNetConf: a daemon started against an invalid net-conf exits
// non-zero with the validation message and changes nothing on its host.
func TestBadNetConf(t *testing.T) {
	requireTestbed(t)
	ctx := ctxFor(t, time.Minute)
	tb := testbed.NewT(t, testbed.Options{Hosts: 1})
	if err := tb.PutNetConfig(ctx, `{"Network":"10.244.0.0/16","SubnetLen":31,"Backend":{"Type":"host-gw"}}`); err != nil {
		t.Fatal(err)
	}
	h := tb.Hosts()[0]
	before, _ := h.Exec(ctx, "sh", "-c", "ip route; ip link; iptables-save; sysctl net.ipv4.ip_forward")
	if err := h.StartDaemon(ctx); err != nil {
		t.Fatal(err)
	}
	code, err := h.WaitDaemonExit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if code == 0 {
		t.Fatalf("daemon exited 0 on a bad config:\n%s", h.Log())
	}
	want := "invalid net-conf at /coreos.com/network/config: SubnetLen: 31 is out of range"
	if !strings.Contains(h.Log(), want) {
		t.Errorf("log lacks %q:\n%s", want, h.Log())
	}
	after, _ := h.Exec(ctx, "sh", "-c", "ip route; ip link; iptables-save; sysctl net.ipv4.ip_forward")
	if before != after {
		t.Errorf("host changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if _, err := testbed.ReadSubnetFile(h.SubnetFile()); err == nil {
		t.Error("a subnet file was written")
	}
	if out, _ := tb.Etcdctl(ctx, "get", "--prefix", "--keys-only", "/coreos.com/network/subnets/"); strings.TrimSpace(out) != "" {
		t.Errorf("a lease was written: %s", out)
	}

	// An unknown backend type is refused the same way, listing the known ones.
	if err := tb.PutNetConfig(ctx, `{"Network":"10.244.0.0/16","Backend":{"Type":"ipip"}}`); err != nil {
		t.Fatal(err)
	}
	if err := h.StartDaemon(ctx); err != nil {
		t.Fatal(err)
	}
	if code, _ := h.WaitDaemonExit(ctx); code == 0 || !strings.Contains(h.Log(), `unknown backend type "ipip"; known types: host-gw`) {
		t.Errorf("exit %d, log:\n%s", code, h.Log())
	}
}

// TestHostGWCarrierLoss: the external interface loses its carrier (the
// switch port goes down) and the kernel takes the host-gw routes with it
// without a notification per route; with the default --reconcile-period
// (a full comparison every 5 minutes) the kernel watch sees the link and
// the routes are back within seconds of the carrier's return.
func TestHostGWCarrierLoss(t *testing.T) {
	requireTestbed(t)
	ctx := ctxFor(t, 2*time.Minute)
	tb := newCluster(t, ctx, hostGW, 2, 1, testbed.Options{})
	h1, h2 := tb.Hosts()[0], tb.Hosts()[1]
	sn2 := leaseSubnet(t, ctx, h2)
	if err := h1.Pods[0].WaitPing(ctx, h2.Pods[0].Addr); err != nil {
		t.Fatal(err)
	}
	port := func(state string) {
		t.Helper()
		if out, err := exec.CommandContext(ctx, "ip", "-n", tb.Prefix()+"-sw", "link", "set", h1.Name, state).CombinedOutput(); err != nil {
			t.Fatalf("switch port %s %s: %v: %s", h1.Name, state, err, out)
		}
	}
	port("down")
	waitFor(t, "the kernel dropping h1's route to h2 without a carrier", 5*time.Second, func() bool {
		return !strings.Contains(routeTo(ctx, h1, sn2), hostGWRoute(h2, sn2))
	})
	time.Sleep(500 * time.Millisecond)
	port("up")
	took := waitFor(t, "h1's route to h2 back after the carrier returned", 5*time.Second, func() bool {
		return strings.Contains(routeTo(ctx, h1, sn2), hostGWRoute(h2, sn2))
	})
	t.Logf("route back %v after the carrier returned", took.Round(time.Millisecond))
	if err := h1.Pods[0].Ping(ctx, h2.Pods[0].Addr, 3); err != nil {
		t.Fatal(err)
	}
}
