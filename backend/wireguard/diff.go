package wireguard

import (
	"net"
	"net/netip"
	"slices"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// PeerChanges counts what a reconcile changed on a device's peers.
type PeerChanges struct{ Added, Updated, Removed int }

// Any reports whether anything changed.
func (c PeerChanges) Any() bool { return c != PeerChanges{} }

// Add sums two counts.
func (c PeerChanges) Add(o PeerChanges) PeerChanges {
	return PeerChanges{c.Added + o.Added, c.Updated + o.Updated, c.Removed + o.Removed}
}

// DiffPeers is what must be configured for a device that has peers have
// to hold exactly want: want's entries that are missing or differ (key,
// endpoint, allowed IPs, pre-shared key, keepalive), each whole, and a
// removal for every other peer. Peers that match are left alone, so their
// sessions are not disturbed. The result is for a ConfigureDevice without
// ReplacePeers.
func DiffPeers(want []wgtypes.PeerConfig, have []wgtypes.Peer) ([]wgtypes.PeerConfig, PeerChanges) {
	cur := make(map[wgtypes.Key]wgtypes.Peer, len(have))
	for _, p := range have {
		cur[p.PublicKey] = p
	}
	var out []wgtypes.PeerConfig
	var ch PeerChanges
	wanted := make(map[wgtypes.Key]bool, len(want))
	for _, w := range want {
		wanted[w.PublicKey] = true
		p, ok := cur[w.PublicKey]
		switch {
		case !ok:
			ch.Added++
		case matches(w, p):
			continue
		default:
			ch.Updated++
		}
		out = append(out, w)
	}
	for _, p := range have {
		if !wanted[p.PublicKey] {
			out = append(out, wgtypes.PeerConfig{PublicKey: p.PublicKey, Remove: true})
			ch.Removed++
		}
	}
	return out, ch
}

// matches reports whether the device's peer p is configured as w says.
func matches(w wgtypes.PeerConfig, p wgtypes.Peer) bool {
	var psk wgtypes.Key
	if w.PresharedKey != nil {
		psk = *w.PresharedKey
	}
	var keepalive time.Duration
	if w.PersistentKeepaliveInterval != nil {
		keepalive = *w.PersistentKeepaliveInterval
	}
	return p.PresharedKey == psk && p.PersistentKeepaliveInterval == keepalive &&
		addrPort(w.Endpoint) == addrPort(p.Endpoint) && slices.Equal(prefixes(w.AllowedIPs), prefixes(p.AllowedIPs))
}

func addrPort(a *net.UDPAddr) netip.AddrPort {
	if a == nil {
		return netip.AddrPort{}
	}
	ap := a.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// prefixes are the networks as sorted, canonical prefixes.
func prefixes(ns []net.IPNet) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(ns))
	for _, n := range ns {
		a, ok := netip.AddrFromSlice(n.IP)
		if !ok {
			continue
		}
		ones, _ := n.Mask.Size()
		if a.Is4In6() && len(n.Mask) == net.IPv6len {
			ones -= 96
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, ones).Masked())
	}
	slices.SortFunc(out, func(x, y netip.Prefix) int {
		if c := x.Addr().Compare(y.Addr()); c != 0 {
			return c
		}
		return x.Bits() - y.Bits()
	})
	return out
}

// kickInterval is the keepalive a new peer is configured with for a
// moment, so that the device sends it a keepalive, and with it a handshake
// initiation, at once (kernel and wireguard-go both do when a peer's
// keepalive is turned on).
const kickInterval = time.Second

// withKick starts the handshake with peers that are new on the device
// (not in have). A host that joins learns of its peers a moment after they
// learn of it; a peer that sent its first handshake in that moment had it
// dropped, and would only retry after WireGuard's 5-second rekey timeout.
// The joiner's own immediate handshake closes the gap. first is cfgs with
// new peers' keepalive turned on; restore, applied right after, gives
// them the keepalive they should keep (nil when that is already it).
func withKick(cfgs []wgtypes.PeerConfig, have []wgtypes.Peer) (first, restore []wgtypes.PeerConfig) {
	known := make(map[wgtypes.Key]bool, len(have))
	for _, p := range have {
		known[p.PublicKey] = true
	}
	first = make([]wgtypes.PeerConfig, len(cfgs))
	for i, c := range cfgs {
		first[i] = c
		if c.Remove || known[c.PublicKey] || c.PersistentKeepaliveInterval != nil && *c.PersistentKeepaliveInterval > 0 {
			continue
		}
		kick := kickInterval
		first[i].PersistentKeepaliveInterval = &kick
		var keep time.Duration
		if c.PersistentKeepaliveInterval != nil {
			keep = *c.PersistentKeepaliveInterval
		}
		restore = append(restore, wgtypes.PeerConfig{PublicKey: c.PublicKey, UpdateOnly: true, PersistentKeepaliveInterval: &keep})
	}
	return first, restore
}
