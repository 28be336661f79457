package wireguard

import (
	"cmp"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/flanneld-go/flannel/backend"
	"github.com/flanneld-go/flannel/backend/dataplane"
	"github.com/flanneld-go/flannel/subnet"
)

// Device names (upstream's).
const (
	Dev4Name = "flannel-wg"
	Dev6Name = "flannel-wg-v6"
)

// LeaseData is BackendData / BackendV6Data, upstream's shape:
// {"PublicKey":"<base64>","Port":51820}.
type LeaseData struct {
	PublicKey string
	Port      uint16
}

// ParseLeaseData reads a wireguard lease's BackendData or BackendV6Data:
// the host's public key and the port it listens on (0 when the writer,
// an old upstream version, gave none). The key must be a WireGuard key
// (32 bytes, base64) and not all zeros.
func ParseLeaseData(data json.RawMessage) (wgtypes.Key, uint16, error) {
	if len(data) == 0 {
		return wgtypes.Key{}, 0, fmt.Errorf("no BackendData")
	}
	var ld LeaseData
	if err := json.Unmarshal(data, &ld); err != nil {
		return wgtypes.Key{}, 0, fmt.Errorf("BackendData: %w", err)
	}
	k, err := wgtypes.ParseKey(ld.PublicKey)
	if err != nil {
		return wgtypes.Key{}, 0, fmt.Errorf("PublicKey %q is not a WireGuard public key (44 characters of base64)", ld.PublicKey)
	}
	if k == (wgtypes.Key{}) {
		return wgtypes.Key{}, 0, fmt.Errorf("PublicKey is all zeros")
	}
	return k, ld.Port, nil
}

// Host is what the desired state depends on besides the peers.
type Host struct {
	Own subnet.Lease
	// Network6 is invalid without IPv6.
	Network, Network6 netip.Prefix
	// Dev4 and Dev6 are the devices' link indexes; Dev6 is Dev4 when one
	// device carries both families (every Mode but separate), 0 without
	// IPv6.
	Dev4, Dev6 int
	// Self is our public key: a lease with it is never a peer.
	Self wgtypes.Key
	// Ext6 is our IPv6 underlay address (invalid: none), for Mode auto.
	Ext6 netip.Addr
}

// Desired is the kernel state of the devices: each device's address (the
// network address of our subnet of its family, as a host address) and a
// route for the whole cluster network of the family through it. Peers
// add no routes: the device picks the peer by destination (its allowed
// IPs), so traffic for a subnet no peer holds is dropped there, never
// sent in the clear along the default route.
func Desired(h Host) dataplane.State {
	var want dataplane.State
	add := func(dev int, sn, network netip.Prefix) {
		if dev == 0 || !sn.IsValid() || !network.IsValid() {
			return
		}
		a := sn.Masked().Addr()
		want.Addrs = append(want.Addrs, dataplane.Addr{LinkIndex: dev, Prefix: netip.PrefixFrom(a, a.BitLen())})
		want.Routes = append(want.Routes, dataplane.Route{Dst: network.Masked(), LinkIndex: dev, Proto: dataplane.Proto})
	}
	add(h.Dev4, h.Own.Subnet, h.Network)
	add(h.Dev6, h.Own.IPv6Subnet, h.Network6)
	return want
}

// peerFamily is what one family of a lease offers.
type peerFamily struct {
	key  wgtypes.Key
	ep   netip.AddrPort
	err  error
	sn   netip.Prefix
	have bool // the lease has this family (subnet and address)
}

// families reads both halves of a lease; a missing port is the one we
// listen on for that family (upstream's rule for old leases).
func families(o Options, h Host, p subnet.Lease) (v4, v6 peerFamily) {
	read := func(data json.RawMessage, ip netip.Addr, sn netip.Prefix, port int) peerFamily {
		f := peerFamily{sn: sn, have: ip.IsValid() && sn.IsValid()}
		var pt uint16
		f.key, pt, f.err = ParseLeaseData(data)
		if pt != 0 {
			port = int(pt)
		}
		f.ep = netip.AddrPortFrom(ip, uint16(port))
		return f
	}
	port6 := o.ListenPortV6
	if o.Mode != ModeSeparate {
		port6 = o.ListenPort
	}
	v4 = read(p.Attrs.BackendData, p.Attrs.PublicIP, p.Subnet, o.ListenPort)
	if h.Network6.IsValid() {
		v6 = read(p.Attrs.BackendV6Data, p.Attrs.PublicIPv6, p.IPv6Subnet, port6)
	}
	return v4, v6
}

// candidate is one peer entry before duplicate keys are settled.
type candidate struct {
	dev  string
	peer subnet.Lease
	cfg  wgtypes.PeerConfig
}

