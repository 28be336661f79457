package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/flanneld-go/flannel/e2e/testbed"
)

// A live backend switch: the operator puts a net-conf with another
// Backend, and every host moves over while pods keep reaching each other.
// vxlan -> host-gw -> udp -> vxlan on 3 hosts, with ping streams every
// 10 ms between pods of every pair of hosts and a TCP transfer running
// through all of it: after each put every host has re-published its lease
// with the new type and only the new backend's devices and proto 98
// routes are left; no ping is lost and the transfer arrives intact.
func TestLiveSwitch(t *testing.T) {
	ctx := ctxFor(t, 4*time.Minute)
	tb := newCluster(t, ctx, `{"Type":"vxlan"}`, 3, 1, testbed.Options{}, "--healthz-port", "9100", "--healthz-ip", "127.0.0.1")
	pingMesh(t, ctx, tb)
	s := startMeshStreams(t, ctx, tb, "0.01", podAddr4)
	hosts := tb.Hosts()
	x := startTransfer(t, ctx, hosts[0].Pods[0], hosts[2].Pods[0], 4<<20)
	for i, typ := range liveSwitchOrder {
		took := switchCluster(t, ctx, tb, netconf(`{"Type":"`+typ+`"}`), typ, i+1)
		t.Logf("switch to %s: every host switched %v after the put", typ, took.Round(time.Millisecond))
		waitFor(t, "only the "+typ+" backend's devices and routes left", 15*time.Second, func() bool {
			return onlyBackend(ctx, tb, typ) == ""
		})
		time.Sleep(time.Second) // traffic on the new backend alone
	}
	x.finish(t)
	s.stop(t)
	for _, h := range hosts {
		// The switches' own changes (devices made and retired, parts
		// moved between members) are not drift.
		if n := strings.Count(h.Log(), "were changed by someone else"); n != 0 {
			t.Errorf("%s logged drift %d times during the switches", h.Name, n)
		}
	}
	_, metrics := get(ctx, hosts[0], "/metrics")
	for _, want := range []string{`flannel_backend_switches_total{result="ok"} 3`, `flannel_peers_by_backend{backend="vxlan"} 2`,
		`flannel_backend_switches_total{result="refused"} 0`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics of h1 lacks %q", want)
		}
	}
	if !regexp.MustCompile(`(?m)^flannel_backend_switch_duration_seconds [0-9.e-]+$`).MatchString(metrics) ||
		strings.Contains(metrics, "flannel_backend_switch_duration_seconds 0\n") {
		t.Error("/metrics of h1 has no duration of the last switch")
	}
	if t.Failed() {
		dropCounters(ctx, t, tb)
		tb.Dump(ctx, t.Logf)
	}
}

// dropCounters logs where the kernel counted drops, to tell a lost ping's
// host and cause.
func dropCounters(ctx context.Context, t *testing.T, tb *testbed.Testbed) {
	for _, h := range tb.Hosts() {
		out, _ := h.Exec(ctx, "sh", "-c", "grep -A1 '^Udp:' /proc/net/snmp; ip -s -o link | grep -E 'flannel|eth0|cni0|veth' | awk '{print $2, $0}' | cut -c1-400")
		t.Logf("%s drop counters:\n%s", h.Name, out)
	}
}

// switchCluster puts conf and waits until every host logged its nth
// switch and every lease in etcd advertises typ; it returns the time
// from the put to the last host.
func switchCluster(t *testing.T, ctx context.Context, tb *testbed.Testbed, conf, typ string, nth int) time.Duration {
	t.Helper()
	start := time.Now()
	if err := tb.PutNetConfig(ctx, conf); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "every host switched to "+typ, 20*time.Second, func() bool {
		for _, h := range tb.Hosts() {
			if countIn(h, `msg="backend switched"`) < nth {
				return false
			}
		}
		return leaseTypes(ctx, tb) == strings.TrimSuffix(strings.Repeat(typ+" ", len(tb.Hosts())), " ")
	})
	return time.Since(start)
}

// leaseTypes lists the BackendType of every lease in etcd, in key order.
func leaseTypes(ctx context.Context, tb *testbed.Testbed) string {
	out, err := tb.Etcdctl(ctx, "get", "--prefix", "/coreos.com/network/subnets/", "--print-value-only")
	if err != nil {
		return err.Error()
	}
	var types []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var v struct{ BackendType string }
		if json.Unmarshal([]byte(line), &v) == nil {
			types = append(types, v.BackendType)
		}
	}
	return strings.Join(types, " ")
}

