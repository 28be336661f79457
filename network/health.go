package network

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/flanneld-go/flannel/backend/dataplane"
)

// Health holds the daemon's readiness and its Prometheus metrics, served on
// --healthz-ip:--healthz-port:
//
//	/healthz  200 while the process runs
//	/readyz   200 once the lease is held, subnet.env written, the backend and
//	          the iptables rules in place and etcd reachable; else 503 with
//	          the reasons, one per line
//	/metrics  Prometheus text format (see Documentation/metrics.md)
type Health struct {
	mu      sync.Mutex
	state   map[string]error // readiness condition -> nil when met
	checks  map[string]func() error
	reg     *prometheus.Registry
	metrics *metrics
}

// NewHealth returns a Health with every readiness condition unmet.
func NewHealth() *Health {
	h := &Health{state: map[string]error{}, checks: map[string]func() error{}, reg: prometheus.NewRegistry()}
	for _, c := range []string{"lease", "subnet.env", "backend"} {
		h.state[c] = errors.New("not yet")
	}
	h.metrics = newMetrics(h.reg)
	return h
}

// Set records whether a readiness condition is met (err == nil).
func (h *Health) Set(cond string, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.state[cond] = err
}

// AddCheck adds a condition evaluated at each /readyz request.
func (h *Health) AddCheck(cond string, f func() error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.checks[cond] = f
}

// Ready returns nil when every condition is met, else the unmet ones.
func (h *Health) Ready() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	var reasons []string
	for c, err := range h.state {
		if err != nil {
			reasons = append(reasons, c+": "+err.Error())
		}
	}
	for c, f := range h.checks {
		if err := f(); err != nil {
			reasons = append(reasons, c+": "+err.Error())
		}
	}
	if len(reasons) == 0 {
		return nil
	}
	sort.Strings(reasons)
	return errors.New(strings.Join(reasons, "\n"))
}

// Register adds a collector (a backend's data-path counters, say).
func (h *Health) Register(c prometheus.Collector) error { return h.reg.Register(c) }

// Handler serves /healthz, /readyz and /metrics.
func (h *Health) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := h.Ready(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, err)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.Handle("/metrics", promhttp.HandlerFor(h.reg, promhttp.HandlerOpts{}))
	return mux
}

// Start listens on addr and serves in the background until ctx is done. A
// listen failure is returned at once (the port is taken, or the address is
// not ours).
func (h *Health) Start(ctx context.Context, addr string, log *slog.Logger) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("health endpoint on %s: %w (change --healthz-ip/--healthz-port, or set the port to 0 to disable it)", addr, err)
	}
	srv := &http.Server{Handler: h.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("health endpoint stopped", "addr", addr, "error", err)
		}
	}()
	log.Info("serving /healthz, /readyz and /metrics", "addr", ln.Addr().String())
	return nil
}

// metrics are the daemon's own series; names are documented in
// Documentation/metrics.md.
type metrics struct {
	leaseExpiry       prometheus.Gauge
	peers             prometheus.Gauge
	reconciles        *prometheus.CounterVec
	reconcileErrors   *prometheus.CounterVec
	reconcileDuration *prometheus.HistogramVec
	etcdErrors        *prometheus.CounterVec
	dataplaneChanges  *prometheus.CounterVec
	leasesRejected    *prometheus.CounterVec
	// peersByBackend are the peers by the backend type they advertise;
	// switches counts live backend switches by result, switchSeconds is
	// the last one's duration (put seen -> lease re-published and the
	// data plane programmed).
	peersByBackend *prometheus.GaugeVec
	switches       *prometheus.CounterVec
	switchSeconds  prometheus.Gauge
	// kernelWatched is 1 while the kernel's tables are watched (drift.go);
	// kernelDrift counts the full reconciles drift caused.
	kernelWatched prometheus.Gauge
	kernelDrift   prometheus.Counter
}

