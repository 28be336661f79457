package vxlan

import (
	"encoding/json"
	"fmt"
	"net/netip"

	"github.com/flanneld-go/flannel/backend"
	"github.com/flanneld-go/flannel/backend/dataplane"
	"github.com/flanneld-go/flannel/internal/jsonobj"
	"github.com/flanneld-go/flannel/subnet"
)

// leaseData is BackendData / BackendV6Data, upstream's shape.
type leaseData struct {
	VNI     int
	VtepMAC string
}

// Host is what the desired state depends on besides the peers: the
// external interface, this host's lease and the devices' link indexes
// (Dev6 is 0 without IPv6).
type Host struct {
	Ext        int
	Own        subnet.Lease
	Dev4, Dev6 int
}

func (h Host) links() []int {
	if h.Dev6 == 0 {
		return []int{h.Dev4}
	}
	return []int{h.Dev4, h.Dev6}
}

// deviceAddrs are the devices' addresses: the network address of our
// subnet of each family, as a host address (10.244.3.0/32).
func deviceAddrs(h Host) []dataplane.Addr {
	var out []dataplane.Addr
	if h.Own.Subnet.IsValid() {
		a := h.Own.Subnet.Masked().Addr()
		out = append(out, dataplane.Addr{LinkIndex: h.Dev4, Prefix: netip.PrefixFrom(a, a.BitLen())})
	}
	if h.Dev6 != 0 && h.Own.IPv6Subnet.IsValid() {
		a := h.Own.IPv6Subnet.Masked().Addr()
		out = append(out, dataplane.Addr{LinkIndex: h.Dev6, Prefix: netip.PrefixFrom(a, a.BitLen())})
	}
	return out
}

// Desired is the kernel state for peers (leases of vxlan hosts; the
// engine's peer set picks them): for each peer and family, a
// neighbour entry (the peer subnet's network address -> its VtepMAC), an
// FDB entry (VtepMAC -> its public address) and an onlink route through
// the device; or, with DirectRouting, a plain route via the peer's address
// when that is on one of onLink's networks. Peers that cannot be served
// are returned as skips.
func Desired(o Options, h Host, peers []subnet.Lease, onLink dataplane.Nets) (dataplane.State, []backend.Skip) {
	want := dataplane.State{Addrs: deviceAddrs(h)}
	var skips []backend.Skip
	for _, p := range peers {
		skips = append(skips, peerState(&want, o, h, p, onLink)...)
	}
	return want, skips
}

// PeerState is Desired's entries for one peer, without the devices'
// addresses: the part of one peer in the engine's table.
func PeerState(o Options, h Host, p subnet.Lease, onLink dataplane.Nets) (dataplane.State, []backend.Skip) {
	var want dataplane.State
	skips := peerState(&want, o, h, p, onLink)
	return want, skips
}

// LeaseVNI is the VNI a vxlan lease's BackendData carries (0: none, or
// data that does not parse).
func LeaseVNI(data json.RawMessage) int {
	ld, err := readLeaseData(data)
	if err != nil {
		return 0
	}
	return ld.VNI
}

// readLeaseData decodes BackendData as encoding/json does, without it
// (and its garbage) for the plain form every writer uses (see jsonobj).
func readLeaseData(data json.RawMessage) (leaseData, error) {
	var ld leaseData
	if jsonobj.Members(data, func(key, val []byte) bool {
		var ok bool
		switch string(key) {
		case "VNI":
			ld.VNI, ok = jsonobj.Int(val)
		case "VtepMAC":
			ld.VtepMAC, ok = jsonobj.String(val)
		}
		return ok
	}) {
		return ld, nil
	}
	ld = leaseData{}
	err := json.Unmarshal(data, &ld)
	return ld, err
}

