package e2e_test

// Interoperability with upstream flannel: one cluster, hosts running our
// flanneld and a host running upstream's, once with each release make
// upstream-flanneld builds (the one pinned in e2e/upstream/go.mod and the
// newest, pinned in e2e/upstream-newest/go.mod). The contract under test
// is everything the two share: the etcd keys and lease JSON, the VXLAN
// device conventions (VNI, port, VtepMAC, neighbour and FDB layout), the
// host-gw routes, the udp wire format and port, and subnet.env.

import (
	"context"
	"encoding/json"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flanneld-go/flannel/e2e/testbed"
)

// upstreamBuild is one upstream flanneld binary the interop tests run.
type upstreamBuild struct {
	name string // the subtest name: the upstream release
	bin  string
}

// upstreamBuilds are the binaries make upstream-flanneld builds: the
// pinned release (bin/upstream/flanneld, e2e/upstream/go.mod) and the
// newest one the module proxy serves (bin/upstream-newest/flanneld,
// e2e/upstream-newest/go.mod), named by the version each prints.
func upstreamBuilds(t *testing.T) []upstreamBuild {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil && !strings.HasPrefix(filepath.Base(dir), "upstream") {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("repository root (go.mod) not found above the working directory")
		}
		dir = parent
	}
	var out []upstreamBuild
	for _, sub := range []string{"upstream", "upstream-newest"} {
		bin := filepath.Join(dir, "bin", sub, "flanneld")
		if _, err := os.Stat(bin); err != nil {
			// make test builds them; a bare go test does not.
			t.Fatalf("upstream flanneld missing (%v): run make upstream-flanneld", err)
		}
		// Upstream prints its version on standard error.
		v, err := exec.Command(bin, "--version").CombinedOutput()
		if err != nil {
			t.Fatalf("%s --version: %v: %s", bin, err, v)
		}
		out = append(out, upstreamBuild{name: strings.TrimSpace(string(v)), bin: bin})
	}
	return out
}

// upstreamBin is the pinned upstream release's binary, for tests that
// need one upstream flanneld, not every release.
func upstreamBin(t *testing.T) string {
	t.Helper()
	return upstreamBuilds(t)[0].bin
}

type leaseValue struct {
	PublicIP, PublicIPv6 string
	BackendType          string
	BackendData          struct {
		VNI     int
		VtepMAC string
	}
	BackendV6Data struct {
		VNI     int
		VtepMAC string
	}
	HostID string // ours only; upstream neither writes nor keeps it
}

// leaseOf reads the lease value of the host with underlay address pub.
func leaseOf(t *testing.T, ctx context.Context, tb *testbed.Testbed, pub netip.Addr) (key string, v leaseValue) {
	t.Helper()
	out, err := tb.Etcdctl(ctx, "get", "--prefix", "/coreos.com/network/subnets/")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	for i := 0; i+1 < len(lines); i += 2 {
		var lv leaseValue
		if json.Unmarshal([]byte(lines[i+1]), &lv) == nil && lv.PublicIP == pub.String() {
			return lines[i], lv
		}
	}
	t.Fatalf("no lease with PublicIP %s in:\n%s", pub, out)
	return "", leaseValue{}
}

// TestInteropUpstream runs every shared backend, and a net-conf without
// Backend (upstream's default, udp), against each upstream build.
func TestInteropUpstream(t *testing.T) {
	requireTestbed(t)
	for _, ub := range upstreamBuilds(t) {
		t.Run(ub.name, func(t *testing.T) { interopUpstream(t, ub.bin) })
	}
}