// DesiredPeers is the WireGuard peer configuration of each device for
// peers (leases of wireguard hosts; the engine's peer set picks them):
// per peer its public key, endpoint (PublicIP:Port, or the IPv6 ones) and
// allowed IPs (its subnet, or both subnets on a device that carries both
// families), with our PSK and keepalive. Peers that cannot be served are
// returned as skips: unusable BackendData, our own key, or a key an older
// lease (lower CreateRevision, then key) has on the same device.
func DesiredPeers(o Options, h Host, peers []subnet.Lease) (map[string][]wgtypes.PeerConfig, []backend.Skip) {
	var cands []candidate
	var skips []backend.Skip
	for _, p := range peers {
		c, s := peerCandidates(o, h, p)
		cands, skips = append(cands, c...), append(skips, s...)
	}
	slices.SortStableFunc(cands, func(a, b candidate) int {
		return cmp.Or(cmp.Compare(a.peer.CreateRevision, b.peer.CreateRevision), cmp.Compare(a.peer.Key(), b.peer.Key()))
	})
	out := map[string][]wgtypes.PeerConfig{}
	held := map[string]subnet.Lease{} // dev + key -> the lease holding it
	for _, c := range cands {
		id := c.dev + "/" + c.cfg.PublicKey.String()
		switch winner, dup := held[id]; {
		case c.cfg.PublicKey == h.Self:
			skips = append(skips, skip(c.peer, c.dev, "ownkey", "skipping peer that publishes this host's public key", c.cfg.PublicKey))
		case dup:
			s := skip(c.peer, c.dev, "dupkey:"+winner.Key(), "skipping peer whose public key an older lease has", c.cfg.PublicKey)
			s.Attrs = append(s.Attrs, "older_lease", winner.String())
			skips = append(skips, s)
		default:
			held[id] = c.peer
			out[c.dev] = append(out[c.dev], c.cfg)
		}
	}
	return out, skips
}

func skip(p subnet.Lease, dev, reason, msg string, key wgtypes.Key) backend.Skip {
	return backend.Skip{Peer: p, Aspect: dev, Reason: reason, Msg: msg,
		Attrs: []any{"peer_subnet", p.String(), "peer_ip", p.Attrs.PublicIP, "device", dev, "public_key", key.String()}}
}

// peerCandidates are p's entries on each device.
func peerCandidates(o Options, h Host, p subnet.Lease) ([]candidate, []backend.Skip) {
	v4, v6 := families(o, h, p)
	bad := func(f peerFamily, dev, fam string) backend.Skip {
		return backend.Skip{Peer: p, Aspect: dev, Reason: "data:" + f.err.Error(),
			Msg:   "skipping peer with unusable wireguard data in its lease",
			Attrs: []any{"peer_subnet", p.String(), "peer_ip", p.Attrs.PublicIP, "family", fam, "error", f.err}}
	}
	noV6 := backend.Skip{Peer: p, Aspect: "v6", Reason: "nov6",
		Msg:   "peer has no IPv6 subnet, address or key; reaching it over IPv4 only",
		Attrs: []any{"peer_subnet", p.String(), "peer_ip", p.Attrs.PublicIP}}
	if o.Mode == ModeSeparate || !h.Network6.IsValid() {
		var out []candidate
		var skips []backend.Skip
		if v4.err != nil {
			skips = append(skips, bad(v4, Dev4Name, "IPv4"))
		} else {
			out = append(out, candidate{Dev4Name, p, peerConfig(o, v4.key, v4.ep, v4.sn)})
		}
		switch {
		case !h.Network6.IsValid():
		case !v6.have || v6.err != nil && len(p.Attrs.BackendV6Data) == 0:
			skips = append(skips, noV6)
		case v6.err != nil:
			skips = append(skips, bad(v6, Dev6Name, "IPv6"))
		default:
			out = append(out, candidate{Dev6Name, p, peerConfig(o, v6.key, v6.ep, v6.sn)})
		}
		return out, skips
	}
	// One device for both families: one peer entry, one key.
	key, err := v4.key, v4.err
	if err != nil && v6.err == nil {
		key, err = v6.key, nil
	}
	if err != nil {
		return nil, []backend.Skip{bad(v4, Dev4Name, "IPv4")}
	}
	var skips []backend.Skip
	allowed := []netip.Prefix{v4.sn}
	if v6.have {
		allowed = append(allowed, v6.sn)
	} else {
		skips = append(skips, noV6)
	}
	ep := v4.ep
	if v6.have && (o.Mode == ModeIPv6 || o.Mode == ModeAuto && preferV6(h, p)) {
		ep = v6.ep
	}
	if o.Mode == ModeIPv6 && !v6.have {
		s := noV6
		s.Aspect, s.Reason, s.Msg = "endpoint", "nov6ep", "peer has no IPv6 address for Mode ipv6; reaching it over IPv4"
		skips = append(skips, s)
	}
	return []candidate{{Dev4Name, p, peerConfig(o, key, ep, allowed...)}}, skips
}

// preferV6 is Mode auto's choice (upstream's): IPv4, unless the peer's
// IPv4 address is private while its IPv6 address and ours are not.
func preferV6(h Host, p subnet.Lease) bool {
	return p.Attrs.PublicIP.IsPrivate() && p.Attrs.PublicIPv6.IsValid() && !p.Attrs.PublicIPv6.IsPrivate() &&
		h.Ext6.IsValid() && !h.Ext6.IsPrivate()
}

func peerConfig(o Options, key wgtypes.Key, ep netip.AddrPort, allowed ...netip.Prefix) wgtypes.PeerConfig {
	keepalive := time.Duration(o.PersistentKeepaliveInterval) * time.Second
	c := wgtypes.PeerConfig{PublicKey: key, PresharedKey: o.psk(), PersistentKeepaliveInterval: &keepalive,
		Endpoint: net.UDPAddrFromAddrPort(ep), ReplaceAllowedIPs: true}
	for _, a := range allowed {
		a = a.Masked()
		c.AllowedIPs = append(c.AllowedIPs, net.IPNet{IP: a.Addr().AsSlice(), Mask: net.CIDRMask(a.Bits(), a.Addr().BitLen())})
	}
	return c
}
