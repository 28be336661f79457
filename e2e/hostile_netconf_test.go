package e2e_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flanneld-go/flannel/e2e/testbed"
)

// TestHostileNetConf: on a running two-host cluster, a third host is
// started while the state in etcd or on the host is bad:
//
//   - a net-conf whose Network holds the hosts' underlay addresses
//     (192.168.0.0/16 holds 192.168.50.0/24);
//   - a net-conf whose Network is the default route, 0.0.0.0/0;
//   - (vxlan) a foreign VXLAN device holding our VNI and port.
//
// Each time the daemon stops at start with the message that names the
// address, interface and field (or the device), touches nothing on the
// host (no route, device, rule or sysctl, no subnet file, no lease), and
// `flanneld config check` on the host says the same of the net-conf. The
// two running hosts' pods ping each other without loss throughout. With
// the bad state removed, the third host joins and the mesh is complete.
func TestHostileNetConf(t *testing.T) {
	requireTestbed(t)
	for _, be := range faultBackends {
		t.Run(be.name, func(t *testing.T) {
			t.Parallel()
			ctx := ctxFor(t, 3*time.Minute)
			tb := newCluster(t, ctx, be.conf, 2, 1, testbed.Options{})
			h1, h2 := tb.Hosts()[0], tb.Hosts()[1]
			pingMesh(t, ctx, tb)
			h3, err := tb.AddHost(ctx, testbed.HostOptions{})
			if err != nil {
				t.Fatal(err)
			}
			dataplane := func(h *testbed.Host) string {
				out, err := h.Exec(ctx, "sh", "-c", "ip -o link | cut -d' ' -f2; ip -d link show type vxlan; ip route; ip neigh show nud permanent; bridge fdb show | grep dst; iptables-save | grep -v '^#'")
				if err != nil {
					t.Fatal(err)
				}
				return withoutNhid(out)
			}
			before1, before2 := dataplane(h1), dataplane(h2)
			stopPings := pingsWithoutLoss(t, ctx, h1.Pods[0], h2.Pods[0])

			const key = "/coreos.com/network/config"
			refusedAtStart(t, ctx, tb, h3, `{"Network":"192.168.0.0/16","Backend":`+be.conf+`}`,
				"refusing the net-conf at "+key+": net-conf Network 192.168.0.0/16 holds 192.168.50.13, the address of the external interface eth0",
				"net-conf Network 192.168.0.0/16 holds 192.168.50.13, the address of the external interface eth0, advertised to the other hosts as PublicIP")
			refusedAtStart(t, ctx, tb, h3, `{"Network":"0.0.0.0/0","Backend":`+be.conf+`}`,
				"invalid net-conf at "+key+": Network: 0.0.0.0/0 is the default route (every address)",
				"Network: 0.0.0.0/0 is the default route (every address)")
			if err := tb.PutNetConfig(ctx, netconf(be.conf)); err != nil {
				t.Fatal(err)
			}
			if be.name == "vxlan" {
				if _, err := h3.Exec(ctx, "ip", "link", "add", "foreign0", "type", "vxlan", "id", "1", "dstport", "8472", "dev", "eth0"); err != nil {
					t.Fatal(err)
				}
				refusedAtStart(t, ctx, tb, h3, netconf(be.conf),
					"preparing the vxlan backend: cannot create VXLAN device flannel.1: the VXLAN device foreign0 (VNI 1, port 8472) holds that VNI and port", "")
				if _, err := h3.Exec(ctx, "ip", "link", "del", "foreign0"); err != nil {
					t.Fatal(err)
				}
			}

			// The running hosts refused both net-confs, and kept their
			// data plane as it was.
			if dataplane(h1) != before1 || dataplane(h2) != before2 {
				t.Errorf("a running host's data plane changed while h3 was refused:\nh1 before:\n%s\nh1 after:\n%s\nh2 before:\n%s\nh2 after:\n%s",
					before1, dataplane(h1), before2, dataplane(h2))
			}

			// The bad state gone, h3 joins like any host.
			if err := h3.StartDaemon(ctx); err != nil {
				t.Fatal(err)
			}
			if _, err := h3.WaitSubnetFile(ctx); err != nil {
				t.Fatal(err)
			}
			if err := h3.AddPods(ctx, 1); err != nil {
				t.Fatal(err)
			}
			stopPings()
			pingMesh(t, ctx, tb)
			for _, h := range []*testbed.Host{h1, h2} {
				var refused, other int
				for _, l := range strings.Split(h.Log(), "\n") {
					switch {
					case strings.Contains(l, `level=ERROR msg="net-conf change refused"`):
						refused++
					case strings.Contains(l, "level=ERROR"):
						other++
					}
				}
				if refused != 2 || other != 0 {
					t.Errorf("%s logged %d refusals (want 2, one per bad net-conf) and %d other errors:\n%s", h.Name, refused, other, h.Log())
				}
			}
		})
	}
}

