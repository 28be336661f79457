// Package vxlan is the vxlan backend: the kernel's VXLAN device carries pod
// traffic between hosts; the daemon only programs its tables.
//
// Design notes. Each host has one VXLAN device per address family,
// flannel.<VNI> over the IPv4 underlay and, when dual-stack,
// flannel-v6.<VNI> over the IPv6 underlay. The device's address is the
// network address of the host's subnet (10.244.3.0/32), and its MAC is
// derived from the host's public address and the VNI, so it survives
// restarts and even a re-created device: peers' entries for us stay valid.
// The MAC is published in the lease as BackendData {"VNI":1,"VtepMAC":...}
// exactly as upstream flannel writes it, so mixed clusters interoperate.
//
// For every peer the kernel needs three entries, added in this order:
//
//	ip neigh replace 10.244.2.0 lladdr $PEER_MAC dev flannel.1 nud permanent    (L3 -> MAC)
//	bridge fdb replace $PEER_MAC dev flannel.1 dst 192.168.50.12 self permanent  (MAC -> VTEP)
//	ip route replace 10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink proto 98  (subnet -> tunnel)
//
// and removed in the reverse order when the peer goes. No ARP or multicast
// crosses the underlay: learning is off, every entry is programmed.
//
// Reconcile is declarative: Desired (desired.go) is a pure function from
// the whole peer set to every entry above, and dataplane.Apply diffs that
// against one dump of each table and applies the difference in that order.
// The engine drives it per peer (backend.PerPeer): a lease change applies
// that peer's entries alone (PeerState), without a dump, and the periodic
// resync compares everything with the kernel, so entries deleted by hand
// come back, entries of unknown peers go, and a peer that changed its MAC
// or address is updated without stale entries. If the device itself
// disappears, the resync re-creates it (device.go) first and, its index
// being new, rebuilds every peer's entries.
//
// With DirectRouting, a peer whose public address is on a directly
// connected network gets a plain route via that address instead (as
// host-gw), and none of the tunnel entries; peers elsewhere use the tunnel.
//
// MTU: the device MTU is the underlay's (or the MTU option) minus the
// encapsulation: 50 bytes over IPv4 (20 IP + 8 UDP + 8 VXLAN + 14 inner
// Ethernet) and 70 over IPv6 (a 40-byte outer header). Pods get the smaller
// of the two so one MTU fits both families.
package vxlan

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"

	"github.com/flanneld-go/flannel/backend"
	"github.com/flanneld-go/flannel/backend/dataplane"
	"github.com/flanneld-go/flannel/subnet"
)

// TypeName is the net-conf Backend.Type of this backend.
const TypeName = "vxlan"

// Type describes the backend for the registry.
var Type = backend.Type{Name: TypeName, ParseOptions: parseOptions, New: newBackend, Options: optionNames, WindowsOptions: windowsOptions}

// family is one address family's device.
type family struct {
	v6    bool
	spec  deviceSpec
	index int // link index once the device exists
}

func (f *family) name() string {
	if f.v6 {
		return "IPv6"
	}
	return "IPv4"
}

// VXLAN is the backend.
type VXLAN struct {
	ext   *backend.ExternalInterface
	cfg   *subnet.Config
	opts  Options
	log   *slog.Logger
	k     *dataplane.Netlink
	fams  []*family
	own   subnet.Lease
	peers *backend.PeerLog
	// facts are the host facts at the last Refresh.
	facts     facts
	refreshed bool
}

func newBackend(p backend.Params) (backend.Backend, error) {
	opts, ok := p.Options.(Options)
	if !ok {
		return nil, fmt.Errorf("vxlan backend: options of type %T, want vxlan.Options (from ParseOptions)", p.Options)
	}
	b := &VXLAN{ext: p.Ext, cfg: p.Config, opts: opts, log: p.Log.With("backend", TypeName), k: dataplane.NewNetlink(nil)}
	b.peers = backend.NewPeerLog(b.log)
	base := p.Ext.MTU
	if opts.MTU > 0 {
		base = opts.MTU
	}
	mk := func(v6 bool, dev string, local, public netip.Addr, overhead int) *family {
		f := &family{v6: v6}
		f.spec = deviceSpec{
			name: dev, vni: opts.VNI, port: opts.Port, local: local, parent: p.Ext.Index,
			mtu: base - overhead, mac: stableMAC(public, opts.VNI, f.name()), gbp: opts.GBP, learning: opts.Learning,
		}
		return f
	}
	b.fams = append(b.fams, mk(false, fmt.Sprintf("flannel.%d", opts.VNI), p.Ext.Addr, p.Ext.PublicIP, 50))
	if p.Config.EnableIPv6 {
		b.fams = append(b.fams, mk(true, fmt.Sprintf("flannel-v6.%d", opts.VNI), p.Ext.Addr6, p.Ext.PublicIPv6, 70))
	}
	return b, nil
}

// Devices implements backend.DeviceOwner.
func (b *VXLAN) Devices() []string {
	var out []string
	for _, f := range b.fams {
		out = append(out, f.spec.name)
	}
	return out
}

