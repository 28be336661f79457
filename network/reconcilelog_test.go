package network

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flanneld-go/flannel/backend/dataplane"
	"github.com/flanneld-go/flannel/internal/etcdtest"
	"github.com/flanneld-go/flannel/subnet"
)

// failingBackend fails its first reconciles with the same error.
type failingBackend struct {
	*recordingBackend
	failures atomic.Int32
}

func (b *failingBackend) Reconcile(ctx context.Context, peers []subnet.Lease) (dataplane.Changes, error) {
	if b.failures.Add(-1) >= 0 {
		return dataplane.Changes{}, errors.New("cannot create VXLAN device flannel.1: foreign0 holds VNI 1")
	}
	return b.recordingBackend.Reconcile(ctx, peers)
}

// TestReconcileErrorLoggedOnce: a failure that persists is retried every
// second but logged once, and its end once.
func TestReconcileErrorLoggedOnce(t *testing.T) {
	srv, err := etcdtest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	netconf := `{"Network":"10.244.0.0/16","Backend":{"Type":"test"}}`
	srv.Client(t).Put(context.Background(), "/coreos.com/network/config", netconf)
	cfg, _, _ := subnet.ParseConfig([]byte(netconf))
	var logs syncBuffer
	be := &failingBackend{recordingBackend: &recordingBackend{}}
	be.failures.Store(3)
	h := startHostWithLog(t, srv, cfg, "192.168.50.11", filepath.Join(t.TempDir(), "a.env"),
		slog.New(slog.NewTextHandler(&logs, nil)), func(e *Engine) { e.be = be })
	defer h.stop(t)
	eventually(t, "the backend heals", 10*time.Second, func() bool { return strings.Contains(logs.String(), "reconcile succeeded again") })
	if n := strings.Count(logs.String(), "reconcile failed"); n != 1 {
		t.Errorf("%d failure lines for one persisting error, want 1:\n%s", n, logs.String())
	}
	if be.failures.Load() >= 0 {
		t.Errorf("the failing reconcile was not retried (%d failures left)", be.failures.Load())
	}
}