func interopUpstream(t *testing.T, up string) {
	for _, tc := range []struct {
		name, backend string
		dual          bool
		conf          string // the net-conf, when not netconf(backend)
	}{
		{"vxlan", vxlanBackend, false, ""},
		{"host-gw", hostGW, false, ""},
		{"udp", udpBackend, false, ""},
		{"no-backend", udpBackend, false, `{"Network":"10.244.0.0/16"}`},
		{"vxlan-dualstack", vxlanBackend, true, ""},
		{"host-gw-dualstack", hostGW, true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := ctxFor(t, 3*time.Minute)
			tb := testbed.NewT(t, testbed.Options{Hosts: 3, IPv6: tc.dual})
			conf := netconf(tc.backend)
			switch {
			case tc.conf != "":
				conf = tc.conf
			case tc.dual:
				conf = dualNetconf(tc.backend)
			}
			if err := tb.PutNetConfig(ctx, conf); err != nil {
				t.Fatal(err)
			}
			h1, h2, hu := tb.Hosts()[0], tb.Hosts()[1], tb.Hosts()[2]
			// Ours first, then upstream (ours learns of it from the watch),
			// then ours again (it learns of upstream from the list).
			if err := h1.StartDaemon(ctx); err != nil {
				t.Fatal(err)
			}
			if _, err := h1.WaitSubnetFile(ctx); err != nil {
				t.Fatal(err)
			}
			// Upstream leaves IP forwarding to the host's set-up (ours turns
			// it on): prepare the host as its documentation asks.
			if err := hu.Sysctl(ctx, "net.ipv4.ip_forward", "1"); err != nil {
				t.Fatal(err)
			}
			if tc.dual {
				if err := hu.Sysctl(ctx, "net.ipv6.conf.all.forwarding", "1"); err != nil {
					t.Fatal(err)
				}
			}
			if err := hu.StartDaemonBin(ctx, up); err != nil {
				t.Fatal(err)
			}
			if _, err := hu.WaitSubnetFile(ctx); err != nil {
				t.Fatalf("upstream flanneld wrote no subnet file: %v\n%s", err, hu.Log())
			}
			if err := h2.StartDaemon(ctx); err != nil {
				t.Fatal(err)
			}
			if err := tb.AddPodsAll(ctx, 1); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("upstream flanneld log:\n%s", hu.Log())
				}
			})
			pingMesh(t, ctx, tb)
			if tc.dual {
				pingMesh6(t, tb)
			}
			if tc.conf != "" && !strings.Contains(h1.Log(), "Backend is not set: using the udp backend") {
				t.Errorf("our daemon did not say which default backend it took:\n%s", h1.Log())
			}

			// The lease upstream wrote is one ours reads, and the other way
			// round: same key form, same JSON.
			keyU, lvU := leaseOf(t, ctx, tb, hu.Addr)
			key1, lv1 := leaseOf(t, ctx, tb, h1.Addr)
			t.Logf("upstream's lease %s = %+v", keyU, lvU)
			t.Logf("our lease      %s = %+v", key1, lv1)
			wantTypeU := lv1.BackendType
			if tc.backend == udpBackend {
				wantTypeU = "" // upstream's udp backend publishes no BackendType
			}
			if lvU.BackendType != wantTypeU || strings.Count(keyU, "&") != strings.Count(key1, "&") {
				t.Errorf("leases differ in form: upstream %s %+v, ours %s %+v", keyU, lvU, key1, lv1)
			}
			// Our host identity rides beside upstream's fields; upstream,
			// which reads this lease to reach h1, ignores it.
			if lv1.HostID == "" || lvU.HostID != "" {
				t.Errorf("HostID: ours %q (want one), upstream's %q (want none)", lv1.HostID, lvU.HostID)
			}
			if tc.dual && (lvU.PublicIPv6 != hu.Addr6.String() || lv1.PublicIPv6 != h1.Addr6.String()) {
				t.Errorf("PublicIPv6: upstream %q, ours %q", lvU.PublicIPv6, lv1.PublicIPv6)
			}
			out, err := h1.Exec(ctx, tb.FlanneldBin(), "leases", "--etcd-endpoints", tb.EtcdEndpoint())
			if err != nil || !strings.Contains(out, hu.Addr.String()) {
				t.Errorf("flanneld leases does not list upstream's lease: %v\n%s", err, out)
			}
			t.Logf("flanneld leases:\n%s", out)

			snU := leaseSubnet(t, ctx, hu)
			sn1 := leaseSubnet(t, ctx, h1)
			switch tc.backend {
			case vxlanBackend:
				// Each side programs the other's VTEP exactly as upstream does.
				macU := linkMAC(t, ctx, hu, "flannel.1")
				if lvU.BackendData.VtepMAC != macU || lvU.BackendData.VNI != 1 {
					t.Errorf("upstream's BackendData %+v, its device has %s", lvU.BackendData, macU)
				}
				checkVTEP(t, ctx, h1, "flannel.1", snU.Addr(), macU, hu.Addr)
				checkVTEP(t, ctx, hu, "flannel.1", sn1.Addr(), lv1.BackendData.VtepMAC, h1.Addr)
				if tc.dual {
					mac6U := linkMAC(t, ctx, hu, "flannel-v6.1")
					if lvU.BackendV6Data.VtepMAC != mac6U {
						t.Errorf("upstream's BackendV6Data %+v, its device has %s", lvU.BackendV6Data, mac6U)
					}
					env, _ := hu.WaitSubnetFile(ctx)
					sn6U := netip.MustParsePrefix(env["FLANNEL_IPV6_SUBNET"]).Masked()
					checkVTEP(t, ctx, h1, "flannel-v6.1", sn6U.Addr(), mac6U, hu.Addr6)
					checkDualStackMTU(t, ctx, h1, hu, env["FLANNEL_MTU"])
				}
			case hostGW:
				if r := routeTo(ctx, h1, snU); !strings.Contains(r, "via "+hu.Addr.String()) {
					t.Errorf("our route to upstream's subnet: %q", r)
				}
				if r := routeTo(ctx, hu, sn1); !strings.Contains(r, "via "+h1.Addr.String()) {
					t.Errorf("upstream's route to our subnet: %q", r)
				}
			case udpBackend:
				// Both sides use port 8285 and carry the bare inner packet:
				// a full-size ping crosses in both directions without
				// fragmentation (DF set).
				env, _ := hu.WaitSubnetFile(ctx)
				mtu, _ := strconv.Atoi(env["FLANNEL_MTU"])
				size := strconv.Itoa(mtu - 28)
				for _, p := range [][2]*testbed.Pod{{h1.Pods[0], hu.Pods[0]}, {hu.Pods[0], h1.Pods[0]}} {
					if out, err := p[0].Exec(ctx, "ping", "-c", "2", "-W", "2", "-M", "do", "-s", size, p[1].Addr.String()); err != nil {
						t.Errorf("full-size ping %s -> %s: %v\n%s", p[0].Name, p[1].Name, err, out)
					}
				}
			}

			// A lease upstream gives up (its host leaves) is removed by ours:
			// delete it the way an operator would.
			if err := hu.StopDaemon(); err != nil {
				t.Fatal(err)
			}
			if _, err := tb.Etcdctl(ctx, "del", keyU); err != nil {
				t.Fatal(err)
			}
			if tc.backend != udpBackend {
				waitFor(t, "h1 drops upstream's subnet", 2*time.Second, func() bool { return routeTo(ctx, h1, snU) == "" })
			}
			if err := h1.Pods[0].Ping(ctx, h2.Pods[0].Addr, 2); err != nil {
				t.Errorf("our hosts lost each other after upstream left: %v", err)
			}
		})
	}
}

