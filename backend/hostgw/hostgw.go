// Package hostgw is the host-gw backend: plain routes, no encapsulation.
//
// Design notes. For every peer lease this host installs
//
//	<peer subnet> via <peer PublicIP> dev <external interface> proto 98
//
// (and the same for the IPv6 subnet via PublicIPv6 when dual-stack). The
// peer's own kernel then forwards to its cni0 bridge. This is the fastest
// backend (no per-packet work beyond routing) but it only works when every
// peer's PublicIP is directly reachable on the external interface's L2
// segment: a route via a gateway that is not on-link is refused by the
// kernel, and even an "onlink" one would send frames to a MAC the peer does
// not own. Peers that are not directly connected are therefore skipped with
// one log line each, naming the fix (vxlan, or vxlan with DirectRouting),
// and every other peer is still served.
//
// The desired routes are recomputed from the whole peer set on every call
// and applied by dataplane.SyncRoutes from one dump of the routing table, so
// a route deleted or altered by hand comes back at the next reconcile, and
// routes of departed peers (marked proto 98) go away.
package hostgw

import (
	"context"
	"log/slog"
	"net/netip"
	"sync"

	"github.com/flanneld-go/flannel/backend"
	"github.com/flanneld-go/flannel/backend/dataplane"
	"github.com/flanneld-go/flannel/subnet"
)

// TypeName is the net-conf Backend.Type of this backend.
const TypeName = "host-gw"

// Options are the backend's net-conf options. host-gw has none besides
// Type; unknown keys are rejected so typos do not pass silently.
type Options struct {
	Type string
}

// Type registers the backend.
var Type = backend.Type{Name: TypeName, ParseOptions: parseOptions, New: newBackend}

func parseOptions(raw []byte) (any, error) {
	if err := backend.CheckOptionNames(raw, TypeName); err != nil {
		return nil, err
	}
	return Options{Type: TypeName}, nil
}

// Connected reports whether ip is on a network the external interface is
// directly attached to.
type Connected func(ip netip.Addr) (bool, error)

// HostGW is the backend. Kernel and Connected are replaceable for tests.
type HostGW struct {
	ext       *backend.ExternalInterface
	cfg       *subnet.Config
	log       *slog.Logger
	Kernel    dataplane.RouteKernel
	Connected Connected

	mu    sync.Mutex
	peers *backend.PeerLog
}

func newBackend(p backend.Params) (backend.Backend, error) {
	k := dataplane.NewNetlink(nil)
	return &HostGW{
		ext: p.Ext, cfg: p.Config, log: p.Log.With("backend", TypeName),
		Kernel:    k,
		Connected: LinkConnected(k, p.Ext.Index),
		peers:     backend.NewPeerLog(p.Log.With("backend", TypeName)),
	}, nil
}

// New returns a backend over the given kernel, for tests.
func New(ext *backend.ExternalInterface, cfg *subnet.Config, log *slog.Logger, k dataplane.RouteKernel, c Connected) *HostGW {
	return &HostGW{ext: ext, cfg: cfg, log: log, Kernel: k, Connected: c, peers: backend.NewPeerLog(log)}
}

// Prepare implements backend.Backend: host-gw has no device and no data.
func (b *HostGW) Prepare(context.Context) (subnet.LeaseAttrs, error) {
	return subnet.LeaseAttrs{BackendType: TypeName}, nil
}

// Start implements backend.Backend: packets leave unencapsulated, so pods
// use the external interface's MTU.
func (b *HostGW) Start(context.Context, subnet.Lease) (int, error) {
	return b.ext.MTU, nil
}

// Reconcile implements backend.Backend.
func (b *HostGW) Reconcile(_ context.Context, peers []subnet.Lease) error {
	desired := b.Desired(peers)
	ch, err := dataplane.SyncRoutes(b.Kernel, desired)
	if ch.Replaced > 0 || ch.Deleted > 0 {
		b.log.Info("routes updated", "installed", ch.Replaced, "removed", ch.Deleted, "routes", len(desired))
	}
	return err
}

// Desired computes the routes for peers, logging once per peer when one
// cannot be served.
func (b *HostGW) Desired(peers []subnet.Lease) []dataplane.Route {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []dataplane.Route
	present := map[string]bool{}
	for _, p := range peers {
		key := p.Key()
		present[key] = true
		if !b.peers.OfType(p, TypeName) {
			continue
		}
		if r, ok := b.route(key, p.Subnet, p.Attrs.PublicIP); ok {
			out = append(out, r)
		}
		if b.cfg.EnableIPv6 && p.IPv6Subnet.IsValid() && p.Attrs.PublicIPv6.IsValid() {
			if r, ok := b.route(key, p.IPv6Subnet, p.Attrs.PublicIPv6); ok {
				out = append(out, r)
			}
		}
	}
	b.peers.Prune(present)
	return out
}

func (b *HostGW) route(key string, dst netip.Prefix, gw netip.Addr) (dataplane.Route, bool) {
	ok, err := b.Connected(gw)
	if err != nil {
		b.peers.Warn(key, "err:"+err.Error(), "cannot check whether the peer is directly reachable; skipping it",
			"peer_subnet", dst, "peer_ip", gw, "error", err)
		return dataplane.Route{}, false
	}
	if !ok {
		b.peers.Warn(key, "l2:"+gw.String(), "peer is not on this host's L2 segment, host-gw cannot route to it; use the vxlan backend (with DirectRouting to keep direct routes for same-segment peers)",
			"peer_subnet", dst, "peer_ip", gw, "iface", b.ext.Name)
		return dataplane.Route{}, false
	}
	return dataplane.Route{Dst: dst, Gw: gw, LinkIndex: b.ext.Index, Proto: dataplane.Proto}, true
}

// LinkConnected checks directness against the addresses of the link.
func LinkConnected(k *dataplane.Netlink, linkIndex int) Connected {
	return func(ip netip.Addr) (bool, error) { return k.OnLink(linkIndex, ip) }
}