// peerState adds both families' entries for p to want. A peer whose
// lease carries another VNI than ours cannot be reached through our
// device (its VTEP drops our VNI): it is skipped, with the reason.
func peerState(want *dataplane.State, o Options, h Host, p subnet.Lease, onLink dataplane.Nets) []backend.Skip {
	if vni := LeaseVNI(p.Attrs.BackendData); vni != 0 && o.VNI != 0 && vni != o.VNI {
		return []backend.Skip{{Peer: p, Reason: "vni", Msg: "ignoring vxlan peer of another VNI; give every host the same Backend.VNI",
			Attrs: []any{"peer_subnet", p.String(), "peer_ip", p.Attrs.PublicIP, "peer_vni", vni, "vni", o.VNI}}}
	}
	skips := peerEntries(want, o, h, p, false, onLink)
	if h.Dev6 == 0 {
		return skips
	}
	if !p.IPv6Subnet.IsValid() || !p.Attrs.PublicIPv6.IsValid() {
		return append(skips, backend.Skip{Peer: p, Aspect: "v6", Reason: "nov6",
			Msg:   "peer has no IPv6 subnet or address; reaching it over IPv4 only",
			Attrs: []any{"peer_subnet", p.String(), "peer_ip", p.Attrs.PublicIP}})
	}
	return append(skips, peerEntries(want, o, h, p, true, onLink)...)
}

// peerEntries adds one family's entries for p to want.
func peerEntries(want *dataplane.State, o Options, h Host, p subnet.Lease, v6 bool, onLink dataplane.Nets) []backend.Skip {
	sn, pub, data, dev, fam := p.Subnet, p.Attrs.PublicIP, p.Attrs.BackendData, h.Dev4, "IPv4"
	if v6 {
		sn, pub, data, dev, fam = p.IPv6Subnet, p.Attrs.PublicIPv6, p.Attrs.BackendV6Data, h.Dev6, "IPv6"
	}
	if o.DirectRouting && onLink.Contains(pub) {
		want.Routes = append(want.Routes, dataplane.Route{Dst: sn, Gw: pub, LinkIndex: h.Ext, Proto: dataplane.Proto})
		return nil
	}
	mac, err := LeaseMAC(data)
	if err != nil {
		return []backend.Skip{{Peer: p, Aspect: fam, Reason: "data:" + string(data),
			Msg:   "skipping peer with unusable vxlan data in its lease",
			Attrs: []any{"peer_subnet", p.String(), "peer_ip", pub, "family", fam, "error", err}}}
	}
	gw := sn.Masked().Addr()
	want.Neighs = append(want.Neighs, dataplane.Neigh{LinkIndex: dev, IP: gw, MAC: mac})
	want.FDBs = append(want.FDBs, dataplane.FDB{LinkIndex: dev, MAC: mac, Dst: pub})
	want.Routes = append(want.Routes, dataplane.Route{Dst: sn, Gw: gw, LinkIndex: dev, OnLink: true, Proto: dataplane.Proto})
	return nil
}

// LeaseMAC reads the VtepMAC of a vxlan lease's BackendData or
// BackendV6Data (upstream's {"VNI":1,"VtepMAC":"..."}). The all-zero MAC
// (the FDB's default entry, which floods unknown destinations) and group
// MACs are refused: no VXLAN device has them. The engine's peer set
// rejects a vxlan lease whose data this cannot read.
func LeaseMAC(data json.RawMessage) (dataplane.MAC, error) {
	if len(data) == 0 {
		return dataplane.MAC{}, fmt.Errorf("no BackendData")
	}
	ld, err := readLeaseData(data)
	if err != nil {
		return dataplane.MAC{}, fmt.Errorf("BackendData: %w", err)
	}
	mac, err := dataplane.ParseMAC(ld.VtepMAC)
	if err != nil {
		return dataplane.MAC{}, fmt.Errorf("VtepMAC: %w", err)
	}
	if mac == (dataplane.MAC{}) || mac[0]&1 != 0 {
		return dataplane.MAC{}, fmt.Errorf("VtepMAC %s is not a unicast MAC address", mac)
	}
	return mac, nil
}