// Prepare implements backend.Backend: create or adopt the devices and
// publish their MACs.
func (b *VXLAN) Prepare(context.Context) (subnet.LeaseAttrs, error) {
	attrs := subnet.LeaseAttrs{BackendType: TypeName}
	for _, f := range b.fams {
		link, err := ensureDevice(b.k.Handle(), f.spec, b.log)
		if err != nil {
			return attrs, err
		}
		f.index = link.Attrs().Index
		data, err := json.Marshal(leaseData{VNI: b.opts.VNI, VtepMAC: f.spec.mac.String()})
		if err != nil {
			return attrs, err
		}
		if f.v6 {
			attrs.BackendV6Data = data
		} else {
			attrs.BackendData = data
		}
	}
	return attrs, nil
}

// Start implements backend.Backend: each device gets our subnet's network
// address; pods get the smallest device MTU.
func (b *VXLAN) Start(_ context.Context, own subnet.Lease) (int, error) {
	b.own = own
	h := b.host()
	if _, err := dataplane.ApplyAddrs(b.k, h.links(), deviceAddrs(h)); err != nil {
		return 0, fmt.Errorf("addressing the VXLAN devices for %s: %w", own, err)
	}
	mtu := 0
	for _, f := range b.fams {
		if mtu == 0 || f.spec.mtu < mtu {
			mtu = f.spec.mtu
		}
	}
	return mtu, nil
}

// Reconcile implements backend.Backend.
func (b *VXLAN) Reconcile(_ context.Context, peers []subnet.Lease) (dataplane.Changes, error) {
	if err := b.ensureDevices(); err != nil {
		return dataplane.Changes{}, err
	}
	var nets dataplane.Nets
	if b.opts.DirectRouting {
		var err error
		if nets, err = dataplane.LinkNets(b.k, b.ext.Index); err != nil {
			return dataplane.Changes{}, fmt.Errorf("cannot check which peers are on %s's networks (DirectRouting): %w", b.ext.Name, err)
		}
	}
	h := b.host()
	want, skips := Desired(b.opts, h, peers, nets)
	b.peers.Report(skips)
	return dataplane.Apply(b.k, h.links(), want)
}

// Refresh implements backend.PerPeer: the devices are re-created if they
// went missing, and every part depends on their indexes and, with
// DirectRouting, on the external interface's networks.
func (b *VXLAN) Refresh(context.Context) (bool, error) {
	if err := b.ensureDevices(); err != nil {
		return false, err
	}
	var nets dataplane.Nets
	if b.opts.DirectRouting {
		var err error
		if nets, err = dataplane.LinkNets(b.k, b.ext.Index); err != nil {
			return false, fmt.Errorf("cannot check which peers are on %s's networks (DirectRouting): %w", b.ext.Name, err)
		}
		slices.SortFunc(nets, func(a, b netip.Prefix) int {
			return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
		})
	}
	h := b.host()
	f := facts{ext: h.Ext, dev4: h.Dev4, dev6: h.Dev6, nets: nets}
	changed := !b.refreshed || !f.equal(b.facts)
	b.facts, b.refreshed = f, true
	return changed, nil
}

// facts are what the peer parts depend on besides the leases.
type facts struct {
	ext, dev4, dev6 int
	nets            dataplane.Nets
}

func (f facts) equal(o facts) bool {
	return f.ext == o.ext && f.dev4 == o.dev4 && f.dev6 == o.dev6 && slices.Equal(f.nets, o.nets)
}

// HostState implements backend.PerPeer: the devices' addresses.
func (b *VXLAN) HostState() dataplane.State { return dataplane.State{Addrs: deviceAddrs(b.host())} }

// PeerState implements backend.PerPeer.
func (b *VXLAN) PeerState(p subnet.Lease) (dataplane.State, []backend.Skip) {
	return PeerState(b.opts, b.host(), p, b.facts.nets)
}

// Links implements backend.PerPeer: the VXLAN devices.
func (b *VXLAN) Links() []int { return b.host().links() }

// Kernel implements backend.PerPeer.
func (b *VXLAN) Kernel() dataplane.Kernel { return b.k }

// PeerLog implements backend.PerPeer.
func (b *VXLAN) PeerLog() *backend.PeerLog { return b.peers }

// host is what Desired needs to know of this host.
func (b *VXLAN) host() Host {
	h := Host{Ext: b.ext.Index, Own: b.own}
	for _, f := range b.fams {
		if f.v6 {
			h.Dev6 = f.index
		} else {
			h.Dev4 = f.index
		}
	}
	return h
}

// ensureDevices re-creates a device deleted while we run; the reconcile
// that follows gives it back its address and entries.
func (b *VXLAN) ensureDevices() error {
	h := b.k.Handle()
	for _, f := range b.fams {
		link, err := h.LinkByName(f.spec.name)
		if err == nil && link.Attrs().Index == f.index && f.spec.incompatible(link) == "" {
			if link.Attrs().Flags&net.FlagUp == 0 {
				// Set down by hand: the kernel dropped its routes, which
				// the reconcile that follows puts back.
				// Equivalent to: ip link set $dev up
				b.log.Warn("VXLAN device was down; bringing it up", "device", f.spec.name)
				if err := h.LinkSetUp(link); err != nil {
					return fmt.Errorf("bringing %s up: %w", f.spec.name, err)
				}
			}
			continue
		}
		b.log.Warn("VXLAN device missing or changed; re-creating it", "device", f.spec.name)
		link, err = ensureDevice(h, f.spec, b.log)
		if err != nil {
			return err
		}
		f.index = link.Attrs().Index
	}
	return nil
}
