package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
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
	tb := newCluster(t, ctx, `{"Type":"vxlan"}`, 3, 1, testbed.Options{})
	pingMesh(t, ctx, tb)
	s := startMeshStreams(t, ctx, tb, "0.01", podAddr4)
	hosts := tb.Hosts()
	x := startTransfer(t, ctx, hosts[0].Pods[0], hosts[2].Pods[0], 4<<20)
	for i, typ := range liveSwitchOrder {
		took := switchCluster(t, ctx, tb, netconf(`{"Type":"`+typ+`"}`), typ, i+1)
		t.Logf("switch to %s: every host switched %v after the put", typ, took.Round(time.Millisecond))
		waitFor(t, "only the "+typ+" backend's devices and routes left", 10*time.Second, func() bool {
			return onlyBackend(ctx, tb, typ) == ""
		})
		time.Sleep(time.Second) // traffic on the new backend alone
	}
	x.finish(t)
	s.stop(t)
	if t.Failed() {
		tb.Dump(ctx, t.Logf)
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
		time.Sleep(3 * time.Second)
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
