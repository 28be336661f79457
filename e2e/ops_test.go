package e2e_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/flanneld-go/flannel/e2e/testbed"
)

// faultBackends are the backends the fault tests run for.
var faultBackends = []struct{ name, conf string }{{"host-gw", hostGW}, {"vxlan", vxlanBackend}}

// get fetches a health endpoint of a host's daemon.
func get(ctx context.Context, h *testbed.Host, path string) (code int, body string) {
	out, _ := h.Exec(ctx, "curl", "-s", "-m", "3", "-w", "\n%{http_code}", "http://127.0.0.1:9100"+path)
	out = strings.TrimRight(out, "\n")
	i := strings.LastIndex(out, "\n")
	if i < 0 {
		return 0, out
	}
	fmt.Sscan(out[i+1:], &code)
	return code, strings.TrimSpace(out[:i])
}

// TestHealthEndpoints: /healthz, /readyz and /metrics of a running daemon.
func TestHealthEndpoints(t *testing.T) {
	requireTestbed(t)
	ctx := ctxFor(t, time.Minute)
	tb := newCluster(t, ctx, vxlanBackend, 2, 0, testbed.Options{}, "--healthz-port", "9100", "--healthz-ip", "127.0.0.1", "--ip-masq")
	h := tb.Hosts()[0]
	waitFor(t, "ready", 10*time.Second, func() bool { c, _ := get(ctx, h, "/readyz"); return c == 200 })
	if c, b := get(ctx, h, "/healthz"); c != 200 || b != "ok" {
		t.Errorf("/healthz: %d %q", c, b)
	}
	_, metrics := get(ctx, h, "/metrics")
	for _, want := range []string{
		"flannel_peers 1", `flannel_reconcile_total{backend="vxlan"}`, "flannel_lease_expiry_timestamp_seconds 1.",
		`flannel_reconcile_duration_seconds_bucket{backend="vxlan"`, "flannel_watch_restarts_total 0",
		"flannel_iptables_resyncs_total", "flannel_iptables_repairs_total 0",
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", metrics)
	}
	// Rules deleted by hand: counted as a repair.
	h.Exec(ctx, "iptables", "-t", "nat", "-F", "FLANNEL-POSTRTG")
	waitFor(t, "repair counted", 15*time.Second, func() bool {
		_, m := get(ctx, h, "/metrics")
		return strings.Contains(m, "flannel_iptables_repairs_total 1")
	})
}

// TestEtcdOutage: with etcd stopped for 60 s, pods keep reaching each
// other; each daemon logs the outage once, reports not-ready, and when etcd
// is back it becomes ready, renews its lease and sees a host that joins.
func TestEtcdOutage(t *testing.T) {
	requireTestbed(t)
	for _, be := range faultBackends {
		t.Run(be.name, func(t *testing.T) {
			t.Parallel()
			ctx := ctxFor(t, 4*time.Minute)
			// The renewal margin makes the lease due for renewal about a
			// minute after start, in the middle of the outage: the loop
			// must not stall on it.
			tb := newCluster(t, ctx, be.conf, 2, 1, testbed.Options{}, "--healthz-port", "9100",
				"--subnet-lease-renew-margin", "1439", "--reconcile-period", "2s")
			h1, h2 := tb.Hosts()[0], tb.Hosts()[1]
			pingMesh(t, ctx, tb)
			waitFor(t, "ready", 10*time.Second, func() bool { c, _ := get(ctx, h1, "/readyz"); return c == 200 })

			if err := tb.StopEtcd(); err != nil {
				t.Fatal(err)
			}
			stopped := time.Now()
			waitFor(t, "readiness reflects the outage", 15*time.Second, func() bool {
				c, body := get(ctx, h1, "/readyz")
				return c == 503 && strings.Contains(body, "etcd: unreachable")
			})
			for time.Since(stopped) < 60*time.Second {
				if err := h1.Pods[0].Ping(ctx, h2.Pods[0].Addr, 1); err != nil {
					t.Fatalf("pods lost each other %v into the etcd outage: %v", time.Since(stopped).Round(time.Second), err)
				}
				time.Sleep(2 * time.Second)
			}
			// The daemon still repairs its data plane while etcd is away
			// (and after its renewal came due).
			sn2 := leaseSubnet(t, ctx, h2)
			if _, err := h1.Exec(ctx, "ip", "route", "del", sn2.String()); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "route repaired during the outage", 5*time.Second, func() bool { return routeTo(ctx, h1, sn2) != "" })
			if err := tb.StartEtcd(ctx); err != nil {
				t.Fatal(err)
			}
			for _, h := range tb.Hosts() {
				waitFor(t, h.Name+" ready again", 20*time.Second, func() bool { c, _ := get(ctx, h, "/readyz"); return c == 200 })
				log := h.Log()
				if n := strings.Count(log, `msg="etcd unavailable; retrying with backoff"`); n < 1 || n > 2 {
					t.Errorf("%s logged the outage start %d times, want once per activity:\n%s", h.Name, n, log)
				}
				if n := strings.Count(log, "etcd still unavailable"); n > 3 {
					t.Errorf("%s logged %d reminders in 60 s", h.Name, n)
				}
				if !strings.Contains(log, `msg="etcd available again"`) || !strings.Contains(log, `msg="lease renewed"`) {
					t.Errorf("%s: no recovery or renewal logged:\n%s", h.Name, log)
				}
			}
			// A host joining after the outage is picked up by both.
			h3, err := tb.AddHost(ctx, testbed.HostOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if err := h3.StartDaemon(ctx); err != nil {
				t.Fatal(err)
			}
			if err := h3.AddPods(ctx, 1); err != nil {
				t.Fatal(err)
			}
			pingMesh(t, ctx, tb)
		})
	}
}

