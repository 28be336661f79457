package e2e_test

import (
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/flanneld-go/flannel/e2e/testbed"
)

func dualNetconf(backend string) string {
	return fmt.Sprintf(`{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":%s}`, backend)
}

// pingMesh6 checks every pod reaches every other pod over IPv6.
func pingMesh6(t *testing.T, tb *testbed.Testbed) {
	t.Helper()
	ctx := ctxFor(t, time.Minute)
	var pods []*testbed.Pod
	for _, h := range tb.Hosts() {
		pods = append(pods, h.Pods...)
	}
	for _, src := range pods {
		for _, dst := range pods {
			if src == dst {
				continue
			}
			if !dst.Addr6.IsValid() {
				t.Fatalf("pod %s has no IPv6 address", dst.Name)
			}
			if err := src.WaitPing(ctx, dst.Addr6); err != nil {
				t.Fatalf("pod %s -> %s over IPv6: %v", src.Name, dst.Addr6, err)
			}
		}
	}
	t.Logf("IPv6 ping mesh: %d pods reachable", len(pods))
}

func TestDualStack(t *testing.T) {
	for _, tc := range []struct{ name, backend, route6 string }{
		{"host-gw", hostGW, "via fd00:50::"},
		{"vxlan", vxlanBackend, "dev flannel-v6.1"},
		{"udp", udpBackend, "fd00:10:244::/56 dev flannel0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			requireTestbed(t)
			ctx := ctxFor(t, 2*time.Minute)
			tb := testbed.NewT(t, testbed.Options{Hosts: 3, PodsPerHost: 1, IPv6: true})
			if err := tb.PutNetConfig(ctx, dualNetconf(tc.backend)); err != nil {
				t.Fatal(err)
			}
			if err := tb.StartDaemons(ctx, "--ip-masq", "--reconcile-period", "1s"); err != nil {
				t.Fatal(err)
			}
			pingMesh(t, ctx, tb)
			pingMesh6(t, tb)
			h1 := tb.Hosts()[0]
			env, _ := h1.WaitSubnetFile(ctx)
			if !strings.HasPrefix(env["FLANNEL_IPV6_SUBNET"], "fd00:10:244:") || env["FLANNEL_IPV6_NETWORK"] != "fd00:10:244::/56" {
				t.Errorf("subnet.env: %v", env)
			}
			r6, _ := h1.Exec(ctx, "ip", "-6", "route", "show", "proto", "98")
			wantRoutes := 2
			if tc.name == "udp" {
				wantRoutes = 1 // one route for the whole IPv6 Network
			}
			if strings.Count(r6, tc.route6) != wantRoutes {
				t.Errorf("IPv6 routes on h1:\n%s", r6)
			}
			h2 := tb.Hosts()[1]
			p1, p2 := h1.Pods[0], h2.Pods[0]

			// Full-size packets with DF set fit in both families: the pod MTU
			// is right for the smaller (IPv6) tunnel.
			mtu := env["FLANNEL_MTU"]
			t.Logf("pod MTU %s", mtu)
			var m int
			fmt.Sscan(mtu, &m)
			if out, err := p1.Exec(ctx, "ping", "-c", "2", "-W", "2", "-M", "do", "-s", fmt.Sprint(m-28), p2.Addr.String()); err != nil {
				t.Errorf("full-size IPv4 ping: %v\n%s", err, out)
			}
			if out, err := p1.Exec(ctx, "ping", "-6", "-c", "2", "-W", "2", "-M", "do", "-s", fmt.Sprint(m-48), p2.Addr6.String()); err != nil {
				t.Errorf("full-size IPv6 ping: %v\n%s", err, out)
			}
			// TCP over IPv6 across hosts: 20 MB with full-size segments.
			srv, err := p2.Start(ctx, "iperf3", "-s", "-1", "-B", p2.Addr6.String())
			if err != nil {
				t.Fatal(err)
			}
			defer srv()
			waitFor(t, "iperf3 server", 5*time.Second, func() bool {
				out, _ := p2.Exec(ctx, "ss", "-ltn")
				return strings.Contains(out, ":5201")
			})
			out, err := p1.Exec(ctx, "iperf3", "-6", "-c", p2.Addr6.String(), "-n", "20M", "-J")
			if err != nil || !strings.Contains(out, `"bytes":	20971520`) && !strings.Contains(out, `"bytes": 20971520`) {
				t.Errorf("iperf3 over IPv6: %v\n%s", err, lastLines(out, 20))
			}

			// Masquerading towards the outside over IPv6 too.
			o, err := tb.AddOutside(ctx)
			if err != nil {
				t.Fatal(err)
			}
			wait, err := o.CaptureSources(ctx, "icmp6 and ip6[40] == 128", 1)
			if err != nil {
				t.Fatal(err)
			}
			if err := p1.WaitPing(ctx, o.Addr6); err != nil {
				t.Fatal(err)
			}
			if srcs, err := wait(); err != nil || len(srcs) != 1 || srcs[0] != h1.Addr6 {
				t.Errorf("outside saw IPv6 sources %v (%v), want %s", srcs, err, h1.Addr6)
			}

			// A hand-deleted IPv6 route comes back.
			sn6 := firstField(r6) // udp: the Network route
			h1.Exec(ctx, "ip", "-6", "route", "del", sn6)
			waitFor(t, "IPv6 route restored", 5*time.Second, func() bool {
				out, _ := h1.Exec(ctx, "ip", "-6", "route", "show", sn6)
				return strings.TrimSpace(out) != ""
			})

			// A departed host's IPv6 entries go too (per-peer backends).
			if tc.name != "udp" {
				h3 := tb.Hosts()[2]
				env3, _ := h3.WaitSubnetFile(ctx)
				sn3v6 := netip.MustParsePrefix(env3["FLANNEL_IPV6_SUBNET"]).Masked()
				sn3 := netip.MustParsePrefix(env3["FLANNEL_SUBNET"]).Masked()
				if out, _ := h1.Exec(ctx, "ip", "-6", "route", "show", sn3v6.String()); strings.TrimSpace(out) == "" {
					t.Fatalf("no IPv6 route to h3's %s before it leaves", sn3v6)
				}
				if err := h3.StopDaemon(); err != nil {
					t.Fatal(err)
				}
				key := fmt.Sprintf("/coreos.com/network/subnets/%s-%d&%s-%d", sn3.Addr(), sn3.Bits(), sn3v6.Addr(), sn3v6.Bits())
				if out, err := tb.Etcdctl(ctx, "del", key); err != nil || strings.TrimSpace(out) != "1" {
					t.Fatalf("etcdctl del %s: %q %v", key, out, err)
				}
				waitFor(t, "h1 drops h3's IPv6 route", 2*time.Second, func() bool {
					out, _ := h1.Exec(ctx, "ip", "-6", "route", "show", sn3v6.String())
					return strings.TrimSpace(out) == ""
				})
				if tc.name == "vxlan" {
					if out, _ := h1.Exec(ctx, "ip", "-6", "neigh", "show", "dev", "flannel-v6.1", "nud", "permanent"); strings.Contains(out, sn3v6.Addr().String()) {
						t.Errorf("h3's IPv6 neighbour entry left:\n%s", out)
					}
				}
			}

			// A restart keeps both subnets.
			before, _ := h1.WaitSubnetFile(ctx)
			if err := h1.StopDaemon(); err != nil {
				t.Fatal(err)
			}
			os.Remove(h1.SubnetFile())
			if err := h1.StartDaemon(ctx, "--ip-masq"); err != nil {
				t.Fatal(err)
			}
			after, err := h1.WaitSubnetFile(ctx)
			if err != nil || after["FLANNEL_SUBNET"] != before["FLANNEL_SUBNET"] || after["FLANNEL_IPV6_SUBNET"] != before["FLANNEL_IPV6_SUBNET"] {
				t.Errorf("restart changed the subnets: %v -> %v (%v)", before, after, err)
			}

			keys, _ := tb.Etcdctl(ctx, "get", "--prefix", "/coreos.com/network/subnets/")
			t.Logf("etcd:\n%s", keys)
			wantLeases := 2 // h3 left above
			if tc.name == "udp" {
				wantLeases = 3
			}
			if strings.Count(keys, "&fd00:10:244:") != wantLeases || strings.Count(keys, `"PublicIPv6":"fd00:50::`) != wantLeases {
				t.Errorf("dual-stack leases in etcd:\n%s", keys)
			}
		})
	}
}

func firstField(s string) string {
	f := strings.Fields(s)
	if len(f) == 0 {
		return ""
	}
	return f[0]
}

// TestDualStackNeedsIPv6Address: a dual-stack net-conf on a host without
// an IPv6 address is refused with a message naming the interface.
func TestDualStackNeedsIPv6Address(t *testing.T) {
	requireTestbed(t)
	ctx := ctxFor(t, time.Minute)
	tb := testbed.NewT(t, testbed.Options{Hosts: 1})
	if err := tb.PutNetConfig(ctx, dualNetconf(hostGW)); err != nil {
		t.Fatal(err)
	}
	h := tb.Hosts()[0]
	if err := h.StartDaemon(ctx); err != nil {
		t.Fatal(err)
	}
	code, err := h.WaitDaemonExit(ctx)
	want := "EnableIPv6 is set but interface eth0 has no global IPv6 address (it has: 192.168.50.11/24)"
	if err != nil || code == 0 || !strings.Contains(h.Log(), want) {
		t.Errorf("exit %d (%v), log:\n%s", code, err, h.Log())
	}
}
