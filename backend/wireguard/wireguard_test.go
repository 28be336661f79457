package wireguard

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/flanneld-go/flannel/backend"
	"github.com/flanneld-go/flannel/internal/netnstest"
	"github.com/flanneld-go/flannel/subnet"
)

// privateRun marks the test process that runs with a private, empty
// /run/wireguard (so its UAPI socket meets no other's).
const privateRun = "FLANNEL_WG_TEST_PRIVATE_RUN"

// TestMain runs the tests in a private network namespace and, inside it,
// in a private mount namespace with a tmpfs on /run/wireguard.
func TestMain(m *testing.M) {
	if netnstest.Inside() && os.Getenv(privateRun) == "" {
		cmd := exec.Command("unshare", append([]string{"--mount", "--propagation", "private", "sh", "-c",
			`mkdir -p /run/wireguard && mount -t tmpfs wgtest /run/wireguard && exec "$@"`, "sh"}, os.Args...)...)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		cmd.Env = append(os.Environ(), privateRun+"=1")
		if err := cmd.Run(); err != nil {
			if ee, ok := err.(*exec.ExitError); ok {
				os.Exit(ee.ExitCode())
			}
			fmt.Fprintf(os.Stderr, "re-running with a private /run/wireguard: %v\n", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	netnstest.Main(m)
}

func sh(t *testing.T, cmd string) string {
	t.Helper()
	out, err := exec.Command("sh", "-c", cmd).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", cmd, err, out)
	}
	return string(out)
}

// underlay gives the private namespace an external interface ul0.
func underlay(t *testing.T) *backend.ExternalInterface {
	t.Helper()
	netnstest.Require(t)
	sh(t, "ip link add ul0 type veth peer name ul0p && ip addr add 192.168.50.11/24 dev ul0 && ip link set ul0 up && ip link set ul0p up")
	t.Cleanup(func() { exec.Command("sh", "-c", "ip link del ul0").Run() })
	link, err := netlink.LinkByName("ul0")
	if err != nil {
		t.Fatal(err)
	}
	return &backend.ExternalInterface{Name: "ul0", Index: link.Attrs().Index, MTU: 1500,
		Addr: netip.MustParseAddr("192.168.50.11"), PublicIP: netip.MustParseAddr("192.168.50.11")}
}

func devicePeers(t *testing.T, c *wgctrl.Client) map[wgtypes.Key]wgtypes.Peer {
	t.Helper()
	d, err := c.Device(Dev4Name)
	if err != nil {
		t.Fatal(err)
	}
	out := map[wgtypes.Key]wgtypes.Peer{}
	for _, p := range d.Peers {
		out[p.PublicKey] = p
	}
	return out
}

// TestEmbeddedDevice runs the backend against the real kernel (which has
// no WireGuard module here: the embedded device) in a private namespace:
// key, device, addresses, routes, peers reconciled after changes by hand,
// the device re-created after deletion, the key reused by a restart.
func TestEmbeddedDevice(t *testing.T) {
	ext := underlay(t)
	cfg, _, err := subnet.ParseConfig([]byte(`{"Network":"10.244.0.0/16","Backend":{"Type":"wireguard"}}`))
	if err != nil {
		t.Fatal(err)
	}
	keyPath := filepath.Join(t.TempDir(), "wgkey")
	var logs lockedBuffer // the device's goroutines log too
	log := slog.New(slog.NewTextHandler(&logs, nil))
	b := New(ext, cfg, defaults(t), keyPath, log)
	ctx, stop := run(t, b)
	attrs, err := b.Prepare(ctx)
	if err != nil {
		t.Fatal(err)
	}
	key, _, _ := loadOrCreateKey(keyPath)
	if want := fmt.Sprintf(`{"PublicKey":%q,"Port":51820}`, key.PublicKey().String()); string(attrs.BackendData) != want {
		t.Errorf("BackendData %s, want %s", attrs.BackendData, want)
	}
	if !strings.Contains(logs.String(), "impl=") {
		t.Errorf("the choice of device is not logged:\n%s", logs.String())
	}
	if strings.Contains(logs.String(), key.String()) {
		t.Fatalf("the private key is in the log:\n%s", logs.String())
	}
	own := subnet.Lease{Subnet: netip.MustParsePrefix("10.244.3.0/24")}
	mtu, err := b.Start(ctx, own)
	if err != nil || mtu != 1420 {
		t.Fatalf("Start: %d %v", mtu, err)
	}
	if a := sh(t, "ip addr show dev flannel-wg"); !strings.Contains(a, "inet 10.244.3.0/32") || !strings.Contains(a, "mtu 1420") {
		t.Errorf("device: %s", a)
	}
	if r := sh(t, "ip route show proto 98"); !strings.Contains(r, "10.244.0.0/16 dev flannel-wg") {
		t.Errorf("routes: %s", r)
	}
	c, err := wgctrl.New()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	dev, err := c.Device(Dev4Name)
	if err != nil || dev.ListenPort != 51820 || dev.PrivateKey != key {
		t.Fatalf("device config: %v %v", dev, err)
	}

	p2, p4 := peer("10.244.2.0/24", "192.168.50.12", testKey(2), 1), peer("10.244.4.0/24", "192.168.50.14", testKey(4), 2)
	reconcile := func(peers ...subnet.Lease) {
		t.Helper()
		if _, err := b.Reconcile(ctx, peers); err != nil {
			t.Fatal(err)
		}
	}
	reconcile(p2, p4)
	got := devicePeers(t, c)
	if len(got) != 2 || got[testKey(2)].Endpoint.String() != "192.168.50.12:51820" ||
		prefixes(got[testKey(4)].AllowedIPs)[0] != netip.MustParsePrefix("10.244.4.0/24") {
		t.Fatalf("peers: %+v", got)
	}

	// Removed by hand (wg set flannel-wg peer ... remove): it comes back.
	if err := c.ConfigureDevice(Dev4Name, wgtypes.Config{Peers: []wgtypes.PeerConfig{{PublicKey: testKey(2), Remove: true}}}); err != nil {
		t.Fatal(err)
	}
	logs.Reset()
	reconcile(p2, p4)
	if got := devicePeers(t, c); len(got) != 2 || !strings.Contains(logs.String(), "added=1 updated=0 removed=0") {
		t.Errorf("after a hand removal: %d peers, log %s", len(got), logs.String())
	}

	// p4 moves: only p4 is updated; p2 leaves: removed.
	p4.Attrs.PublicIP = netip.MustParseAddr("192.168.50.24")
	logs.Reset()
	reconcile(p4)
	got = devicePeers(t, c)
	if len(got) != 1 || got[testKey(4)].Endpoint.String() != "192.168.50.24:51820" || !strings.Contains(logs.String(), "added=0 updated=1 removed=1") {
		t.Errorf("after a move and a departure: %+v, log %s", got, logs.String())
	}

	// The device deleted by hand: re-created with its key, address and peers.
	sh(t, "ip link del flannel-wg")
	reconcile(p4)
	if a := sh(t, "ip addr show dev flannel-wg"); !strings.Contains(a, "inet 10.244.3.0/32") {
		t.Errorf("re-created device: %s", a)
	}
	if got := devicePeers(t, c); len(got) != 1 {
		t.Errorf("re-created device has %d peers", len(got))
	}
	if d, err := c.Device(Dev4Name); err != nil || d.PrivateKey != key {
		t.Errorf("re-created device lost its key: %v", err)
	}

	// A restart reuses the key.
	stop()
	waitGone(t, "flannel-wg")
	b2 := New(ext, cfg, defaults(t), keyPath, log)
	ctx2, _ := run(t, b2)
	attrs2, err := b2.Prepare(ctx2)
	if err != nil || string(attrs2.BackendData) != string(attrs.BackendData) {
		t.Errorf("restart: %s %v, want %s", attrs2.BackendData, err, attrs.BackendData)
	}
}

// run runs b's Run until stop, or the end of the test.
func run(t *testing.T, b *WireGuard) (context.Context, func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return ctx, stop
}

// waitGone waits for a device to disappear (an embedded device's TUN goes
// when its file is closed).
func waitGone(t *testing.T, name string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if _, err := netlink.LinkByName(name); err != nil {
			return
		}
	}
	t.Fatalf("%s still exists", name)
}

// lockedBuffer is a log sink shared by the test and the device's
// goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *lockedBuffer) Reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b.Reset()
}
