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
// Reconcile is declarative: from the whole peer set it computes every
// desired entry, diffs against one dump of each table and applies the
// difference (neighbours and FDB added, routes synced, then stale FDB and
// neighbours deleted). It runs after every lease change and on a timer, so
// entries deleted by hand come back, entries of unknown peers go, and a
// peer that changed its MAC or address is updated without stale entries.
// If the device itself disappears, the next reconcile re-creates it.
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
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"

	"github.com/vishvananda/netlink"

	"github.com/flanneld-go/flannel/backend"
	"github.com/flanneld-go/flannel/backend/dataplane"
	"github.com/flanneld-go/flannel/subnet"
)

// TypeName is the net-conf Backend.Type of this backend.
const TypeName = "vxlan"

// Type registers the backend.
var Type = backend.Type{Name: TypeName, ParseOptions: parseOptions, New: newBackend}

// leaseData is BackendData / BackendV6Data, upstream's shape.
type leaseData struct {
	VNI     int
	VtepMAC string
}

// family is one address family's device and state.
type family struct {
	name     string // "IPv4" or "IPv6"
	spec     deviceSpec
	overhead int
	index    int          // link index once the device exists
	addr     netip.Prefix // the device's address (our subnet's network address)
}

// VXLAN is the backend.
type VXLAN struct {
	ext  *backend.ExternalInterface
	cfg  *subnet.Config
	opts Options
	log  *slog.Logger
	h    *netlink.Handle
	k    *dataplane.Netlink
	fams []*family

	mu    sync.Mutex
	peers *backend.PeerLog
}

func newBackend(p backend.Params) (backend.Backend, error) {
	opts := p.Options.(Options)
	b := &VXLAN{ext: p.Ext, cfg: p.Config, opts: opts, log: p.Log.With("backend", TypeName), h: &netlink.Handle{}}
	b.peers = backend.NewPeerLog(b.log)
	b.k = dataplane.NewNetlink(b.h)
	base := p.Ext.MTU
	if opts.MTU > 0 {
		base = opts.MTU
	}
	mk := func(name, dev string, local, public netip.Addr, overhead int) *family {
		return &family{name: name, overhead: overhead, spec: deviceSpec{
			name: dev, vni: opts.VNI, port: opts.Port, local: local, parent: p.Ext.Index,
			mtu: base - overhead, mac: stableMAC(public, opts.VNI, name), gbp: opts.GBP, learning: opts.Learning,
		}}
	}
	b.fams = append(b.fams, mk("IPv4", fmt.Sprintf("flannel.%d", opts.VNI), p.Ext.Addr, p.Ext.PublicIP, 50))
	if p.Config.EnableIPv6 {
		b.fams = append(b.fams, mk("IPv6", fmt.Sprintf("flannel-v6.%d", opts.VNI), p.Ext.Addr6, p.Ext.PublicIPv6, 70))
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
		link, err := ensureDevice(b.h, f.spec, b.log)
		if err != nil {
			return attrs, err
		}
		f.index = link.Attrs().Index
		data, _ := json.Marshal(leaseData{VNI: b.opts.VNI, VtepMAC: f.spec.mac.String()})
		if f.name == "IPv4" {
			attrs.BackendData = data
		} else {
			attrs.BackendV6Data = data
		}
	}
	return attrs, nil
}

// Start implements backend.Backend: the device gets our subnet's network
// address; pods get the smallest device MTU.
func (b *VXLAN) Start(_ context.Context, own subnet.Lease) (int, error) {
	mtu := 0
	for _, f := range b.fams {
		sn := own.Subnet
		if f.name == "IPv6" {
			sn = own.IPv6Subnet
		}
		f.addr = netip.PrefixFrom(sn.Addr(), sn.Addr().BitLen())
		link, err := b.h.LinkByIndex(f.index)
		if err != nil {
			return 0, fmt.Errorf("%s vanished: %w", f.spec.name, err)
		}
		if err := ensureAddr(b.h, link, f.addr); err != nil {
			return 0, err
		}
		if mtu == 0 || f.spec.mtu < mtu {
			mtu = f.spec.mtu
		}
	}
	return mtu, nil
}