func newMetrics(reg *prometheus.Registry) *metrics {
	m := &metrics{
		leaseExpiry: prometheus.NewGauge(prometheus.GaugeOpts{Name: "flannel_lease_expiry_timestamp_seconds",
			Help: "Unix time at which this host's subnet lease expires unless renewed (0 for a reservation)."}),
		peers: prometheus.NewGauge(prometheus.GaugeOpts{Name: "flannel_peers",
			Help: "Number of other hosts' leases known from etcd."}),
		reconciles: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "flannel_reconcile_total",
			Help: "Data-plane reconcile runs."}, []string{"backend"}),
		reconcileErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "flannel_reconcile_errors_total",
			Help: "Data-plane reconcile runs that failed."}, []string{"backend"}),
		reconcileDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "flannel_reconcile_duration_seconds",
			Help: "Time a reconcile run took.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}, []string{"backend"}),
		etcdErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "flannel_etcd_errors_total",
			Help: "Failed etcd requests, by operation."}, []string{"op"}),
		dataplaneChanges: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "flannel_dataplane_changes_total",
			Help: "Kernel entries the reconciler set or deleted, by kind (route, neigh, fdb, addr) and op (set, delete)."}, []string{"kind", "op"}),
		leasesRejected: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "flannel_leases_rejected_total",
			Help: "Leases from etcd that are not peers, counted once per key and reason (and again when the lease changes), by reason."},
			[]string{"reason"}),
		peersByBackend: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "flannel_peers_by_backend",
			Help: "Peers by the backend type their lease advertises (each is reached by that backend)."}, []string{"backend"}),
		switches: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "flannel_backend_switches_total",
			Help: "Net-conf changes of Backend applied live (result ok) or refused (result refused, failed)."}, []string{"result"}),
		switchSeconds: prometheus.NewGauge(prometheus.GaugeOpts{Name: "flannel_backend_switch_duration_seconds",
			Help: "How long the last live backend switch took on this host: from seeing the new net-conf to the lease re-published and the data plane programmed."}),
		kernelWatched: prometheus.NewGauge(prometheus.GaugeOpts{Name: "flannel_kernel_watch_active",
			Help: "1 while the kernel's change notifications are watched for changes to our entries (host-gw, vxlan, udp), 0 otherwise."}),
		kernelDrift: prometheus.NewCounter(prometheus.CounterOpts{Name: "flannel_kernel_drift_total",
			Help: "Times the kernel watch saw entries of ours changed by someone else (or lost notifications) and the whole data plane was compared with the kernel."}),
	}
	for _, r := range Reasons {
		m.leasesRejected.WithLabelValues(string(r)) // every reason is exported, at 0 until it happens
	}
	reg.MustRegister(m.leaseExpiry, m.peers, m.reconciles, m.reconcileErrors, m.reconcileDuration, m.etcdErrors, m.dataplaneChanges,
		m.leasesRejected, m.peersByBackend, m.switches, m.switchSeconds, m.kernelWatched, m.kernelDrift)
	for _, r := range []string{"ok", "refused", "failed"} {
		m.switches.WithLabelValues(r)
	}
	return m
}

// countChanges adds one reconcile's changes to flannel_dataplane_changes_total.
func (m *metrics) countChanges(ch dataplane.Changes) {
	for _, c := range []struct {
		kind, op string
		n        int
	}{
		{"route", "set", ch.RoutesSet}, {"route", "delete", ch.RoutesDeleted},
		{"neigh", "set", ch.NeighsSet}, {"neigh", "delete", ch.NeighsDeleted},
		{"fdb", "set", ch.FDBsSet}, {"fdb", "delete", ch.FDBsDeleted},
		{"addr", "set", ch.AddrsAdded}, {"addr", "delete", ch.AddrsDeleted},
	} {
		if c.n > 0 {
			m.dataplaneChanges.WithLabelValues(c.kind, c.op).Add(float64(c.n))
		}
	}
}
