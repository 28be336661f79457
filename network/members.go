package network

import (
	"fmt"
	"log/slog"

	"github.com/vishvananda/netlink"

	"github.com/flanneld-go/flannel/backend"
	"github.com/flanneld-go/flannel/backend/mux"
	"github.com/flanneld-go/flannel/backend/registry"
	"github.com/flanneld-go/flannel/subnet"
)

// newBackend builds this host's backend: a mux.Mux over the net-conf's
// backend when it can be mixed (each peer is then reached by the backend
// it advertises, see backend/mux), else the backend alone.
func newBackend(c Config, netcfg *subnet.Config, ext *backend.ExternalInterface, opts any, log *slog.Logger) (backend.Backend, error) {
	bt, err := registry.Lookup(netcfg.BackendType)
	if err != nil {
		return nil, err
	}
	be, err := bt.New(backend.Params{Ext: ext, Config: netcfg, Options: opts, Log: log, Tuning: c.UDP})
	if err != nil {
		return nil, err
	}
	if _, ok := be.(backend.PerPeer); !ok || !mux.CanMix(netcfg.BackendType) {
		return be, nil
	}
	return mux.New(mux.Config{Log: log, New: memberFactory(c, netcfg, ext, log), Defaults: defaultOptions}, netcfg.BackendType, opts)
}

// memberFactory creates the backends a Mux combines, from the registry.
func memberFactory(c Config, netcfg *subnet.Config, ext *backend.ExternalInterface, log *slog.Logger) mux.Factory {
	return func(typ string, opts any) (backend.PerPeer, error) {
		bt, err := registry.Lookup(typ)
		if err != nil {
			return nil, err
		}
		be, err := bt.New(backend.Params{Ext: ext, Config: netcfg, Options: opts, Log: log, Tuning: c.UDP})
		if err != nil {
			return nil, err
		}
		pp, ok := be.(backend.PerPeer)
		if !ok {
			return nil, fmt.Errorf("the %s backend cannot serve peers beside another backend", typ)
		}
		return pp, nil
	}
}

// defaultOptions are a backend type's options when the net-conf never
// named it (a peer of that type appeared): its defaults.
func defaultOptions(typ string) (any, error) {
	bt, err := registry.Lookup(typ)
	if err != nil {
		return nil, err
	}
	return bt.ParseOptions([]byte(`{"Type":"` + typ + `"}`))
}

// members makes the Mux's members match the peers' types before a pass:
// a member added or retired means every part is computed again (a full
// pass), and a retired member's devices are deleted. A member that could
// not be set up is logged once per distinct error and tried again with
// the next pass.
func (l *loop) members() {
	m := l.e.mux
	if m == nil {
		return
	}
	retired, next, err := m.Need(l.ctx, l.peers.ByType())
	if err != nil {
		if msg := err.Error(); msg != l.memberErr {
			l.memberErr = msg
			l.e.log.Error("cannot set up the backend some peers advertise; they are unreachable from here until it can be",
				"backend", m.Primary(), "error", err)
		}
		l.retry.Reset(reconcileRetry)
	} else if l.memberErr != "" {
		l.memberErr = ""
		l.e.log.Info("the backends of every peer are set up again", "backend", m.Primary(), "backends", m.Types())
	}
	if m.Changed() {
		l.needFull = true
	}
	if len(retired) > 0 && l.staleChecked {
		removeStaleDevices(&netlink.Handle{}, l.e.be, l.e.log)
	}
	if next > 0 {
		l.retire.Reset(next)
	}
}

// countByBackend exports the peers by backend type.
func (l *loop) countByBackend() {
	g := l.e.health.metrics.peersByBackend
	g.Reset()
	for t, n := range l.peers.ByType() {
		g.WithLabelValues(t).Set(float64(n))
	}
}