// onlyBackend says what on some host is not typ's alone ("" when every
// host holds exactly typ's devices and proto 98 routes).
func onlyBackend(ctx context.Context, tb *testbed.Testbed, typ string) string {
	devs := map[string][]string{"host-gw": nil, "vxlan": {"flannel.1"}, "udp": {"flannel0"}}
	for _, h := range tb.Hosts() {
		links, _ := h.Exec(ctx, "ip", "-o", "link", "show")
		for _, d := range []string{"flannel.1", "flannel0"} {
			want := strings.Contains(strings.Join(devs[typ], " "), d)
			if has := strings.Contains(links, ": "+d+":") || strings.Contains(links, ": "+d+"@"); has != want {
				return fmt.Sprintf("%s: device %s present=%v", h.Name, d, has)
			}
		}
		out, _ := h.Exec(ctx, "ip", "route", "show", "proto", "98")
		routes := strings.Split(strings.TrimSpace(out), "\n")
		if bad := routesOf(typ, routes, len(tb.Hosts())-1); bad != "" {
			return h.Name + ": " + bad + "\n" + out
		}
	}
	return ""
}

// routesOf checks the proto 98 routes of a host on backend typ with the
// given number of peers.
func routesOf(typ string, routes []string, peers int) string {
	var match func(string) bool
	want := peers
	switch typ {
	case "host-gw":
		match = func(r string) bool { return strings.Contains(r, " via ") && strings.Contains(r, "dev eth0") }
	case "vxlan":
		match = func(r string) bool { return strings.Contains(r, "dev flannel.1") && strings.Contains(r, "onlink") }
	case "udp":
		match, want = func(r string) bool { return strings.Contains(r, "dev flannel0") }, 1
	}
	n := 0
	for _, r := range routes {
		if strings.HasPrefix(r, "blackhole") || r == "" {
			continue
		}
		if !match(r) {
			return "a route not of " + typ + ": " + r
		}
		n++
	}
	if n != want {
		return fmt.Sprintf("%d routes of %s, want %d", n, typ, want)
	}
	return ""
}

// Dual-stack: host-gw -> vxlan -> host-gw with IPv6 pods. The pods are
// created on host-gw (MTU 1500), so after the switch to vxlan (1450) their
// TCP transfer relies on path MTU discovery through the host.
func TestLiveSwitchDualStack(t *testing.T) {
	ctx := ctxFor(t, 4*time.Minute)
	conf := func(typ string) string {
		return `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"` + typ + `"}}`
	}
	tb := testbed.NewT(t, testbed.Options{Hosts: 3, PodsPerHost: 1, IPv6: true})
	if err := tb.PutNetConfig(ctx, conf("host-gw")); err != nil {
		t.Fatal(err)
	}
	if err := tb.StartDaemons(ctx); err != nil {
		t.Fatal(err)
	}
	pingMesh(t, ctx, tb)
	pingMesh6(t, tb)
	s4 := startMeshStreams(t, ctx, tb, "0.01", podAddr4)
	s6 := startMeshStreams(t, ctx, tb, "0.01", func(p *testbed.Pod) netip.Addr { return p.Addr6 })
	hosts := tb.Hosts()
	x := startTransfer(t, ctx, hosts[0].Pods[0], hosts[1].Pods[0], 4<<20)
	for i, typ := range []string{"vxlan", "host-gw"} {
		took := switchCluster(t, ctx, tb, conf(typ), typ, i+1)
		t.Logf("switch to %s: every host switched %v after the put", typ, took.Round(time.Millisecond))
		time.Sleep(6 * time.Second) // past the old backend's retirement
	}
	if !strings.Contains(hosts[0].Log(), "the new backend's MTU is smaller") {
		t.Error("the switch to vxlan did not log that running pods keep the larger MTU")
	}
	x.finish(t)
	s4.stop(t)
	s6.stop(t)
	if t.Failed() {
		tb.Dump(ctx, t.Logf)
	}
}

var liveSwitchOrder = []string{"host-gw", "udp", "vxlan"}