func linkMAC(t *testing.T, ctx context.Context, h *testbed.Host, dev string) string {
	t.Helper()
	out, err := h.Exec(ctx, "cat", "/sys/class/net/"+dev+"/address")
	if err != nil {
		t.Fatalf("%s: %s: %v", h.Name, dev, err)
	}
	return strings.TrimSpace(out)
}

// checkVTEP checks h has the neighbour and FDB entries of a peer VTEP.
func checkVTEP(t *testing.T, ctx context.Context, h *testbed.Host, dev string, addr netip.Addr, mac string, dst netip.Addr) {
	t.Helper()
	n, _ := h.Exec(ctx, "ip", "neigh", "show", "dev", dev)
	f, _ := h.Exec(ctx, "bridge", "fdb", "show", "dev", dev)
	if !strings.Contains(n, addr.String()+" lladdr "+mac) {
		t.Errorf("%s: no neighbour %s -> %s on %s:\n%s", h.Name, addr, mac, dev, n)
	}
	if !strings.Contains(f, mac+" dst "+dst.String()) {
		t.Errorf("%s: no FDB entry %s dst %s on %s:\n%s", h.Name, mac, dst, dev, f)
	}
}

// TestInteropMigration: a host moves from upstream flanneld to ours and
// back (an operator rolling out this daemon, then rolling back), keeping
// its subnet each time, so its pods keep their addresses and the cluster
// reaches them after each step.
func TestInteropMigration(t *testing.T) {
	requireTestbed(t)
	for _, ub := range upstreamBuilds(t) {
		t.Run(ub.name, func(t *testing.T) { interopMigration(t, ub.bin) })
	}
}

