package network

import (
	"context"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flanneld-go/flannel/backend/dataplane"
	"github.com/flanneld-go/flannel/internal/etcdtest"
	"github.com/flanneld-go/flannel/subnet"
)

// lockedKernel is a fake kernel the engine's goroutines and the test may
// share: its route calls hold a lock.
type lockedKernel struct {
	mu sync.Mutex
	*dataplane.Fake
}

func (k *lockedKernel) RouteList() ([]dataplane.Route, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.Fake.RouteList()
}

func (k *lockedKernel) RouteReplace(r dataplane.Route) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.Fake.RouteReplace(r)
}

func (k *lockedKernel) RouteDelete(r dataplane.Route) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.Fake.RouteDelete(r)
}

// blackholes are the blackhole lines of the fake's dump.
func (k *lockedKernel) blackholes() string {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []string
	for _, l := range strings.Split(k.Dump(), "\n") {
		if strings.Contains(l, "blackhole") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestEngineBlackhole: with --ip-blackhole-route the engine keeps a
// blackhole for each of its subnets, restored after a hand deletion;
// restarted without the flag, it removes it.
func TestEngineBlackhole(t *testing.T) {
	srv, err := etcdtest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	netconf := `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"test"}}`
	srv.Client(t).Put(context.Background(), "/coreos.com/network/config", netconf)
	cfg, _, _ := subnet.ParseConfig([]byte(netconf))
	file := filepath.Join(t.TempDir(), "a.env")
	k := &lockedKernel{Fake: dataplane.NewFake()}
	// Someone else's blackhole stays whatever we do.
	k.RouteReplace(dataplane.Route{Dst: netip.MustParsePrefix("10.99.0.0/16"), Type: dataplane.Blackhole, Proto: 4})
	with := func(on bool) func(*Engine) {
		return func(e *Engine) { e.kernel, e.cfg.BlackholeRoute = k, on }
	}

	a := startHostWith(t, srv, cfg, "192.168.50.11", file, with(true))
	l := a.eng.Lease()
	lines := []string{"ip route blackhole 10.99.0.0/16 proto 4",
		"ip route blackhole " + l.Subnet.String() + " proto 98 metric 65535",
		"ip route blackhole " + l.IPv6Subnet.String() + " proto 98 metric 65535"}
	slices.Sort(lines) // as Dump sorts them
	want := strings.Join(lines, "\n")
	if got := k.blackholes(); got != want {
		t.Fatalf("at ready:\n%s\nwant:\n%s", got, want)
	}
	k.RouteDelete(dataplane.BlackholeRoutes(l.Subnet)[0])
	eventually(t, "the deleted blackhole is back", 3*time.Second, func() bool { return k.blackholes() == want })
	a.stop(t)

	a = startHostWith(t, srv, cfg, "192.168.50.11", file, with(false))
	defer a.stop(t)
	if got := k.blackholes(); got != "ip route blackhole 10.99.0.0/16 proto 4" {
		t.Fatalf("without the flag:\n%s", got)
	}
}