// refusedAtStart puts conf, starts h's daemon and checks that it exits
// non-zero logging wantLog, without touching the host or etcd; with
// wantCheck, `flanneld config check` on h fails saying it.
func refusedAtStart(t *testing.T, ctx context.Context, tb *testbed.Testbed, h *testbed.Host, conf, wantLog, wantCheck string) {
	t.Helper()
	if err := tb.PutNetConfig(ctx, conf); err != nil {
		t.Fatal(err)
	}
	state := func() string {
		out, err := h.Exec(ctx, "sh", "-c", "ip -o link | cut -d' ' -f2; ip -d link show type vxlan; ip addr; ip route; ip -6 route; iptables-save | grep -v '^#'; ip6tables-save | grep -v '^#'; sysctl net.ipv4.ip_forward net.ipv6.conf.all.forwarding")
		if err != nil {
			t.Fatal(err)
		}
		return withoutNhid(out)
	}
	before := state()
	logStart := len(h.Log())
	if err := h.StartDaemon(ctx); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	code, err := h.WaitDaemonExit(wctx)
	if err != nil {
		t.Fatalf("%s: the daemon did not stop within 30 s (%v):\n%s", conf, err, h.Log()[logStart:])
	}
	log := h.Log()[logStart:]
	if code == 0 || !strings.Contains(log, wantLog) {
		t.Fatalf("%s: exit %d, want a failure logging %q:\n%s", conf, code, wantLog, log)
	}
	if strings.Contains(log, "panic") || strings.Contains(log, "goroutine ") {
		t.Errorf("the daemon crashed:\n%s", log)
	}
	if after := state(); after != before {
		t.Errorf("%s: the host changed:\nbefore:\n%s\nafter:\n%s", conf, before, after)
	}
	if _, err := os.Stat(h.SubnetFile()); err == nil {
		t.Errorf("a subnet file was written")
	}
	if out, _ := tb.Etcdctl(ctx, "get", "--prefix", "/coreos.com/network/subnets/"); strings.Contains(out, `"PublicIP":"`+h.Addr.String()+`"`) {
		t.Errorf("a lease was written for %s:\n%s", h.Addr, out)
	}
	t.Logf("%s refused at start: %s", h.Name, lastLines(log, 1))
	if wantCheck == "" {
		return
	}
	file := filepath.Join(t.TempDir(), "net-conf.json")
	if err := os.WriteFile(file, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := h.Exec(ctx, tb.FlanneldBin(), "config", "check", "--iface", "eth0", file)
	if err == nil || !strings.Contains(out, wantCheck) {
		t.Errorf("flanneld config check %s: %v, want a failure saying %q:\n%s", conf, err, wantCheck, out)
	}
}

// pingsWithoutLoss pings from src to dst, 5 pings at a time, until the
// returned function is called, and fails the test on any loss.
func pingsWithoutLoss(t *testing.T, ctx context.Context, src, dst *testbed.Pod) (stop func()) {
	t.Helper()
	done := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var rounds int
	var lost error
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			default:
			}
			if err := src.Ping(ctx, dst.Addr, 5); err != nil {
				mu.Lock()
				lost = err
				mu.Unlock()
				return
			}
			mu.Lock()
			rounds++
			mu.Unlock()
		}
	}()
	return func() {
		close(done)
		wg.Wait()
		if lost != nil {
			t.Errorf("pods %s -> %s lost packets while the bad state was present (after %d clean rounds of 5): %v", src.Name, dst.Name, rounds, lost)
		} else if rounds == 0 {
			t.Error("no ping round completed while the bad state was present")
		} else {
			t.Logf("pods %s -> %s: %d rounds of 5 pings, no loss", src.Name, dst.Name, rounds)
		}
	}
}
