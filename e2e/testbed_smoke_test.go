package e2e_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/flanneld-go/flannel/e2e/testbed"
)

// The smoke tests check the testbed itself, without flanneld: subnet files
// and routes between hosts are written by hand, as the daemon would.

func requireRoot(t *testing.T) {
	t.Helper()
	requireTestbed(t)
	for _, bin := range []string{"../bin/etcd", "../bin/etcdctl"} {
		if _, err := os.Stat(bin); err != nil {
			t.Fatalf("needs %s (make build does it): go build -o bin/%s ./e2e/cmd/%s", bin, filepath.Base(bin), filepath.Base(bin))
		}
	}
}

func TestSmokeIPv4(t *testing.T) { smoke(t, false) }
func TestSmokeIPv6(t *testing.T) { smoke(t, true) }

func smoke(t *testing.T, v6 bool) {
	requireRoot(t)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	rootLinks := rootLinkNames(t)

	tb := testbed.NewT(t, testbed.Options{Hosts: 2, IPv6: v6})
	hosts := tb.Hosts()
	h1, h2 := hosts[0], hosts[1]
	if got, want := h1.Addr, netip.MustParseAddr("192.168.50.11"); got != want {
		t.Errorf("h1.Addr = %v, want %v", got, want)
	}
	if v6 && h2.Addr6 != netip.MustParseAddr("fd00:50::12") {
		t.Errorf("h2.Addr6 = %v, want fd00:50::12", h2.Addr6)
	}

	// What the daemon would do: a subnet file per host, routes to the
	// other host's pods, forwarding.
	for i, h := range hosts {
		n := i + 1
		env := fmt.Sprintf("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.%d.1/24\nFLANNEL_MTU=1500\nFLANNEL_IPMASQ=false\n", n)
		if v6 {
			env += fmt.Sprintf("FLANNEL_IPV6_NETWORK=fd00:10:244::/56\nFLANNEL_IPV6_SUBNET=fd00:10:244:%d::1/64\n", n)
		}
		if err := os.WriteFile(h.SubnetFile(), []byte(env), 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := h.WaitSubnetFile(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got["FLANNEL_SUBNET"] != fmt.Sprintf("10.244.%d.1/24", n) || got["FLANNEL_MTU"] != "1500" {
			t.Errorf("%s: WaitSubnetFile = %v", h.Name, got)
		}
		if err := h.AddPods(ctx, 2); err != nil {
			t.Fatal(err)
		}
		mustSysctl(ctx, t, h, "net.ipv4.ip_forward", "1")
		if v6 {
			mustSysctl(ctx, t, h, "net.ipv6.conf.all.forwarding", "1")
		}
	}
	mustExec(ctx, t, h1, "ip", "route", "add", "10.244.2.0/24", "via", h2.Addr.String())
	mustExec(ctx, t, h2, "ip", "route", "add", "10.244.1.0/24", "via", h1.Addr.String())
	if v6 {
		mustExec(ctx, t, h1, "ip", "-6", "route", "add", "fd00:10:244:2::/64", "via", h2.Addr6.String())
		mustExec(ctx, t, h2, "ip", "-6", "route", "add", "fd00:10:244:1::/64", "via", h1.Addr6.String())
	}

	t.Run("pods", func(t *testing.T) {
		p11, p12, p21 := h1.Pods[0], h1.Pods[1], h2.Pods[0]
		if p11.Addr != netip.MustParseAddr("10.244.1.2") || p12.Addr != netip.MustParseAddr("10.244.1.3") {
			t.Errorf("h1 pods = %v, %v; want 10.244.1.2, 10.244.1.3", p11.Addr, p12.Addr)
		}
		if p11.NS != tb.Prefix()+"-h1p1" {
			t.Errorf("pod namespace %q, want %q", p11.NS, tb.Prefix()+"-h1p1")
		}
		if v6 && p21.Addr6 != netip.MustParseAddr("fd00:10:244:2::2") {
			t.Errorf("h2p1.Addr6 = %v, want fd00:10:244:2::2", p21.Addr6)
		}
		if !v6 && p21.Addr6.IsValid() {
			t.Errorf("h2p1.Addr6 = %v without IPv6 in the subnet file", p21.Addr6)
		}
		mustPing(ctx, t, p11, p12.Addr) // same host, through cni0
		mustPing(ctx, t, p11, p21.Addr) // across hosts
		mustPing(ctx, t, p21, p12.Addr)
		if v6 {
			mustPing(ctx, t, p11, p12.Addr6)
			mustPing(ctx, t, p11, p21.Addr6)
		}
		out := mustExec(ctx, t, p11, "ip", "link", "show", "eth0")
		if !strings.Contains(out, "mtu 1500") {
			t.Errorf("pod eth0: %s", out)
		}
	})

	t.Run("etcd", func(t *testing.T) {
		if _, err := tb.Etcdctl(ctx, "put", "/smoke/a", "1"); err != nil {
			t.Fatal(err)
		}
		out, err := tb.Etcdctl(ctx, "get", "--print-value-only", "/smoke/a")
		if err != nil || strings.TrimSpace(out) != "1" {
			t.Fatalf("get /smoke/a = %q, %v", out, err)
		}
		cfg := `{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}`
		if err := tb.PutNetConfig(ctx, cfg); err != nil {
			t.Fatal(err)
		}
		out, err = tb.Etcdctl(ctx, "get", "--print-value-only", "/coreos.com/network/config")
		if err != nil || strings.TrimSpace(out) != cfg {
			t.Fatalf("get config = %q, %v", out, err)
		}
		// Hosts reach etcd over the underlay.
		if out, err := h2.Exec(ctx, etcdctl(t), "--endpoints", tb.EtcdEndpoint(), "get", "--print-value-only", "/smoke/a"); err != nil || strings.TrimSpace(out) != "1" {
			t.Fatalf("get from h2 = %q, %v", out, err)
		}
	})

	t.Run("segment2", func(t *testing.T) {
		if err := tb.AddSegment(ctx); err != nil {
			t.Fatal(err)
		}
		h3, err := tb.AddHost(ctx, testbed.HostOptions{Segment: 2})
		if err != nil {
			t.Fatal(err)
		}
		if h3.Addr != netip.MustParseAddr("192.168.60.13") {
			t.Errorf("h3.Addr = %v, want 192.168.60.13", h3.Addr)
		}
		mustPing(ctx, t, h3, h1.Addr)
		// A segment-1 host added after the segment also has the route.
		h4, err := tb.AddHost(ctx, testbed.HostOptions{})
		if err != nil {
			t.Fatal(err)
		}
		mustPing(ctx, t, h4, h3.Addr)
		if v6 {
			mustPing(ctx, t, h3, h1.Addr6)
			mustPing(ctx, t, h4, h3.Addr6)
		}
		// etcd across the router, as a daemon on segment 2 needs it.
		if out, err := h3.Exec(ctx, etcdctl(t), "--endpoints", tb.EtcdEndpoint(), "endpoint", "health"); err != nil {
			t.Fatalf("etcd from segment 2: %v\n%s", err, out)
		}
		// Traffic between segments goes through the router: the TTL drops.
		out := mustExec(ctx, t, h3, "ping", "-c", "1", "-W", "1", h1.Addr.String())
		if !strings.Contains(out, "ttl=63") {
			t.Errorf("ping across the router did not lose a hop:\n%s", out)
		}
	})

	t.Run("outside", func(t *testing.T) {
		out, err := tb.AddOutside(ctx)
		if err != nil {
			t.Fatal(err)
		}
		p11 := h1.Pods[0]
		// Without masquerading the pod address arrives, and the outside
		// machine has no way back.
		checkSources(ctx, t, out, "icmp[icmptype] == icmp-echo", p11, out.Addr, p11.Addr, false)
		mustExec(ctx, t, h1, "iptables", "-t", "nat", "-A", "POSTROUTING", "-s", "10.244.1.0/24", "!", "-d", "10.244.0.0/16", "-j", "MASQUERADE")
		checkSources(ctx, t, out, "icmp[icmptype] == icmp-echo", p11, out.Addr, h1.Addr, true)
		if v6 {
			checkSources(ctx, t, out, "icmp6 and ip6[40] == 128", p11, out.Addr6, p11.Addr6, false)
		}
	})

	t.Run("etcd restart", func(t *testing.T) {
		if _, err := tb.Etcdctl(ctx, "put", "/smoke/durable", "yes"); err != nil {
			t.Fatal(err)
		}
		if err := tb.StopEtcd(); err != nil {
			t.Fatal(err)
		}
		short, cancel := context.WithTimeout(ctx, 3*time.Second)
		_, err := tb.Etcdctl(short, "--dial-timeout=1s", "--command-timeout=1s", "get", "/smoke/durable")
		cancel()
		if err == nil {
			t.Error("etcd answered while stopped")
		}
		if err := tb.StartEtcd(ctx); err != nil {
			t.Fatal(err)
		}
		out, err := tb.Etcdctl(ctx, "get", "--print-value-only", "/smoke/durable")
		if err != nil || strings.TrimSpace(out) != "yes" {
			t.Fatalf("after restart: get = %q, %v", out, err)
		}
	})

	if got := rootLinkNames(t); !slices.Equal(got, rootLinks) {
		t.Errorf("root namespace links changed: before %v, after %v", rootLinks, got)
	}
	checkClose(ctx, t, tb)
}

// TestSmokeCleanAll removes a testbed whose Close was never called (as
// after a killed test binary) with CleanAll.
func TestSmokeCleanAll(t *testing.T) {
	requireRoot(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	tb, err := testbed.New(ctx, testbed.Options{Hosts: 1, Log: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	defer tb.Close() // in case the test fails before CleanAll
	h1 := tb.Hosts()[0]
	if err := os.WriteFile(h1.SubnetFile(), []byte("FLANNEL_SUBNET=10.244.7.1/24\nFLANNEL_MTU=1450\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := h1.AddPods(ctx, 1); err != nil {
		t.Fatal(err)
	}
	out, err := tb.AddOutside(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := out.CaptureSources(ctx, "icmp", 1); err != nil { // a running tcpdump
		t.Fatal(err)
	}
	pids := prefixPIDs(ctx, t, tb.Prefix())
	if len(pids) < 2 {
		t.Fatalf("expected etcd and tcpdump in the namespaces, found pids %v", pids)
	}

	// While its owner (this test process) runs, the testbed is kept...
	removed, kept, err := testbed.CleanAll(tb.Prefix(), false)
	if err != nil || len(removed) != 0 || len(kept) != 1 || !strings.Contains(kept[0], fmt.Sprintf("pid %d", os.Getpid())) {
		t.Fatalf("CleanAll with a live owner: removed %v, kept %v, %v", removed, kept, err)
	}
	// ...and once the owner is a process that has exited (as a killed test
	// binary), it is removed.
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	owner := filepath.Join(os.TempDir(), tb.Prefix()+".owner")
	if err := os.WriteFile(owner, []byte(fmt.Sprintf("%d 1\n", dead.Process.Pid)), 0o644); err != nil {
		t.Fatal(err)
	}
	removed, kept, err = testbed.CleanAll(tb.Prefix(), false)
	if err != nil || len(kept) != 0 {
		t.Fatalf("CleanAll with a dead owner: kept %v, %v", kept, err)
	}
	t.Logf("CleanAll removed %v", removed)
	if _, err := os.Stat(owner); !os.IsNotExist(err) {
		t.Errorf("owner file left: %v", err)
	}
	for _, want := range []string{"netns " + tb.Prefix() + "-sw", "netns " + tb.Prefix() + "-h1p1", "netns " + tb.Prefix() + "-out", "dir " + tb.WorkDir()} {
		if !slices.Contains(removed, want) {
			t.Errorf("CleanAll did not report %q", want)
		}
	}
	checkGone(ctx, t, tb, pids)
	// Close after CleanAll finds nothing left to remove and does not fail.
	if err := tb.Close(); err != nil {
		t.Errorf("Close after CleanAll: %v", err)
	}
}

// checkSources captures echo requests on the outside machine while pod p
// pings dst, and checks they all come from want.
func checkSources(ctx context.Context, t *testing.T, o *testbed.Outside, filter string, p *testbed.Pod, dst, want netip.Addr, answered bool) {
	t.Helper()
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	wait, err := o.CaptureSources(cctx, filter, 2)
	if err != nil {
		t.Fatal(err)
	}
	pingErr := p.Ping(ctx, dst, 2)
	if answered && pingErr != nil {
		t.Error(pingErr)
	}
	if !answered && pingErr == nil {
		t.Errorf("%s pinging %s: answered, want no answer", p.Name, dst)
	}
	got, err := wait()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0] != want || got[1] != want {
		t.Errorf("sources seen by %s = %v, want 2 × %v", o.NS, got, want)
	}
}

// checkClose closes tb and checks that no namespace and no process of it
// remains, and that the work directory is gone.
func checkClose(ctx context.Context, t *testing.T, tb *testbed.Testbed) {
	t.Helper()
	pids := prefixPIDs(ctx, t, tb.Prefix())
	if len(pids) == 0 {
		t.Error("no process found in the testbed namespaces (etcd should run)")
	}
	if err := tb.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := tb.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	checkGone(ctx, t, tb, pids)
}

func checkGone(ctx context.Context, t *testing.T, tb *testbed.Testbed, pids []int) {
	t.Helper()
	if left := prefixNS(ctx, t, tb.Prefix()); len(left) > 0 {
		t.Errorf("namespaces left: %v", left)
	}
	for _, pid := range pids {
		if alive(pid) {
			t.Errorf("pid %d still runs", pid)
		}
	}
	if _, err := os.Stat(tb.WorkDir()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("work dir %s left (%v)", tb.WorkDir(), err)
	}
}

// alive reports whether pid runs. A zombie does not: a killed grandchild
// (sleep under a shell) waits for init to reap it.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) state ...
	_, rest, _ := strings.Cut(string(b), ") ")
	return rest != "" && rest[0] != 'Z' && rest[0] != 'X'
}

func prefixNS(ctx context.Context, t *testing.T, prefix string) []string {
	t.Helper()
	out, err := exec.CommandContext(ctx, "ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v: %s", err, out)
	}
	var names []string
	for line := range strings.Lines(string(out)) {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], prefix+"-") {
			names = append(names, f[0])
		}
	}
	return names
}

func prefixPIDs(ctx context.Context, t *testing.T, prefix string) []int {
	t.Helper()
	var pids []int
	for _, ns := range prefixNS(ctx, t, prefix) {
		out, err := exec.CommandContext(ctx, "ip", "netns", "pids", ns).CombinedOutput()
		if err != nil {
			t.Fatalf("ip netns pids %s: %v: %s", ns, err, out)
		}
		for _, f := range strings.Fields(string(out)) {
			var pid int
			fmt.Sscan(f, &pid)
			pids = append(pids, pid)
		}
	}
	return pids
}

// rootLinkNames lists the links of the root namespace, to check that the
// testbed never adds one there.
func rootLinkNames(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("ip", "-o", "link", "show").CombinedOutput()
	if err != nil {
		t.Fatalf("ip link: %v: %s", err, out)
	}
	var names []string
	for line := range strings.Lines(string(out)) {
		if f := strings.Fields(line); len(f) > 1 {
			names = append(names, f[1])
		}
	}
	slices.Sort(names)
	return names
}

func etcdctl(t *testing.T) string {
	t.Helper()
	p, err := filepath.Abs("../bin/etcdctl")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

type execer interface {
	Exec(ctx context.Context, argv ...string) (string, error)
}

func mustExec(ctx context.Context, t *testing.T, e execer, argv ...string) string {
	t.Helper()
	out, err := e.Exec(ctx, argv...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func mustSysctl(ctx context.Context, t *testing.T, h *testbed.Host, key, value string) {
	t.Helper()
	if err := h.Sysctl(ctx, key, value); err != nil {
		t.Fatal(err)
	}
}

type pinger interface {
	Ping(ctx context.Context, dst netip.Addr, count int) error
}

func mustPing(ctx context.Context, t *testing.T, p pinger, dst netip.Addr) {
	t.Helper()
	if err := p.Ping(ctx, dst, 3); err != nil {
		t.Error(err)
	}
}

// fakeFlanneld stands in for the daemon: it writes the subnet file (subnet
// from $FAKE_SUBNET), logs, exits 3 with --exit, and exits 0 on SIGTERM.
const fakeFlanneld = `#!/bin/sh
while [ $# -gt 0 ]; do
	case "$1" in
	--subnet-file) f="$2"; shift ;;
	--exit) echo "fake flanneld: bad config" >&2; exit 3 ;;
	esac
	shift
done
echo "fake flanneld: FLANNELD_LEAK=${FLANNELD_LEAK:-unset} $(ip -o -4 addr show dev eth0)"
printf 'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=%s\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n' "${FAKE_SUBNET:-10.244.9.1/24}" >"$f.tmp"
mv "$f.tmp" "$f"
trap 'echo "fake flanneld: got TERM"; exit 0' TERM
while :; do sleep 0.1; done
`

// TestSmokeDaemonProcess checks the daemon life cycle with a fake flanneld.
func TestSmokeDaemonProcess(t *testing.T) {
	requireRoot(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	bin := filepath.Join(t.TempDir(), "fake-flanneld")
	if err := os.WriteFile(bin, []byte(fakeFlanneld), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("FLANNELD_LEAK", "yes") // must not reach the daemon
	tb := testbed.NewT(t, testbed.Options{Hosts: 2, PodsPerHost: 1, FlanneldBin: bin})
	h1, h2 := tb.Hosts()[0], tb.Hosts()[1]

	if err := tb.StartDaemons(ctx); err != nil {
		t.Fatal(err)
	}
	for _, h := range tb.Hosts() {
		if len(h.Pods) != 1 || h.Pods[0].Addr != netip.MustParseAddr("10.244.9.2") {
			t.Errorf("%s pods after StartDaemons: %v", h.Name, h.Pods)
		}
		if log := h.Log(); !strings.Contains(log, "FLANNELD_LEAK=unset") || !strings.Contains(log, h.Addr.String()) {
			t.Errorf("%s log:\n%s", h.Name, log)
		}
	}
	if err := h1.StartDaemon(ctx); err == nil {
		t.Error("second StartDaemon on a running daemon succeeded")
	}

	// Graceful stop.
	if err := h1.StopDaemon(); err != nil {
		t.Fatal(err)
	}
	if exited, err := h1.DaemonExited(); !exited || err != nil {
		t.Errorf("after StopDaemon: DaemonExited = %v, %v", exited, err)
	}
	if !strings.Contains(h1.Log(), "got TERM") {
		t.Errorf("no SIGTERM seen:\n%s", h1.Log())
	}

	// A bad configuration exits non-zero.
	if err := h1.StartDaemon(ctx, "--exit"); err != nil {
		t.Fatal(err)
	}
	code, err := h1.WaitDaemonExit(ctx)
	if err != nil || code != 3 {
		t.Errorf("WaitDaemonExit = %d, %v; want 3", code, err)
	}
	var ee *exec.ExitError
	if exited, err := h1.DaemonExited(); !exited || !errors.As(err, &ee) {
		t.Errorf("DaemonExited = %v, %v; want an exit error", exited, err)
	}

	// A crash, then a restart with another lease: AddPods follows it.
	if err := h2.KillDaemon(); err != nil {
		t.Fatal(err)
	}
	if code, err := h2.WaitDaemonExit(ctx); err != nil || code != -1 {
		t.Errorf("after KillDaemon: WaitDaemonExit = %d, %v; want -1", code, err)
	}
	if err := os.Remove(h2.SubnetFile()); err != nil {
		t.Fatal(err)
	}
	if err := h2.StartDaemonEnv(ctx, []string{"FAKE_SUBNET=10.244.8.1/24"}); err != nil {
		t.Fatal(err)
	}
	env, err := h2.WaitSubnetFile(ctx)
	if err != nil || env["FLANNEL_SUBNET"] != "10.244.8.1/24" {
		t.Fatalf("WaitSubnetFile = %v, %v", env, err)
	}
	if err := h2.AddPods(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if p := h2.Pods[1]; p.Addr != netip.MustParseAddr("10.244.8.2") {
		t.Errorf("pod on the new lease: %v", p.Addr)
	}
	out := mustExec(ctx, t, h2.Pods[1], "ip", "link", "show", "eth0")
	if !strings.Contains(out, "mtu 1450") {
		t.Errorf("pod eth0 mtu, want 1450: %s", out)
	}
	checkClose(ctx, t, tb)
}