// TestRestartNoLoss: a daemon stopped (SIGTERM) or killed (SIGKILL) and
// restarted loses no packet of a 10 ms ping stream between pods on two
// hosts, for every backend whose data plane lives in the kernel.
func TestRestartNoLoss(t *testing.T) {
	requireTestbed(t)
	for _, be := range faultBackends {
		for _, sig := range []string{"SIGTERM", "SIGKILL"} {
			t.Run(be.name+"/"+sig, func(t *testing.T) {
				ctx := ctxFor(t, 2*time.Minute)
				tb := newCluster(t, ctx, be.conf, 2, 1, testbed.Options{})
				h1, h2 := tb.Hosts()[0], tb.Hosts()[1]
				if err := h2.Pods[0].WaitPing(ctx, h1.Pods[0].Addr); err != nil {
					t.Fatal(err)
				}
				sn := leaseSubnet(t, ctx, h1)
				done := make(chan string, 1)
				go func() {
					out, _ := h2.Pods[0].Exec(ctx, "ping", "-i", "0.01", "-w", "5", "-W", "1", h1.Pods[0].Addr.String())
					done <- out
				}()
				time.Sleep(time.Second)
				stop := h1.StopDaemon
				if sig == "SIGKILL" {
					stop = h1.KillDaemon
				}
				if err := stop(); err != nil {
					t.Fatal(err)
				}
				if err := h1.StartDaemon(ctx); err != nil {
					t.Fatal(err)
				}
				waitFor(t, "restarted", 20*time.Second, func() bool { return strings.Count(h1.Log(), `msg="lease ready"`) == 2 })
				out := <-done
				t.Logf("%s", lastLines(out, 2))
				if !strings.Contains(out, " 0% packet loss") {
					t.Errorf("packets lost across %s and restart:\n%s", sig, lastLines(out, 3))
				}
				if got := leaseSubnet(t, ctx, h1); got != sn {
					t.Errorf("subnet changed %s -> %s", sn, got)
				}
			})
		}
	}
}

