package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flanneld-go/flannel/e2e/testbed"
)

const vxlanBackend = `{"Type":"vxlan"}`

func vxlanRoute(_ *testbed.Host, sn netip.Prefix) string {
	return sn.String() + " via " + sn.Addr().String() + " dev flannel.1 proto 98 onlink"
}

func TestVXLANMesh(t *testing.T) { meshSuite(t, vxlanBackend, vxlanRoute) }

// TestVXLANSelfHealing: neighbour, FDB entries and the route deleted or
// changed by hand come back within two seconds, with the default
// --reconcile-period: the kernel watch sees them go (the periodic full
// comparison is then every 5 minutes).
func TestVXLANSelfHealing(t *testing.T) {
	requireTestbed(t)
	ctx := ctxFor(t, 2*time.Minute)
	tb := newCluster(t, ctx, vxlanBackend, 2, 1, testbed.Options{}, "--healthz-port", "9100", "--healthz-ip", "127.0.0.1")
	h1, h2 := tb.Hosts()[0], tb.Hosts()[1]
	sn2 := leaseSubnet(t, ctx, h2)
	mac2 := vtepMAC(t, ctx, tb, sn2)
	if err := h1.Pods[0].WaitPing(ctx, h2.Pods[0].Addr); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the kernel watched", 5*time.Second, func() bool {
		return strings.Contains(h1.Log(), "watching the kernel's tables for changes to our entries")
	})
	restored := func() bool {
		n, _ := h1.Exec(ctx, "ip", "neigh", "show", "dev", "flannel.1")
		f, _ := h1.Exec(ctx, "bridge", "fdb", "show", "dev", "flannel.1")
		return strings.Contains(n, sn2.Addr().String()+" lladdr "+mac2+" PERMANENT") &&
			strings.Contains(f, mac2+" dst "+h2.Addr.String()+" self permanent") &&
			strings.Contains(routeTo(ctx, h1, sn2), vxlanRoute(h2, sn2))
	}
	for _, tamper := range [][]string{
		{"ip", "neigh", "del", sn2.Addr().String(), "dev", "flannel.1"},
		{"bridge", "fdb", "del", mac2, "dev", "flannel.1", "dst", h2.Addr.String()},
		{"ip", "route", "del", sn2.String()},
		{"ip", "route", "replace", sn2.String(), "dev", "lo"},
		{"ip", "link", "set", "flannel.1", "down"},
	} {
		if out, err := h1.Exec(ctx, tamper...); err != nil {
			t.Fatalf("%s: %v: %s", strings.Join(tamper, " "), err, out)
		}
		took := waitFor(t, "restored after "+strings.Join(tamper, " "), 2*time.Second, restored)
		t.Logf("%s: restored in %v", strings.Join(tamper, " "), took.Round(time.Millisecond))
		time.Sleep(driftGap) // one repair per second at most
	}
	if err := h1.Pods[0].Ping(ctx, h2.Pods[0].Addr, 3); err != nil {
		t.Fatal(err)
	}
	_, metrics := get(ctx, h1, "/metrics")
	for _, want := range []string{"flannel_kernel_watch_active 1", "flannel_kernel_drift_total 5"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics of h1 lacks %q", want)
		}
	}
	if n := strings.Count(h1.Log(), "kernel entries of ours were changed by someone else"); n != 5 {
		t.Errorf("%d drift lines in h1's log, want 5 (one per change by hand)", n)
	}
}

// driftGap separates changes by hand in the self-healing tests: the daemon
// repairs drift once a second at most.
const driftGap = 1100 * time.Millisecond

// vtepMAC reads a lease's VtepMAC from etcd with etcdctl.
func vtepMAC(t *testing.T, ctx context.Context, tb *testbed.Testbed, sn netip.Prefix) string {
	t.Helper()
	out, err := tb.Etcdctl(ctx, "get", "--print-value-only", "/coreos.com/network/subnets/"+sn.Addr().String()+"-"+strconv.Itoa(sn.Bits()))
	if err != nil {
		t.Fatal(err)
	}
	var v struct{ BackendData struct{ VtepMAC string } }
	if err := json.Unmarshal([]byte(out), &v); err != nil || v.BackendData.VtepMAC == "" {
		t.Fatalf("lease value %q: %v", out, err)
	}
	return v.BackendData.VtepMAC
}

