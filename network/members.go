package network

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/flanneld-go/flannel/backend"
	"github.com/flanneld-go/flannel/backend/mux"
	"github.com/flanneld-go/flannel/backend/registry"
	"github.com/flanneld-go/flannel/backend/vxlan"
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
// named it (a peer of that type appeared): its defaults, but for vxlan
// the VNI the peer's lease carries (a cluster on VNI 4096 restarted onto
// host-gw host by host must still reach its vxlan hosts). The UDP ports
// are not in leases: a mixed cluster needs the default ports, or the
// same net-conf on the hosts being switched.
func defaultOptions(typ string, peer subnet.Lease) (any, error) {
	bt, err := registry.Lookup(typ)
	if err != nil {
		return nil, err
	}
	raw := `{"Type":"` + typ + `"}`
	if vni := vxlan.LeaseVNI(peer.Attrs.BackendData); typ == vxlan.TypeName && vni > 0 {
		raw = fmt.Sprintf(`{"Type":"vxlan","VNI":%d}`, vni)
	}
	return bt.ParseOptions([]byte(raw))
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
	now := time.Now()
	if now.Before(l.memberRetryAt) {
		return // a member failed: tried again after its backoff
	}
	retired, next, err := m.Need(l.ctx, l.peers.ByType(), l.samplePeer)
	if err != nil {
		if msg := err.Error(); msg != l.memberErr {
			l.memberErr = msg
			l.e.log.Error("cannot set up the backend some peers advertise; they are unreachable from here until it can be (tried again with a backoff up to 30 s)",
				"backend", m.Primary(), "error", err)
		}
		l.memberBackoff = min(max(2*l.memberBackoff, reconcileRetry), 30*time.Second)
		l.memberRetryAt = now.Add(l.memberBackoff)
		l.retire.Reset(l.memberBackoff)
	} else if l.memberErr != "" {
		l.memberErr, l.memberBackoff, l.memberRetryAt = "", 0, time.Time{}
		l.e.log.Info("the backends of every peer are set up again", "backend", m.Primary(), "backends", m.Types())
	}
	if m.Changed() {
		l.needFull = true
	}
	if len(retired) > 0 && l.staleChecked {
		removeStaleDevices(&netlink.Handle{}, l.e.be, l.e.log)
	}
	if next > 0 && err == nil {
		l.retire.Reset(next)
	}
}

// samplePeer is a peer of typ (zero: none), for a member's options.
func (l *loop) samplePeer(typ string) subnet.Lease {
	peers, _ := l.peers.All()
	for p := range peers {
		if mux.LeaseType(*p) == typ {
			return *p
		}
	}
	return subnet.Lease{}
}

// countByBackend exports the peers by backend type; a type without
// peers any more goes (no Reset: a scrape never sees the series missing).
func (l *loop) countByBackend() {
	g := l.e.health.metrics.peersByBackend
	by := l.peers.ByType()
	for t := range l.exported {
		if by[t] == 0 {
			g.DeleteLabelValues(t)
			delete(l.exported, t)
		}
	}
	for t, n := range by {
		g.WithLabelValues(t).Set(float64(n))
		l.exported[t] = true
	}
}
