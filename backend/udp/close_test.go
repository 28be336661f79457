package udp

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/flanneld-go/flannel/backend"
	"github.com/flanneld-go/flannel/internal/netnstest"
	"github.com/flanneld-go/flannel/subnet"
)

// The backend's life against the kernel, in the test's private network
// namespace: what a live switch does to a retired udp backend.

const closePort = 18285

// closeExt makes an external interface ext0 (192.168.77.1/24, a veth) and
// removes it afterwards.
func closeExt(t *testing.T) *backend.ExternalInterface {
	t.Helper()
	netnstest.Require(t)
	if out, err := exec.Command("sh", "-c", "ip link add ext0 type veth peer name ext0p && ip addr add 192.168.77.1/24 dev ext0 && ip link set ext0 up && ip link set ext0p up").CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "link", "del", "ext0").Run() })
	l, err := net.InterfaceByName("ext0")
	if err != nil {
		t.Fatal(err)
	}
	a := netip.MustParseAddr("192.168.77.1")
	return &backend.ExternalInterface{Name: "ext0", Index: l.Index, MTU: 1500, Addr: a, PublicIP: a}
}

// closeBackend returns a backend on ext, closed at the end of the test
// whatever happens (Close stops Run too), so a failure leaves nothing for
// the next test.
func closeBackend(t *testing.T, ext *backend.ExternalInterface, logs *bytes.Buffer) *Backend {
	cfg := &subnet.Config{Network: netip.MustParsePrefix("10.244.0.0/16")}
	b := New(ext, cfg, Options{Type: TypeName, Port: closePort}, Tuning{}, slog.New(slog.NewTextHandler(logs, nil)))
	t.Cleanup(func() { b.Close() })
	return b
}

// portFree reports whether the backend port can be bound again.
func portFree(t *testing.T, ext *backend.ExternalInterface) bool {
	t.Helper()
	c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ext.Addr, closePort)))
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// runBackend starts b.Run(ctx) and returns its result channel.
func runBackend(ctx context.Context, b *Backend) <-chan error {
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	return done
}

func waitRun(t *testing.T, done <-chan error) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return within 5 s")
	}
}

// startedBackend is a backend prepared and started for our lease
// 10.244.1.0/24 at 192.168.77.1.
func startedBackend(t *testing.T, ext *backend.ExternalInterface, logs *bytes.Buffer) *Backend {
	t.Helper()
	b := closeBackend(t, ext, logs)
	if _, err := b.Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Start(context.Background(), lease("10.244.1.0/24", "192.168.77.1", TypeName)); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestCloseFreesDeviceAndPort: a backend that ran with traffic and was
// stopped (Run's context cancelled, then Close) leaves no flannel0 and a
// free port, logged no error and re-created nothing; Close again does
// nothing. A second backend is then prepared on the same port, and
// Closing it while it runs makes Run return.
func TestCloseFreesDeviceAndPort(t *testing.T) {
	ext := closeExt(t)
	ctx := context.Background()
	var logs bytes.Buffer
	b := startedBackend(t, ext, &logs)
	if _, err := backend.NewReconciler(b).Full(ctx, []subnet.Lease{lease("10.244.2.0/24", "192.168.77.2", TypeName)}); err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := runBackend(rctx, b)
	sendThroughTun(t, b, netip.MustParseAddrPort("10.244.2.9:9"))
	cancel()
	waitRun(t, done)
	if err := b.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Errorf("Close again: %v", err)
	}
	if linkExists(DeviceName) {
		t.Error("flannel0 is still there after Close")
	}
	if !portFree(t, ext) {
		t.Error("the port is still bound after Close")
	}
	if _, err := b.Refresh(ctx); !errors.Is(err, errClosed) {
		t.Errorf("Refresh after Close: %v", err)
	}
	for _, bad := range []string{"level=ERROR", "level=WARN", "re-creat"} {
		if strings.Contains(logs.String(), bad) {
			t.Errorf("the log has %q:\n%s", bad, logs.String())
		}
	}

	secondBackend(t, ext)
}

// secondBackend prepares a backend on the port a closed one freed, and
// Closes it while it runs: Run returns, flannel0 and the port go.
func secondBackend(t *testing.T, ext *backend.ExternalInterface) {
	ctx := context.Background()
	var logs2 bytes.Buffer
	b2 := closeBackend(t, ext, &logs2)
	if _, err := b2.Prepare(ctx); err != nil {
		t.Fatalf("a second backend on the same port: %v", err)
	}
	if !linkExists(DeviceName) {
		t.Fatal("the second backend has no flannel0")
	}
	if _, err := b2.Start(ctx, lease("10.244.1.0/24", "192.168.77.1", TypeName)); err != nil {
		t.Fatal(err)
	}
	done := runBackend(ctx, b2)
	sendThroughTun(t, b2, netip.MustParseAddrPort("10.244.2.9:9"))
	if err := b2.Close(); err != nil {
		t.Errorf("Close while running: %v", err)
	}
	waitRun(t, done)
	if linkExists(DeviceName) || !portFree(t, ext) {
		t.Error("flannel0 or the port outlived the second backend's Close")
	}
}

// sendThroughTun sends datagrams to dst, which the kernel routes into
// flannel0, until the backend's sender has handled one: sent it on, or
// answered that no lease covers dst.
func sendThroughTun(t *testing.T, b *Backend, dst netip.AddrPort) {
	t.Helper()
	c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(dst))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	deadline := time.Now().Add(5 * time.Second)
	for s := b.Stats(); s.TxPackets+s.ICMPSent == 0; s = b.Stats() {
		if time.Now().After(deadline) {
			t.Fatalf("nothing forwarded through flannel0: %s", s)
		}
		c.Write([]byte("ping"))
		time.Sleep(10 * time.Millisecond)
	}
}

// TestDeviceDeletedWhileRunning: flannel0 deleted by hand is re-created by
// Run alone; Refresh fails until then and reports the new index after, so
// the next full reconcile puts the route back on the new device. Stopping
// the backend afterwards removes the new device.
func TestDeviceDeletedWhileRunning(t *testing.T) {
	ext := closeExt(t)
	ctx := context.Background()
	var logs bytes.Buffer
	b := startedBackend(t, ext, &logs)
	r := backend.NewReconciler(b)
	peers := []subnet.Lease{lease("10.244.2.0/24", "192.168.77.2", TypeName)}
	if _, err := r.Full(ctx, peers); err != nil {
		t.Fatal(err)
	}
	old := b.Links()[0]
	rctx, cancel := context.WithCancel(ctx)
	done := runBackend(rctx, b)
	if out, err := exec.Command("ip", "link", "del", DeviceName).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	var err error
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err = r.Full(ctx, peers); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil || b.Links()[0] == old {
		t.Fatalf("after re-creation: %v, flannel0 index %d (was %d)", err, b.Links()[0], old)
	}
	out, _ := exec.Command("ip", "route", "show", "10.244.0.0/16").CombinedOutput()
	if !strings.Contains(string(out), "dev flannel0") {
		t.Errorf("the Network route is not back on flannel0: %s", out)
	}
	sendThroughTun(t, b, netip.MustParseAddrPort("10.244.2.9:9"))
	cancel()
	waitRun(t, done)
	if err := b.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if linkExists(DeviceName) || !portFree(t, ext) {
		t.Error("the re-created flannel0 or the port outlived Close")
	}
	if n := strings.Count(logs.String(), "TUN device re-created"); n != 1 {
		t.Errorf("re-created %d times, want once:\n%s", n, logs.String())
	}
}