// TestVXLANSegments: hosts on two L2 segments joined by a router reach each
// other over VXLAN; with DirectRouting, same-segment peers get direct
// routes and the other segment goes through the tunnel.
func TestVXLANSegments(t *testing.T) {
	for _, direct := range []bool{false, true} {
		t.Run(fmt.Sprintf("DirectRouting=%t", direct), func(t *testing.T) {
			requireTestbed(t)
			ctx := ctxFor(t, 2*time.Minute)
			be := fmt.Sprintf(`{"Type":"vxlan","DirectRouting":%t}`, direct)
			tb := newCluster(t, ctx, be, 2, 1, testbed.Options{})
			if err := tb.AddSegment(ctx); err != nil {
				t.Fatal(err)
			}
			far, err := tb.AddHost(ctx, testbed.HostOptions{Segment: 2})
			if err != nil {
				t.Fatal(err)
			}
			if err := far.StartDaemon(ctx); err != nil {
				t.Fatal(err)
			}
			if err := far.AddPods(ctx, 1); err != nil {
				t.Fatal(err)
			}
			pingMesh(t, ctx, tb)
			h1, h2 := tb.Hosts()[0], tb.Hosts()[1]
			snFar, sn2 := leaseSubnet(t, ctx, far), leaseSubnet(t, ctx, h2)
			if r := routeTo(ctx, h1, snFar); !strings.Contains(r, vxlanRoute(far, snFar)) {
				t.Errorf("h1 -> far segment: %q, want the tunnel", r)
			}
			wantNear := vxlanRoute(h2, sn2)
			if direct {
				wantNear = hostGWRoute(h2, sn2)
			}
			if r := routeTo(ctx, h1, sn2); !strings.Contains(r, wantNear) {
				t.Errorf("h1 -> same segment: %q, want %q", r, wantNear)
			}
			// The traffic really takes that path: count encapsulated
			// packets on the underlay while pinging the same-segment pod.
			out, err := h1.Exec(ctx, "sh", "-c", "ip -s link show flannel.1 | awk 'f{print $2; exit} /TX:/{f=1}'")
			if err != nil {
				t.Fatal(err)
			}
			before := strings.TrimSpace(out)
			if err := h1.Pods[0].Ping(ctx, h2.Pods[0].Addr, 5); err != nil {
				t.Fatal(err)
			}
			out, _ = h1.Exec(ctx, "sh", "-c", "ip -s link show flannel.1 | awk 'f{print $2; exit} /TX:/{f=1}'")
			after := strings.TrimSpace(out)
			tunnelUsed := before != after
			if tunnelUsed == direct {
				t.Errorf("same-segment traffic through the tunnel: %t (tx packets %s -> %s), want %t", tunnelUsed, before, after, !direct)
			}
		})
	}
}

