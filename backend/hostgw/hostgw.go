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
// Desired is a pure function from the peer set and the external
// interface's networks to a dataplane.State, and PeerState the same for
// one peer: the engine applies a changed peer's route alone
// (backend.Reconciler), and on its periodic resync compares the whole
// state with one dump of the routing table, so a route deleted or altered
// by hand comes back, and routes of departed peers (proto 98) go away. A
// change of the interface's networks, seen on that resync, re-runs the
// on-link check of every peer.
package hostgw

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"

	"github.com/flanneld-go/flannel/backend"
	"github.com/flanneld-go/flannel/backend/dataplane"
	"github.com/flanneld-go/flannel/subnet"
)

// TypeName is the net-conf Backend.Type of this backend.
const TypeName = "host-gw"

// Options are the backend's net-conf options. host-gw has none besides
// Type; other keys are ignored with a warning, as upstream ignores them
// (its Windows nodes read Name and DNSServerList).
type Options struct {
	Type string
}

// Type describes the backend for the registry.
var Type = backend.Type{Name: TypeName, ParseOptions: parseOptions, New: newBackend,
	WindowsOptions: []string{"Name", "DNSServerList"}}

func parseOptions([]byte) (any, error) {
	return Options{Type: TypeName}, nil
}

// HostGW is the backend.
type HostGW struct {
	ext   *backend.ExternalInterface
	cfg   *subnet.Config
	k     dataplane.Kernel
	peers *backend.PeerLog
	// nets are the external interface's networks at the last Refresh.
	nets      dataplane.Nets
	refreshed bool
}

func newBackend(p backend.Params) (backend.Backend, error) {
	return New(p.Ext, p.Config, p.Log, dataplane.NewNetlink(nil)), nil
}

// New returns a backend over the given kernel.
func New(ext *backend.ExternalInterface, cfg *subnet.Config, log *slog.Logger, k dataplane.Kernel) *HostGW {
	return &HostGW{ext: ext, cfg: cfg, k: k, peers: backend.NewPeerLog(log.With("backend", TypeName))}
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
func (b *HostGW) Reconcile(_ context.Context, peers []subnet.Lease) (dataplane.Changes, error) {
	nets, err := dataplane.LinkNets(b.k, b.ext.Index)
	if err != nil {
		return dataplane.Changes{}, fmt.Errorf("cannot check which peers are on %s's networks: %w", b.ext.Name, err)
	}
	want, skips := Desired(b.cfg, b.ext, peers, nets)
	b.peers.Report(skips)
	return dataplane.Apply(b.k, nil, want)
}

// Refresh implements backend.PerPeer: the on-link check of every peer
// depends on the external interface's networks.
func (b *HostGW) Refresh(context.Context) (bool, error) {
	nets, err := dataplane.LinkNets(b.k, b.ext.Index)
	if err != nil {
		return false, fmt.Errorf("cannot check which peers are on %s's networks: %w", b.ext.Name, err)
	}
	slices.SortFunc(nets, comparePrefix)
	changed := !b.refreshed || !slices.Equal(nets, b.nets)
	b.nets, b.refreshed = nets, true
	return changed, nil
}

func comparePrefix(a, b netip.Prefix) int {
	return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
}

// HostState implements backend.PerPeer: host-gw has no state of its own.
func (b *HostGW) HostState() dataplane.State { return dataplane.State{} }

// PeerState implements backend.PerPeer: Desired for one peer.
func (b *HostGW) PeerState(p subnet.Lease) (dataplane.State, []backend.Skip) {
	return Desired(b.cfg, b.ext, []subnet.Lease{p}, b.nets)
}

// Links implements backend.PerPeer: host-gw owns no device.
func (b *HostGW) Links() []int { return nil }

// Kernel implements backend.PerPeer.
func (b *HostGW) Kernel() dataplane.Kernel { return b.k }

// PeerLog implements backend.PerPeer.
func (b *HostGW) PeerLog() *backend.PeerLog { return b.peers }

// Desired is the kernel state for peers (leases of host-gw hosts; the
// engine's peer set picks them): a route per peer subnet via the peer's
// address, for the peers on the external interface's networks.
func Desired(cfg *subnet.Config, ext *backend.ExternalInterface, peers []subnet.Lease, onLink dataplane.Nets) (dataplane.State, []backend.Skip) {
	var want dataplane.State
	var skips []backend.Skip
	route := func(p subnet.Lease, aspect string, dst netip.Prefix, gw netip.Addr) {
		if !onLink.Contains(gw) {
			skips = append(skips, backend.Skip{Peer: p, Aspect: aspect, Reason: "l2:" + gw.String(),
				Msg:   "peer is not on this host's L2 segment, host-gw cannot route to it; use the vxlan backend (with DirectRouting to keep direct routes for same-segment peers)",
				Attrs: []any{"peer_subnet", dst, "peer_ip", gw, "iface", ext.Name}})
			return
		}
		want.Routes = append(want.Routes, dataplane.Route{Dst: dst, Gw: gw, LinkIndex: ext.Index, Proto: dataplane.Proto})
	}
	for _, p := range peers {
		route(p, "", p.Subnet, p.Attrs.PublicIP)
		if cfg.EnableIPv6 && p.IPv6Subnet.IsValid() && p.Attrs.PublicIPv6.IsValid() {
			route(p, "v6", p.IPv6Subnet, p.Attrs.PublicIPv6)
		}
	}
	return want, skips
}
