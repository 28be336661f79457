package network

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/flanneld-go/flannel/backend"
	"github.com/flanneld-go/flannel/backend/dataplane"
	"github.com/flanneld-go/flannel/internal/etcdtest"
	"github.com/flanneld-go/flannel/subnet"
	"github.com/flanneld-go/flannel/subnet/etcd"
)

// recordingBackend is a backend that touches no kernel state and records
// what the engine asks of it.
type recordingBackend struct {
	mu      sync.Mutex
	started []subnet.Lease
	peers   []subnet.Lease
	calls   int
}

func (b *recordingBackend) Prepare(context.Context) (subnet.LeaseAttrs, error) {
	return subnet.LeaseAttrs{BackendType: "test", BackendData: []byte(`{"k":1}`)}, nil
}

func (b *recordingBackend) Start(_ context.Context, l subnet.Lease) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.started = append(b.started, l)
	return 1400, nil
}

func (b *recordingBackend) Reconcile(_ context.Context, peers []subnet.Lease) (dataplane.Changes, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.peers = peers
	b.calls++
	return dataplane.Changes{}, nil
}

func (b *recordingBackend) peersNow() []subnet.Lease {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.peers
}

func (b *recordingBackend) peerSubnets() map[netip.Prefix]bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := map[netip.Prefix]bool{}
	for _, p := range b.peers {
		out[p.Subnet] = true
	}
	return out
}

type testHost struct {
	eng    *Engine
	be     *recordingBackend
	file   string
	cancel context.CancelFunc
	done   chan error
}

func startHost(t *testing.T, srv *etcdtest.Server, cfg *subnet.Config, ip, file string) *testHost {
	t.Helper()
	return startHostWith(t, srv, cfg, ip, file, func(*Engine) {})
}

func startHostLog(t *testing.T, srv *etcdtest.Server, cfg *subnet.Config, ip, file string, log *slog.Logger) *testHost {
	t.Helper()
	return startHostWithLog(t, srv, cfg, ip, file, log, func(*Engine) {})
}

// startHostWith is startHost with a change to the engine before it runs
// (its config, its kernel).
func startHostWith(t *testing.T, srv *etcdtest.Server, cfg *subnet.Config, ip, file string, set func(*Engine)) *testHost {
	t.Helper()
	return startHostWithLog(t, srv, cfg, ip, file, slog.New(slog.NewTextHandler(io.Discard, nil)), set)
}

func startHostWithLog(t *testing.T, srv *etcdtest.Server, cfg *subnet.Config, ip, file string, log *slog.Logger, set func(*Engine)) *testHost {
	t.Helper()
	sm := etcd.NewManager(srv.Client(t), "/coreos.com/network", time.Hour, log)
	ext := &backend.ExternalInterface{Name: "eth0", Index: 2, MTU: 1500, Addr: netip.MustParseAddr(ip), PublicIP: netip.MustParseAddr(ip)}
	be := &recordingBackend{}
	ready := make(chan struct{})
	h := &testHost{be: be, file: file, done: make(chan error, 1)}
	h.eng = NewEngine(Config{SubnetFile: file, ReconcilePeriod: 300 * time.Millisecond, Log: log, Ready: func() {
		// Readiness comes only after subnet.env exists.
		if _, err := ReadSubnetEnv(file); err != nil {
			t.Errorf("ready before subnet.env was written: %v", err)
		}
		close(ready)
	}}, sm, cfg, ext, be)
	h.eng.enableForwarding = func(*slog.Logger, bool) error { return nil } // no root needed
	h.eng.kernel = &lockedKernel{Fake: dataplane.NewFake()}
	set(h.eng)
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.done <- h.eng.Run(ctx) }()
	select {
	case <-ready:
	case err := <-h.done:
		t.Fatalf("engine for %s exited: %v", ip, err)
	case <-time.After(20 * time.Second):
		t.Fatalf("engine for %s not ready in 20s", ip)
	}
	return h
}

func (h *testHost) stop(t *testing.T) {
	h.cancel()
	if err := <-h.done; err != nil {
		t.Errorf("engine stopped with %v", err)
	}
}

func eventually(t *testing.T, what string, d time.Duration, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true after %v", what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestEngineLifecycle(t *testing.T) {
	srv, err := etcdtest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	cli := srv.Client(t)
	ctx := context.Background()
	netconf := `{"Network":"10.244.0.0/16","Backend":{"Type":"test"}}`
	cli.Put(ctx, "/coreos.com/network/config", netconf)
	cfg, _, _ := subnet.ParseConfig([]byte(netconf))
	dir := t.TempDir()

	a := startHost(t, srv, cfg, "192.168.50.11", filepath.Join(dir, "a.env"))
	defer a.stop(t)
	env, err := ReadSubnetEnv(a.file)
	if err != nil {
		t.Fatal(err)
	}
	la := a.eng.Lease()
	if env.Subnet != netip.PrefixFrom(subnet.FirstHost(la.Subnet), 24) || env.MTU != 1400 || env.Network != cfg.Network {
		t.Fatalf("subnet.env %+v for lease %s", env, la.Subnet)
	}

	b := startHost(t, srv, cfg, "192.168.50.12", filepath.Join(dir, "b.env"))
	lb := b.eng.Lease()
	eventually(t, "A sees B", 2*time.Second, func() bool { return a.be.peerSubnets()[lb.Subnet] })
	eventually(t, "B sees A", 2*time.Second, func() bool { return b.be.peerSubnets()[la.Subnet] })
	if a.be.peerSubnets()[la.Subnet] {
		t.Error("A's own lease passed to its backend as a peer")
	}

	// The timer reconciles even without changes.
	a.be.mu.Lock()
	n := a.be.calls
	a.be.mu.Unlock()
	eventually(t, "periodic reconcile", 2*time.Second, func() bool { a.be.mu.Lock(); defer a.be.mu.Unlock(); return a.be.calls > n })

	// A restart of B keeps its subnet (lease found by PublicIP).
	b.stop(t)
	b = startHost(t, srv, cfg, "192.168.50.12", filepath.Join(dir, "b.env"))
	if got := b.eng.Lease().Subnet; got != lb.Subnet {
		t.Fatalf("restarted B got %s, want %s", got, lb.Subnet)
	}

	// An operator deletes A's lease: A takes the same subnet again.
	if _, err := cli.Delete(ctx, "/coreos.com/network/subnets/"+la.Key()); err != nil {
		t.Fatal(err)
	}
	eventually(t, "A re-acquires", 5*time.Second, func() bool {
		r, err := cli.Get(ctx, "/coreos.com/network/subnets/"+la.Key())
		return err == nil && len(r.Kvs) == 1
	})

	// B's lease deleted and B stopped: A drops it.
	b.stop(t)
	if _, err := cli.Delete(ctx, "/coreos.com/network/subnets/"+lb.Key()); err != nil {
		t.Fatal(err)
	}
	eventually(t, "A drops B", 2*time.Second, func() bool { return !a.be.peerSubnets()[lb.Subnet] })
}