func interopMigration(t *testing.T, up string) {
	for _, tc := range []struct{ name, backend string }{
		{"vxlan", vxlanBackend},
		{"host-gw", hostGW},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := ctxFor(t, 3*time.Minute)
			tb := testbed.NewT(t, testbed.Options{Hosts: 3})
			if err := tb.PutNetConfig(ctx, netconf(tc.backend)); err != nil {
				t.Fatal(err)
			}
			h1, h2, h3 := tb.Hosts()[0], tb.Hosts()[1], tb.Hosts()[2]
			if err := h3.Sysctl(ctx, "net.ipv4.ip_forward", "1"); err != nil {
				t.Fatal(err)
			}
			for _, h := range []*testbed.Host{h1, h2} {
				if err := h.StartDaemon(ctx); err != nil {
					t.Fatal(err)
				}
			}
			if err := h3.StartDaemonBin(ctx, up); err != nil {
				t.Fatal(err)
			}
			if err := tb.AddPodsAll(ctx, 1); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("h3 log:\n%s", h3.Log())
				}
			})
			pingMesh(t, ctx, tb)
			sn := leaseSubnet(t, ctx, h3)

			for i, step := range []struct {
				to    string
				start func() error
			}{
				{"ours", func() error { return h3.StartDaemon(ctx) }},
				{"upstream", func() error { return h3.StartDaemonBin(ctx, up) }},
			} {
				if err := h3.StopDaemon(); err != nil {
					t.Fatal(err)
				}
				os.Remove(h3.SubnetFile()) // the new daemon must write it anew
				if err := step.start(); err != nil {
					t.Fatal(err)
				}
				env, err := h3.WaitSubnetFile(ctx)
				if err != nil {
					t.Fatalf("h3 on %s: no subnet file: %v", step.to, err)
				}
				if got := netip.MustParsePrefix(env["FLANNEL_SUBNET"]).Masked(); got != sn {
					t.Fatalf("h3 moved to %s got subnet %s, had %s", step.to, got, sn)
				}
				start := time.Now()
				pingMesh(t, ctx, tb)
				t.Logf("step %d: h3 now runs %s flanneld, subnet %s kept, mesh whole again in %v", i+1, step.to, sn, time.Since(start).Round(time.Millisecond))
				_, lv := leaseOf(t, ctx, tb, h3.Addr)
				if tc.backend == vxlanBackend && lv.BackendData.VtepMAC != linkMAC(t, ctx, h3, "flannel.1") {
					t.Errorf("h3's lease has VtepMAC %s, its device %s", lv.BackendData.VtepMAC, linkMAC(t, ctx, h3, "flannel.1"))
				}
				// Ours takes over upstream's lease (it names no host) and
				// adds its identity; upstream takes ours over and drops it.
				if (step.to == "ours") != (lv.HostID != "") {
					t.Errorf("h3 on %s: its lease has HostID %q", step.to, lv.HostID)
				}
			}
		})
	}
}

// checkDualStackMTU: our pods get the smaller of the two VXLAN devices'
// MTUs (IPv6's outer header is 20 bytes longer), so a full-size IPv6
// packet from our pod, don't-fragment set, reaches upstream's pod.
// Upstream's own choice (upMTU) is logged, not judged.
func checkDualStackMTU(t *testing.T, ctx context.Context, ours, up *testbed.Host, upMTU string) {
	t.Helper()
	env, err := ours.WaitSubnetFile(ctx)
	if err != nil {
		t.Fatal(err)
	}
	devMTU := func(dev string) int {
		out, err := ours.Exec(ctx, "cat", "/sys/class/net/"+dev+"/mtu")
		if err != nil {
			t.Fatalf("%s: %v", dev, err)
		}
		n, _ := strconv.Atoi(strings.TrimSpace(out))
		return n
	}
	want := min(devMTU("flannel.1"), devMTU("flannel-v6.1"))
	got, _ := strconv.Atoi(env["FLANNEL_MTU"])
	if got != want || want == 0 {
		t.Errorf("our FLANNEL_MTU is %s, want %d: the smaller of flannel.1 and flannel-v6.1", env["FLANNEL_MTU"], want)
	}
	t.Logf("pod MTU: upstream %s, ours %d", upMTU, got)
	from, to := ours.Pods[0], up.Pods[0]
	if out, err := from.Exec(ctx, "ping", "-6", "-c", "2", "-W", "2", "-M", "do", "-s", strconv.Itoa(got-48), to.Addr6.String()); err != nil {
		t.Errorf("full-size IPv6 ping %s -> %s (upstream): %v\n%s", from.Name, to.Name, err, out)
	}
}
