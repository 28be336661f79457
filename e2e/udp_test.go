package e2e_test

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flanneld-go/flannel/e2e/testbed"
)

const udpBackend = `{"Type":"udp"}`

// TestUDPMesh runs the common suite. udp has no per-peer routes (one route
// for the Network via flannel0), and its data plane lives in the daemon.
func TestUDPMesh(t *testing.T) {
	meshSuiteWith(t, udpBackend, meshChecks{
		needsDaemon: true,
		handRoute:   netip.MustParsePrefix("10.244.0.0/16"),
		handWant:    "dev flannel0 proto 98",
	})
}

// udpCounter returns the value of a counter in the daemon's last "udp
// counters" log line (-1 if there is none).
func udpCounter(log, name string) int {
	re := regexp.MustCompile(`\b` + name + `=(\d+)`)
	v := -1
	for line := range strings.Lines(log) {
		if !strings.Contains(line, "udp counters") {
			continue
		}
		if m := re.FindStringSubmatch(line); m != nil {
			v, _ = strconv.Atoi(m[1])
		} else {
			v = 0
		}
	}
	return v
}

// TestUDPJunk: datagrams from a machine that is not a peer, and malformed
// ones from a peer, are dropped and counted; traffic keeps flowing.
func TestUDPJunk(t *testing.T) {
	requireTestbed(t)
	ctx := ctxFor(t, 2*time.Minute)
	tb := newCluster(t, ctx, udpBackend, 2, 1, testbed.Options{}, "--healthz-port", "9100")
	out, err := tb.AddOutside(ctx)
	if err != nil {
		t.Fatal(err)
	}
	h1, h2 := tb.Hosts()[0], tb.Hosts()[1]
	p1, p2 := h1.Pods[0], h2.Pods[0]
	if err := p1.WaitPing(ctx, p2.Addr); err != nil {
		t.Fatal(err)
	}
	bin := probeBin(t)
	dst := netip.AddrPortFrom(h1.Addr, 8285).String()
	// Twenty datagrams from outside, one of them a well-formed ping to p1.
	junk := []string{ipv4Packet(out.Addr, p1.Addr)}
	for i := range 19 {
		junk = append(junk, hex.EncodeToString([]byte(fmt.Sprintf("junk %d", i))))
	}
	if o, err := out.Exec(ctx, append([]string{bin, "udp", dst}, junk...)...); err != nil {
		t.Fatalf("%v: %s", err, o)
	}
	// From a peer (its address and the backend port, which its daemon has
	// bound: through a raw socket): not IP, a truncated IPv4 header, a
	// packet for a subnet that is not h1's.
	junk = []string{hex.EncodeToString([]byte("zzz, not a packet")), "450000", ipv4Packet(p2.Addr, netip.MustParseAddr("10.244.255.1"))}
	from := netip.AddrPortFrom(h2.Addr, 8285).String()
	if o, err := h2.Exec(ctx, append([]string{bin, "rawudp", from, dst}, junk...)...); err != nil {
		t.Fatalf("%v: %s", err, o)
	}
	want := map[string]int{"drop_not_peer": 20, "drop_not_ip": 1, "drop_truncated": 1, "drop_not_our_subnet": 1}
	waitFor(t, "h1 logs the drop counters", 15*time.Second, func() bool {
		for k, v := range want {
			if udpCounter(h1.Log(), k) != v {
				return false
			}
		}
		return true
	})
	t.Logf("h1 counters: %s", lastLine(h1.Log(), "udp counters"))
	// The same counters on /metrics.
	_, metrics := get(ctx, h1, "/metrics")
	for _, want := range []string{`flannel_udp_drops_total{reason="not_peer"} 20`, `flannel_udp_drops_total{reason="truncated"} 1`,
		`flannel_udp_packets_total{direction="tx"}`, `flannel_udp_bytes_total{direction="rx"}`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if err := p1.Ping(ctx, p2.Addr, 3); err != nil {
		t.Fatalf("traffic stopped after the junk: %v", err)
	}
	if err := p2.Ping(ctx, p1.Addr, 3); err != nil {
		t.Fatalf("traffic stopped after the junk: %v", err)
	}
}

// ipv4Packet renders a 28-byte ICMP echo request from src to dst in hex
// (the checksums do not matter: it must be dropped first).
func ipv4Packet(src, dst netip.Addr) string {
	s, d := src.As4(), dst.As4()
	b := []byte{0x45, 0, 0, 28, 0, 0, 0x40, 0, 64, 1, 0, 0}
	b = append(b, s[:]...)
	b = append(b, d[:]...)
	b = append(b, 8, 0, 0, 0, 0, 1, 0, 1)
	return hex.EncodeToString(b)
}

func lastLine(log, substr string) string {
	var last string
	for line := range strings.Lines(log) {
		if strings.Contains(line, substr) {
			last = strings.TrimSpace(line)
		}
	}
	return last
}

var probe struct {
	once sync.Once
	path string
	err  error
}

// probeBin builds e2e/cmd/probe once per test binary.
func probeBin(t *testing.T) string {
	t.Helper()
	probe.once.Do(func() {
		dir, err := filepath.Abs(filepath.Join("..", "bin"))
		if err != nil {
			probe.err = err
			return
		}
		probe.path = filepath.Join(dir, "probe")
		out, err := exec.Command("go", "build", "-o", probe.path, "./cmd/probe").CombinedOutput()
		if err != nil {
			probe.err = fmt.Errorf("go build ./e2e/cmd/probe: %v: %s", err, out)
		}
	})
	if probe.err != nil {
		t.Fatal(probe.err)
	}
	return probe.path
}

// TestUDPIntegrity: a 1400-byte ping and 100 MB over TCP arrive intact
// across hosts (SHA-256 compared on both ends), with every offload, and
// between a host with offloads and one without (FLANNEL_UDP_OFFLOAD=off:
// a plain TUN, as upstream flannel's udp backend uses, whose kernel checks
// every checksum of what our segmentation put on the wire).
func TestUDPIntegrity(t *testing.T) {
	requireTestbed(t)
	for _, c := range []struct {
		name string
		env  [2][]string
	}{
		{"offloads", [2][]string{}},
		{"mixed", [2][]string{nil, {"FLANNEL_UDP_OFFLOAD=off"}}},
	} {
		t.Run(c.name, func(t *testing.T) { udpIntegrity(t, c.env) })
	}
}

func udpIntegrity(t *testing.T, env [2][]string) {
	ctx := ctxFor(t, 2*time.Minute)
	bin := probeBin(t)
	tb := testbed.NewT(t, testbed.Options{Hosts: 2})
	if err := tb.PutNetConfig(ctx, netconf(udpBackend)); err != nil {
		t.Fatal(err)
	}
	for i, h := range tb.Hosts() {
		if err := h.StartDaemonEnv(ctx, env[i]); err != nil {
			t.Fatal(err)
		}
	}
	for _, h := range tb.Hosts() {
		if _, err := h.WaitSubnetFile(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := tb.AddPodsAll(ctx, 1); err != nil {
		t.Fatal(err)
	}
	p1, p2 := tb.Hosts()[0].Pods[0], tb.Hosts()[1].Pods[0]
	if err := p1.WaitPing(ctx, p2.Addr); err != nil {
		t.Fatal(err)
	}
	t.Logf("h2: %s", lastLine(tb.Hosts()[1].Log(), "udp backend ready"))
	out, err := p1.Exec(ctx, "ping", "-c", "3", "-i", "0.2", "-W", "1", "-s", "1400", "-M", "do", p2.Addr.String())
	if err != nil || !strings.Contains(out, "3 received") {
		t.Fatalf("1400-byte ping: %v\n%s", err, out)
	}

	const size = 100 << 20
	addr := netip.AddrPortFrom(p2.Addr, 9000).String()
	type result struct {
		out string
		err error
	}
	recvd := make(chan result, 1)
	go func() {
		o, err := p2.Exec(ctx, bin, "recv", addr)
		recvd <- result{o, err}
	}()
	start := time.Now()
	sent, err := p1.Exec(ctx, bin, "send", addr, strconv.Itoa(size))
	if err != nil {
		t.Fatalf("send: %v", err)
	}
	r := <-recvd
	if r.err != nil {
		t.Fatalf("recv: %v", r.err)
	}
	got := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(r.out), "listening"))
	if want := strings.TrimSpace(sent); got != want || !strings.HasPrefix(want, strconv.Itoa(size)+" ") {
		t.Fatalf("received %q, sent %q", got, want)
	}
	t.Logf("100 MiB intact in %v: %s", time.Since(start).Round(time.Millisecond), got)
}

// TestUDPSteady: a 1-minute TCP transfer succeeds (iperf3 exits cleanly
// and reports bytes received), and over it the daemons' goroutines and
// memory stay flat.
func TestUDPSteady(t *testing.T) {
	requireTestbed(t)
	ctx := ctxFor(t, 3*time.Minute)
	tb := testbed.NewT(t, testbed.Options{Hosts: 2, PodsPerHost: 1})
	if err := tb.PutNetConfig(ctx, netconf(udpBackend)); err != nil {
		t.Fatal(err)
	}
	// The counters (with the goroutine count) logged every 5 s.
	for _, h := range tb.Hosts() {
		if err := h.StartDaemonEnv(ctx, []string{"FLANNEL_UDP_LOG_PERIOD=5s"}); err != nil {
			t.Fatal(err)
		}
	}
	for _, h := range tb.Hosts() {
		if _, err := h.WaitSubnetFile(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := tb.AddPodsAll(ctx, 1); err != nil {
		t.Fatal(err)
	}
	h1, h2 := tb.Hosts()[0], tb.Hosts()[1]
	p1, p2 := h1.Pods[0], h2.Pods[0]
	if err := p1.WaitPing(ctx, p2.Addr); err != nil {
		t.Fatal(err)
	}
	type result struct {
		out string
		err error
	}
	done := make(chan result, 1)
	go func() {
		o, err := p2.Exec(ctx, "iperf3", "-s", "-1")
		done <- result{o, err}
	}()
	client := make(chan result, 1)
	go func() {
		var r result
		for range 50 { // until the server listens
			r.out, r.err = p1.Exec(ctx, "iperf3", "-c", p2.Addr.String(), "-t", "60", "-J")
			if !strings.Contains(r.out, "unable to connect") {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		client <- r
	}()
	sample := func() [2]testbed.ProcStat {
		var s [2]testbed.ProcStat
		for i, h := range []*testbed.Host{h1, h2} {
			st, err := testbed.ReadProcStat(h.DaemonPID())
			if err != nil {
				t.Fatal(err)
			}
			s[i] = st
		}
		return s
	}
	time.Sleep(10 * time.Second)
	early := sample()
	startLog := [2]int{len(h1.Log()), len(h2.Log())}
	time.Sleep(48 * time.Second)
	late := sample()
	cl, srv := <-client, <-done
	if cl.err != nil || srv.err != nil {
		t.Errorf("iperf3 failed: client %v, server %v\n%s", cl.err, srv.err, lastLines(cl.out, 20))
	} else if n, bps, err := iperfReceived(cl.out); err != nil || n <= 0 || bps <= 0 {
		t.Errorf("iperf3 moved %d bytes (%.0f bit/s): %v\n%s", n, bps, err, lastLines(cl.out, 20))
	} else {
		t.Logf("iperf3: %d MB received, %.2f Gbit/s", n>>20, bps/1e9)
	}
	for i, h := range []*testbed.Host{h1, h2} {
		grow := late[i].RSS - early[i].RSS
		t.Logf("%s: RSS %d KiB at 10 s, %d KiB at 58 s; threads %d, %d; CPU %v", h.Name, early[i].RSS>>10, late[i].RSS>>10, early[i].Threads, late[i].Threads, late[i].CPU)
		if grow > 8<<20 {
			t.Errorf("%s: RSS grew by %d KiB during the transfer", h.Name, grow>>10)
		}
		gs := goroutineCounts(h.Log()[startLog[i]:])
		t.Logf("%s: goroutines in the counter lines during the transfer: %v", h.Name, gs)
		if len(gs) < 5 {
			t.Errorf("%s: only %d counter lines in 48 s of traffic", h.Name, len(gs))
		}
		// Short-lived goroutines (a firewall resync running iptables, an
		// etcd keepalive, the etcd probe and lease renewal, which run off
		// the engine's loop) come and go, and a sample may catch one or
		// two of them; a leak raises the floor with every period: one
		// goroutine per counter line would be 5 over the second half.
		if len(gs) >= 2 {
			early, late := slices.Min(gs[:len(gs)/2]), slices.Min(gs[len(gs)/2:])
			if late > early+2 || slices.Max(gs) > early+8 {
				t.Errorf("%s: goroutines not flat: %v", h.Name, gs)
			}
		}
	}
}

// iperfReceived returns the bytes the server received and the throughput
// from the JSON of "iperf3 -c ... -J".
func iperfReceived(out string) (int64, float64, error) {
	var res struct {
		End struct {
			SumReceived struct {
				Bytes         int64   `json:"bytes"`
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal([]byte(out[max(strings.Index(out, "{"), 0):]), &res); err != nil {
		return 0, 0, fmt.Errorf("iperf3 JSON: %w", err)
	}
	if res.Error != "" {
		return 0, 0, fmt.Errorf("iperf3: %s", res.Error)
	}
	return res.End.SumReceived.Bytes, res.End.SumReceived.BitsPerSecond, nil
}

func goroutineCounts(log string) []int {
	re := regexp.MustCompile(`udp counters.* goroutines=(\d+)`)
	var out []int
	for _, m := range re.FindAllStringSubmatch(log, -1) {
		n, _ := strconv.Atoi(m[1])
		out = append(out, n)
	}
	return out
}

// TestUDPDeviceDeleted: flannel0 deleted by hand while the daemon runs is
// re-created and re-configured by the same process (as vxlan does with its
// device), and traffic flows again in both directions.
func TestUDPDeviceDeleted(t *testing.T) {
	requireTestbed(t)
	ctx := ctxFor(t, 2*time.Minute)
	tb := newCluster(t, ctx, udpBackend, 2, 1, testbed.Options{})
	h1, h2 := tb.Hosts()[0], tb.Hosts()[1]
	p1, p2 := h1.Pods[0], h2.Pods[0]
	if err := p1.WaitPing(ctx, p2.Addr); err != nil {
		t.Fatal(err)
	}
	pid := h1.DaemonPID()
	for round := 1; round <= 2; round++ { // twice: the second device must be watched too
		if out, err := h1.Exec(ctx, "ip", "link", "del", "flannel0"); err != nil {
			t.Fatalf("ip link del flannel0: %v %s", err, out)
		}
		took := waitFor(t, "pods reach each other again", 10*time.Second, func() bool {
			return p1.Ping(ctx, p2.Addr, 1) == nil && p2.Ping(ctx, p1.Addr, 1) == nil
		})
		t.Logf("round %d: traffic back %v after flannel0 was deleted", round, took.Round(time.Millisecond))
		if got := h1.DaemonPID(); got != pid {
			t.Fatalf("daemon pid %d, was %d: it exited instead of re-creating the device", got, pid)
		}
		if n := strings.Count(h1.Log(), `msg="TUN device re-created"`); n != round {
			t.Fatalf("%d re-creations logged, want %d:\n%s", n, round, h1.Log())
		}
	}
	r := routeTo(ctx, h1, netip.MustParsePrefix("10.244.0.0/16"))
	if !strings.Contains(r, "dev flannel0 proto 98") {
		t.Errorf("Network route after re-creation: %q", r)
	}
	// The MTU is restored too: a full-size DF ping crosses.
	env, _ := h1.WaitSubnetFile(ctx)
	mtu, _ := strconv.Atoi(env["FLANNEL_MTU"])
	if out, err := p1.Exec(ctx, "ping", "-c", "2", "-W", "2", "-M", "do", "-s", strconv.Itoa(mtu-28), p2.Addr.String()); err != nil {
		t.Errorf("full-size ping after re-creation: %v\n%s", err, out)
	}
}