// TestVXLANRestartNoLoss: a daemon restart keeps the VtepMAC and the device,
// and a 10 ms ping stream across it loses nothing.
func TestVXLANRestartNoLoss(t *testing.T) {
	requireTestbed(t)
	ctx := ctxFor(t, 2*time.Minute)
	tb := newCluster(t, ctx, vxlanBackend, 2, 1, testbed.Options{})
	h1, h2 := tb.Hosts()[0], tb.Hosts()[1]
	sn1 := leaseSubnet(t, ctx, h1)
	mac := vtepMAC(t, ctx, tb, sn1)
	idx, _ := h1.Exec(ctx, "cat", "/sys/class/net/flannel.1/ifindex")
	if err := h2.Pods[0].WaitPing(ctx, h1.Pods[0].Addr); err != nil {
		t.Fatal(err)
	}
	type result struct {
		out string
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, err := h2.Pods[0].Exec(ctx, "ping", "-i", "0.01", "-w", "5", "-W", "1", h1.Pods[0].Addr.String())
		done <- result{out, err}
	}()
	time.Sleep(time.Second)
	if err := h1.StopDaemon(); err != nil {
		t.Fatal(err)
	}
	if err := h1.StartDaemon(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "restarted daemon ready", 20*time.Second, func() bool { return strings.Count(h1.Log(), `msg="lease ready"`) == 2 })
	r := <-done
	t.Logf("ping across the restart: %s", lastLines(r.out, 2))
	if r.err != nil || !strings.Contains(r.out, " 0% packet loss") {
		t.Errorf("packets lost across the restart: %v\n%s", r.err, lastLines(r.out, 3))
	}
	if got := vtepMAC(t, ctx, tb, sn1); got != mac {
		t.Errorf("VtepMAC changed across the restart: %s -> %s", mac, got)
	}
	if got, _ := h1.Exec(ctx, "cat", "/sys/class/net/flannel.1/ifindex"); got != idx {
		t.Errorf("device re-created across the restart (ifindex %s -> %s)", idx, got)
	}
	if got := leaseSubnet(t, ctx, h1); got != sn1 {
		t.Errorf("subnet changed: %s -> %s", sn1, got)
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// TestBackendSwitch: host-gw -> vxlan -> host-gw by changing the net-conf
// and restarting the daemons one by one, as Documentation/backends.md
// describes; once all are restarted, pods reach each other again and
// nothing of the old backend is left.
func TestBackendSwitch(t *testing.T) {
	requireTestbed(t)
	ctx := ctxFor(t, 3*time.Minute)
	tb := newCluster(t, ctx, hostGW, 3, 1, testbed.Options{})
	pingMesh(t, ctx, tb)
	subnets := map[string]netip.Prefix{}
	for _, h := range tb.Hosts() {
		subnets[h.Name] = leaseSubnet(t, ctx, h)
	}
	restartAll := func(backend string) {
		t.Helper()
		if err := tb.PutNetConfig(ctx, netconf(backend)); err != nil {
			t.Fatal(err)
		}
		for _, h := range tb.Hosts() {
			n := strings.Count(h.Log(), `msg="lease ready"`)
			if err := h.StopDaemon(); err != nil {
				t.Fatal(err)
			}
			if err := h.StartDaemon(ctx); err != nil {
				t.Fatal(err)
			}
			waitFor(t, h.Name+" restarted", 20*time.Second, func() bool { return strings.Count(h.Log(), `msg="lease ready"`) == n+1 })
		}
	}
	check := func(typ string, want expectRoute) {
		t.Helper()
		pingMesh(t, ctx, tb)
		for _, h := range tb.Hosts() {
			if got := leaseSubnet(t, ctx, h); got != subnets[h.Name] {
				t.Errorf("%s: subnet changed %s -> %s", h.Name, subnets[h.Name], got)
			}
			routes, _ := h.Exec(ctx, "ip", "route", "show", "proto", "98")
			routes = withoutNhid(routes)
			if n := strings.Count(strings.TrimSpace(routes), "\n") + 1; n != 2 {
				t.Errorf("%s: %d routes of ours, want 2:\n%s", h.Name, n, routes)
			}
			for _, p := range tb.Hosts() {
				// `ip route show proto 98` omits the proto it filters on.
				line := strings.Replace(want(p, subnets[p.Name]), " proto 98", "", 1)
				if p != h && !strings.Contains(routes, line) {
					t.Errorf("%s: no %s route to %s:\n%s", h.Name, typ, p.Name, routes)
				}
			}
			links, _ := h.Exec(ctx, "ip", "-o", "link", "show")
			if has := strings.Contains(links, "flannel.1"); has != (typ == "vxlan") {
				t.Errorf("%s on %s: flannel.1 present = %t", h.Name, typ, has)
			}
			out, _ := tb.Etcdctl(ctx, "get", "--print-value-only", "/coreos.com/network/subnets/"+strings.Replace(subnets[h.Name].String(), "/", "-", 1))
			if !strings.Contains(out, `"BackendType":"`+typ+`"`) {
				t.Errorf("%s lease not re-published as %s: %s", h.Name, typ, out)
			}
		}
	}
	restartAll(vxlanBackend)
	check("vxlan", vxlanRoute)
	restartAll(hostGW)
	check("host-gw", hostGWRoute)
}
