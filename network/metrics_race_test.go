package network

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netlink"

	"github.com/flanneld-go/flannel/backend"
	"github.com/flanneld-go/flannel/backend/registry"
	"github.com/flanneld-go/flannel/internal/etcdtest"
	"github.com/flanneld-go/flannel/internal/netnstest"
	"github.com/flanneld-go/flannel/subnet"
	"github.com/flanneld-go/flannel/subnet/etcd"
)

var descTestPackets = prometheus.NewDesc("flannel_test_packets_total", "Packets of the test backend.", nil, nil)

// collectingBackend has metrics whose state Prepare sets up without
// locking, as the udp backend does with its per-queue counters: a scrape
// during Prepare is a data race.
type collectingBackend struct {
	recordingBackend
	counters []*atomic.Uint64 // appended to by Prepare, read by Collect

	preparing      atomic.Bool
	collectedEarly atomic.Bool   // Collect ran while Prepare did
	inPrepare      chan struct{} // closed when Prepare starts
	release        chan struct{} // Prepare goes on once it is closed
	collects       atomic.Int64
}

func (b *collectingBackend) Prepare(ctx context.Context) (subnet.LeaseAttrs, error) {
	b.preparing.Store(true)
	close(b.inPrepare)
	<-b.release
	for range 4 {
		b.counters = append(b.counters, new(atomic.Uint64))
	}
	b.counters[0].Add(7)
	b.preparing.Store(false)
	return b.recordingBackend.Prepare(ctx)
}

func (b *collectingBackend) Describe(ch chan<- *prometheus.Desc) { ch <- descTestPackets }

func (b *collectingBackend) Collect(ch chan<- prometheus.Metric) {
	if b.preparing.Load() {
		b.collectedEarly.Store(true)
	}
	b.collects.Add(1)
	var n uint64
	for _, c := range b.counters {
		n += c.Load()
	}
	ch <- prometheus.MustNewConstMetric(descTestPackets, prometheus.CounterValue, float64(n))
}

func scrape(t *testing.T, h *Health) string {
	rec := httptest.NewRecorder()
	h.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Errorf("/metrics: %d %s", rec.Code, rec.Body)
	}
	return rec.Body.String()
}

// TestMetricsDuringBackendSetup: /metrics is scraped over and over while
// the engine prepares and starts its backend. The backend's metrics are
// collected only once Prepare has returned (so a scrape never races the
// set-up; go test -race checks the rest), and are served from then on.
func TestMetricsDuringBackendSetup(t *testing.T) {
	srv, err := etcdtest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	sm := etcd.NewManager(srv.Client(t), "/coreos.com/network", time.Hour, log)
	cfg := mustConfig(t, `{"Network":"10.244.0.0/16","Backend":{"Type":"test"}}`)
	ext := &backend.ExternalInterface{Name: "eth0", Index: 2, MTU: 1500, Addr: addrs("192.168.50.11")[0], PublicIP: addrs("192.168.50.11")[0]}
	be := &collectingBackend{inPrepare: make(chan struct{}), release: make(chan struct{})}
	health := NewHealth()
	ready := make(chan struct{})
	eng := NewEngine(Config{SubnetFile: filepath.Join(t.TempDir(), "subnet.env"), ReconcilePeriod: time.Hour, Log: log,
		Health: health, Ready: func() { close(ready) }}, sm, cfg, ext, be)
	eng.enableForwarding = func(*slog.Logger, bool) error { return nil }

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- eng.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("engine: %v", err)
		}
	}()
	// A scraper with no synchronisation with the engine, as Prometheus is.
	scraperDone := make(chan struct{})
	stop := make(chan struct{})
	go func() {
		defer close(scraperDone)
		for {
			select {
			case <-stop:
				return
			default:
				scrape(t, health)
			}
		}
	}()

	<-be.inPrepare
	if body := scrape(t, health); strings.Contains(body, "flannel_test_packets_total") {
		t.Errorf("the backend's metrics are served while it prepares:\n%s", body)
	}
	close(be.release)
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("engine exited: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("engine not ready in 20 s")
	}
	if body := scrape(t, health); !strings.Contains(body, "flannel_test_packets_total 7") {
		t.Errorf("the backend's metrics are not served once it runs:\n%s", body)
	}
	close(stop)
	<-scraperDone
	if be.collectedEarly.Load() {
		t.Error("the backend's Collect ran while its Prepare did")
	}
	if be.collects.Load() == 0 {
		t.Error("the backend's Collect never ran")
	}
}

// TestMetricsDuringUDPSetup is the same with the real udp backend (whose
// per-queue counters Prepare creates) in the test's private namespace:
// under go test -race, scraping from the start finds no race.
func TestMetricsDuringUDPSetup(t *testing.T) {
	netnstest.Require(t)
	sh(t, "ip link add ul0 type veth peer name ul0p", "ip addr add 192.168.50.11/24 dev ul0", "ip link set ul0 up", "ip link set ul0p up")
	t.Cleanup(func() { exec.Command("ip", "link", "del", "ul0").Run() })
	srv, err := etcdtest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	sm := etcd.NewManager(srv.Client(t), "/coreos.com/network", time.Hour, log)
	cfg := mustConfig(t, `{"Network":"10.244.0.0/16","Backend":{"Type":"udp"}}`)
	ext, err := FindExternal(&netlink.Handle{}, IfaceOptions{Iface: []string{"ul0"}}, log)
	if err != nil {
		t.Fatal(err)
	}
	bt, _ := registry.Lookup("udp")
	opts, err := bt.ParseOptions(cfg.Backend)
	if err != nil {
		t.Fatal(err)
	}
	be, err := bt.New(backend.Params{Ext: ext, Config: cfg, Options: opts, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	health := NewHealth()
	ready := make(chan struct{})
	eng := NewEngine(Config{SubnetFile: filepath.Join(t.TempDir(), "subnet.env"), ReconcilePeriod: time.Hour, Log: log,
		Health: health, Ready: func() { close(ready) }}, sm, cfg, ext, be)
	eng.enableForwarding = func(*slog.Logger, bool) error { return nil }

	stop := make(chan struct{})
	scraperDone := make(chan struct{})
	go func() {
		defer close(scraperDone)
		for {
			select {
			case <-stop:
				return
			default:
				scrape(t, health)
			}
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- eng.Run(ctx) }()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("engine exited: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("engine not ready in 20 s")
	}
	body := scrape(t, health)
	close(stop)
	<-scraperDone
	cancel()
	if err := <-done; err != nil {
		t.Errorf("engine: %v", err)
	}
	if !strings.Contains(body, `flannel_udp_packets_total{direction="tx"}`) {
		t.Errorf("the udp backend's metrics are not served once it runs:\n%s", body)
	}
}