// Changes that cannot be applied live, invalid documents and a switch to
// wireguard are refused with one error line on every host; /readyz says
// why, the running backend and its data plane stay (no ping lost), and
// flanneld config check says which differences would apply live. Putting
// the running net-conf back makes the hosts ready again.
func TestLiveSwitchRefused(t *testing.T) {
	ctx := ctxFor(t, 2*time.Minute)
	tb := newCluster(t, ctx, `{"Type":"vxlan"}`, 2, 1, testbed.Options{}, "--healthz-port", "9100", "--healthz-ip", "127.0.0.1")
	pingMesh(t, ctx, tb)
	hosts := tb.Hosts()
	s := startMeshStreams(t, ctx, tb, "0.01", podAddr4)
	renumbered := `{"Network":"10.245.0.0/16","Backend":{"Type":"host-gw"}}`
	file := filepath.Join(tb.WorkDir(), "renumbered.json")
	if err := os.WriteFile(file, []byte(renumbered), 0o644); err != nil {
		t.Fatal(err)
	}
	out, _ := hosts[0].Exec(ctx, tb.FlanneldBin(), "config", "check", "--etcd-endpoints", tb.EtcdEndpoint(), "--this-host=false", file)
	for _, want := range []string{"Network: 10.244.0.0/16 -> 10.245.0.0/16: needs a restart", "Backend.Type: vxlan -> host-gw: applies live"} {
		if !strings.Contains(out, want) {
			t.Errorf("config check does not say %q:\n%s", want, out)
		}
	}
	for i, c := range []struct{ conf, log, readyz string }{
		{renumbered, "cannot change while the cluster runs", "Network"},
		{`{"Network":`, "the new net-conf is invalid", "invalid"},
		{netconf(`{"Type":"wireguard"}`), "is not applied live", "wireguard"},
	} {
		if err := tb.PutNetConfig(ctx, c.conf); err != nil {
			t.Fatal(err)
		}
		for _, h := range hosts {
			waitFor(t, h.Name+" refuses "+c.conf, 10*time.Second, func() bool {
				return countIn(h, `msg="net-conf change refused"`) == i+1 && strings.Contains(h.Log(), c.log)
			})
			code, body := get(ctx, h, "/readyz")
			if code != 503 || !strings.Contains(body, c.readyz) {
				t.Errorf("%s /readyz after %s: %d %q, want 503 naming %s", h.Name, c.conf, code, body, c.readyz)
			}
		}
	}
	if got := leaseTypes(ctx, tb); got != "vxlan vxlan" {
		t.Errorf("leases %s after the refusals, want vxlan", got)
	}
	if bad := onlyBackend(ctx, tb, "vxlan"); bad != "" {
		t.Errorf("data plane changed by a refused net-conf: %s", bad)
	}
	if err := tb.PutNetConfig(ctx, netconf(`{"Type":"vxlan"}`)); err != nil {
		t.Fatal(err)
	}
	for _, h := range hosts {
		waitFor(t, h.Name+" ready again", 10*time.Second, func() bool { c, _ := get(ctx, h, "/readyz"); return c == 200 })
	}
	s.stop(t)
}

// The restart path: hosts that read the net-conf from a file (as older
// versions read the key) switch when restarted, one at a time. Each
// restarted host publishes host-gw and keeps reaching the peers still on
// vxlan by vxlan, and they reach it by host-gw: no ping between pods of
// any pair is lost, and once all are restarted only host-gw is left.
func TestSwitchByRestart(t *testing.T) {
	ctx := ctxFor(t, 3*time.Minute)
	tb := testbed.NewT(t, testbed.Options{Hosts: 3, PodsPerHost: 1})
	write := func(name, typ string) string {
		p := filepath.Join(tb.WorkDir(), name)
		if err := os.WriteFile(p, []byte(netconf(`{"Type":"`+typ+`"}`)), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	vx, hg := write("vxlan.json", "vxlan"), write("host-gw.json", "host-gw")
	if err := tb.StartDaemons(ctx, "--net-config-path", vx); err != nil {
		t.Fatal(err)
	}
	pingMesh(t, ctx, tb)
	s := startMeshStreams(t, ctx, tb, "0.01", podAddr4)
	for i, h := range tb.Hosts() {
		if err := h.StopDaemon(); err != nil {
			t.Fatal(err)
		}
		if err := h.StartDaemon(ctx, "--net-config-path", hg); err != nil {
			t.Fatal(err)
		}
		want := strings.Repeat("host-gw ", i+1) + strings.Repeat("vxlan ", len(tb.Hosts())-i-1)
		waitFor(t, h.Name+" restarted on host-gw", 20*time.Second, func() bool {
			return countIn(h, `msg="lease ready"`) == 2 && leaseTypesByHost(ctx, tb)+" " == want
		})
		time.Sleep(time.Second) // a mixed cluster for a while
	}
	waitFor(t, "only host-gw left", 10*time.Second, func() bool { return onlyBackend(ctx, tb, "host-gw") == "" })
	s.stop(t)
	if t.Failed() {
		tb.Dump(ctx, t.Logf)
	}
}

// leaseTypesByHost lists each host's lease type, in host order.
func leaseTypesByHost(ctx context.Context, tb *testbed.Testbed) string {
	var out []string
	for _, h := range tb.Hosts() {
		v, err := tb.Etcdctl(ctx, "get", "--prefix", "/coreos.com/network/subnets/", "--print-value-only")
		if err != nil {
			return err.Error()
		}
		typ := "?"
		for _, line := range strings.Split(strings.TrimSpace(v), "\n") {
			var l struct{ PublicIP, BackendType string }
			if json.Unmarshal([]byte(line), &l) == nil && l.PublicIP == h.Addr.String() {
				typ = l.BackendType
			}
		}
		out = append(out, typ)
	}
	return strings.Join(out, " ")
}