// Reconcile implements backend.Backend.
func (b *VXLAN) Reconcile(_ context.Context, peers []subnet.Lease) error {
	if err := b.ensureDevices(); err != nil {
		return err
	}
	var links []int
	for _, f := range b.fams {
		links = append(links, f.index)
	}
	d := b.Desired(peers)
	plan, err := dataplane.PlanL2(b.k, links, d.Neighs, d.FDBs)
	if err != nil {
		return err
	}
	var ch dataplane.L2Changes
	errAdd := plan.Add(&ch)
	rch, errRoutes := dataplane.SyncRoutes(b.k, d.Routes)
	errDel := plan.Delete(&ch)
	if ch != (dataplane.L2Changes{}) || rch != (dataplane.RouteChanges{}) {
		b.log.Info("data plane updated", "peers", len(peers), "tunnel_peers", d.Tunnel, "direct_peers", d.Direct,
			"neigh_set", ch.NeighSet, "neigh_deleted", ch.NeighDeleted, "fdb_set", ch.FDBSet, "fdb_deleted", ch.FDBDeleted,
			"routes_set", rch.Replaced, "routes_deleted", rch.Deleted)
	}
	return errors.Join(errAdd, errRoutes, errDel)
}

// ensureDevices re-creates a device deleted while we run and gives it its
// address again; the reconcile that follows re-populates it.
func (b *VXLAN) ensureDevices() error {
	for _, f := range b.fams {
		link, err := b.h.LinkByName(f.spec.name)
		if err == nil && link.Attrs().Index == f.index && f.spec.incompatible(link) == "" {
			continue
		}
		b.log.Warn("VXLAN device missing or changed; re-creating it", "device", f.spec.name)
		link, err = ensureDevice(b.h, f.spec, b.log)
		if err != nil {
			return err
		}
		f.index = link.Attrs().Index
		if f.addr.IsValid() {
			if err := ensureAddr(b.h, link, f.addr); err != nil {
				return err
			}
		}
	}
	return nil
}

// Desired is the complete kernel state for a peer set.
type Desired struct {
	Neighs         []dataplane.Neigh
	FDBs           []dataplane.FDB
	Routes         []dataplane.Route
	Tunnel, Direct int
}

// Desired computes the entries for peers, logging once per peer when one
// cannot be served.
func (b *VXLAN) Desired(peers []subnet.Lease) Desired {
	b.mu.Lock()
	defer b.mu.Unlock()
	var d Desired
	present := map[string]bool{}
	for _, p := range peers {
		key := p.Key()
		present[key] = true
		if !b.peers.OfType(p, TypeName) {
			continue
		}
		for _, f := range b.fams {
			sn, pub, data := p.Subnet, p.Attrs.PublicIP, p.Attrs.BackendData
			if f.name == "IPv6" {
				sn, pub, data = p.IPv6Subnet, p.Attrs.PublicIPv6, p.Attrs.BackendV6Data
				if !sn.IsValid() || !pub.IsValid() {
					b.peers.Warn(key+"/v6", "nov6", "peer has no IPv6 subnet or address; reaching it over IPv4 only", "peer_subnet", p.String(), "peer_ip", p.Attrs.PublicIP)
					continue
				}
			}
			if b.opts.DirectRouting {
				direct, err := b.k.OnLink(b.ext.Index, pub)
				if err == nil && direct {
					d.Routes = append(d.Routes, dataplane.Route{Dst: sn, Gw: pub, LinkIndex: b.ext.Index, Proto: dataplane.Proto})
					d.Direct++
					continue
				}
			}
			mac, err := parseMAC(data)
			if err != nil {
				b.peers.Warn(key+"/"+f.name, "data:"+string(data), "skipping peer with unusable vxlan data in its lease", "peer_subnet", p.String(),
					"peer_ip", pub, "family", f.name, "error", err)
				continue
			}
			gw := sn.Addr()
			d.Neighs = append(d.Neighs, dataplane.Neigh{LinkIndex: f.index, IP: gw, MAC: mac})
			d.FDBs = append(d.FDBs, dataplane.FDB{LinkIndex: f.index, MAC: mac, Dst: pub})
			d.Routes = append(d.Routes, dataplane.Route{Dst: sn, Gw: gw, LinkIndex: f.index, OnLink: true, Proto: dataplane.Proto})
			d.Tunnel++
		}
	}
	b.peers.Prune(present)
	return d
}

func parseMAC(data json.RawMessage) (net.HardwareAddr, error) {
	if len(data) == 0 {
		return nil, fmt.Errorf("no BackendData")
	}
	var ld leaseData
	if err := json.Unmarshal(data, &ld); err != nil {
		return nil, fmt.Errorf("BackendData: %w", err)
	}
	mac, err := net.ParseMAC(ld.VtepMAC)
	if err != nil || len(mac) != 6 {
		return nil, fmt.Errorf("VtepMAC %q is not a MAC address", ld.VtepMAC)
	}
	return mac, nil
}