// TestCleanup: flanneld cleanup on a decommissioned host removes its
// devices, routes, rules, lease and subnet file, and says what it removed;
// the other hosts drop it.
func TestCleanup(t *testing.T) {
	requireTestbed(t)
	ctx := ctxFor(t, time.Minute)
	tb := newCluster(t, ctx, vxlanBackend, 2, 0, testbed.Options{}, "--ip-masq", "--ip-blackhole-route")
	h1, h2 := tb.Hosts()[0], tb.Hosts()[1]
	sn2 := leaseSubnet(t, ctx, h2)
	waitFor(t, "h1 routes to h2", 5*time.Second, func() bool { return routeTo(ctx, h1, sn2) != "" })
	if err := h2.StopDaemon(); err != nil {
		t.Fatal(err)
	}
	out, err := h2.Exec(ctx, tb.FlanneldBin(), "cleanup", "--etcd-endpoints", tb.EtcdEndpoint(), "--iface", "eth0", "--subnet-file", h2.SubnetFile())
	t.Logf("flanneld cleanup:\n%s", out)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"removed lease /coreos.com/network/subnets/" + sn2.Addr().String() + "-24", "removed device flannel.1",
		"removed iptables chain IPv4 nat/FLANNEL-POSTRTG", "removed " + h2.SubnetFile(), "removed route blackhole " + sn2.String()} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	left, _ := h2.Exec(ctx, "sh", "-c", "ip -o link show | grep flannel; ip route show proto 98; ip route show type blackhole; iptables-save | grep FLANNEL; ip6tables-save | grep FLANNEL; nft list tables | grep flannel; true")
	if strings.TrimSpace(left) != "" {
		t.Errorf("left on the host:\n%s", left)
	}
	waitFor(t, "h1 drops h2", 2*time.Second, func() bool { return routeTo(ctx, h1, sn2) == "" })
}

// TestUDPRestartGap: with udp the daemon is the data plane, so a restart
// interrupts traffic; measure the gap in a 10 ms ping stream (reported,
// not asserted beyond "traffic comes back").
func TestUDPRestartGap(t *testing.T) {
	requireTestbed(t)
	ctx := ctxFor(t, 2*time.Minute)
	tb := newCluster(t, ctx, udpBackend, 2, 1, testbed.Options{})
	h1, h2 := tb.Hosts()[0], tb.Hosts()[1]
	if err := h2.Pods[0].WaitPing(ctx, h1.Pods[0].Addr); err != nil {
		t.Fatal(err)
	}
	done := make(chan string, 1)
	go func() {
		out, _ := h2.Pods[0].Exec(ctx, "ping", "-i", "0.01", "-w", "6", "-W", "1", h1.Pods[0].Addr.String())
		done <- out
	}()
	time.Sleep(time.Second)
	if err := h1.StopDaemon(); err != nil {
		t.Fatal(err)
	}
	if err := h1.StartDaemon(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "restarted", 20*time.Second, func() bool { return strings.Count(h1.Log(), `msg="lease ready"`) == 2 })
	out := <-done
	var sent, got int
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "packets transmitted") {
			fmt.Sscanf(line, "%d packets transmitted, %d received", &sent, &got)
		}
	}
	if sent == 0 {
		t.Fatalf("no ping summary:\n%s", lastLines(out, 3))
	}
	t.Logf("udp restart: %d of %d pings lost, a gap of about %v", sent-got, sent, time.Duration(sent-got)*10*time.Millisecond)
	if err := h2.Pods[0].Ping(ctx, h1.Pods[0].Addr, 3); err != nil {
		t.Fatalf("traffic did not come back after the restart: %v", err)
	}
}

// TestExpiredLeaseReacquired: a lease that expired while the daemon was
// down is taken again with the same subnet (from subnet.env) when free.
func TestExpiredLeaseReacquired(t *testing.T) {
	requireTestbed(t)
	ctx := ctxFor(t, time.Minute)
	tb := newCluster(t, ctx, hostGW, 1, 0, testbed.Options{}, "--subnet-lease-ttl", "6s")
	h := tb.Hosts()[0]
	sn := leaseSubnet(t, ctx, h)
	if err := h.KillDaemon(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the lease expires", 20*time.Second, func() bool {
		out, err := tb.Etcdctl(ctx, "get", "--prefix", "--keys-only", "/coreos.com/network/subnets/")
		return err == nil && strings.TrimSpace(out) == ""
	})
	if err := h.StartDaemon(ctx, "--subnet-lease-ttl", "6s"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "restarted", 20*time.Second, func() bool { return strings.Count(h.Log(), `msg="lease ready"`) == 2 })
	if got := leaseSubnet(t, ctx, h); got != sn {
		t.Errorf("re-acquired %s, want the same %s", got, sn)
	}
	if !strings.Contains(h.Log(), `msg="acquired new lease" subnet=`+sn.String()) {
		t.Errorf("log:\n%s", h.Log())
	}
}
