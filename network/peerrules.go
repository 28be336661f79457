package network

import (
	"net/netip"

	"github.com/flanneld-go/flannel/backend/dataplane"
	"github.com/flanneld-go/flannel/backend/vxlan"
	"github.com/flanneld-go/flannel/backend/wireguard"
	"github.com/flanneld-go/flannel/subnet"
)

// Reason says why a lease is not a peer. The values are stable: they are
// the reason label of flannel_leases_rejected_total, the STATUS column of
// flanneld leases, and named in Documentation/troubleshooting.md.
type Reason string

// Reasons, in the order they are checked. The first five depend on the
// lease alone; the next three on this host; overlaps_lease and
// vtep_mac_duplicate on the older leases; backend_type comes last, so a
// lease of another backend type still holds its subnet and MAC against
// younger leases.
const (
	// The subnet (or the IPv6 half) is not of the net-conf's SubnetLen
	// (IPv6SubnetLen); with IPv6 off, an IPv6 half of a length no
	// net-conf allows (e.g. ::/0).
	ReasonSubnetLength Reason = "subnet_length"
	// The subnet is outside Network, or the IPv6 half outside
	// IPv6Network (with IPv6 off: not a global unicast prefix).
	ReasonOutsideNetwork Reason = "outside_network"
	// PublicIP or PublicIPv6 is unspecified, loopback, multicast,
	// broadcast or inside the pod network.
	ReasonPublicIPInvalid Reason = "public_ip_invalid"
	// A vxlan lease whose BackendData or BackendV6Data has no usable
	// VtepMAC, or a wireguard lease's without a usable PublicKey.
	ReasonBackendData Reason = "backend_data"
	// The subnet (either family) overlaps ours.
	ReasonOverlapsOwn Reason = "overlaps_own"
	// The lease claims our PublicIP or PublicIPv6.
	ReasonPublicIPOwn Reason = "public_ip_own"
	// The lease carries our VtepMAC.
	ReasonVtepMACOwn Reason = "vtep_mac_own"
	// The lease carries our WireGuard public key.
	ReasonPublicKeyOwn Reason = "public_key_own"
	// The subnet (either family) overlaps an older accepted lease's.
	ReasonOverlapsLease Reason = "overlaps_lease"
	// The VtepMAC is an older accepted lease's.
	ReasonVtepMACDuplicate Reason = "vtep_mac_duplicate"
	// The WireGuard public key is an older accepted lease's: a device
	// holds one peer per key.
	ReasonPublicKeyDuplicate Reason = "public_key_duplicate"
	// A valid lease of another backend type: not a peer of ours.
	ReasonBackendType Reason = "backend_type"

	// reasonOurs: our own lease (by key; while we re-acquire, also by
	// PublicIP). Never reported.
	reasonOurs Reason = "ours"
)

// Reasons lists every reported reason, for the metric's documentation
// and tests.
var Reasons = []Reason{ReasonSubnetLength, ReasonOutsideNetwork, ReasonPublicIPInvalid, ReasonBackendData,
	ReasonOverlapsOwn, ReasonPublicIPOwn, ReasonVtepMACOwn, ReasonPublicKeyOwn, ReasonOverlapsLease, ReasonVtepMACDuplicate,
	ReasonPublicKeyDuplicate, ReasonBackendType}

// holds reports whether a lease with this verdict keeps its subnets and
// MACs from younger leases: a peer, or a valid lease of another backend.
func (r Reason) holds() bool { return r == "" || r == ReasonBackendType }

// rules are the net-conf's and this host's facts the checks use.
type rules struct {
	network, network6     netip.Prefix // network6 invalid without IPv6
	subnetLen, subnetLen6 int
	serves                []string      // the backend types that are peers (ServedTypes)
	self, self6           netip.Addr    // our PublicIP / PublicIPv6 (invalid: none)
	mac4, mac6            dataplane.MAC // our VtepMACs (zero: none)
	wgKey                 wgKey         // our WireGuard public key (zero: none)
}

// wgKey is a wireguard lease's public key (zero: none).
type wgKey [32]byte

// leaseWGKey reads a wireguard lease's public key: from BackendData, and
// from BackendV6Data too when present (upstream writes the same key in
// both; two different ones are refused). ok is false when a present half
// has no usable key, or when there is none.
func leaseWGKey(l subnet.Lease) (k wgKey, ok bool) {
	if len(l.Attrs.BackendData) == 0 && len(l.Attrs.BackendV6Data) == 0 {
		return k, false
	}
	for _, d := range [][]byte{l.Attrs.BackendData, l.Attrs.BackendV6Data} {
		if len(d) == 0 {
			continue
		}
		key, _, err := wireguard.ParseLeaseData(d)
		if err != nil || k != (wgKey{}) && wgKey(key) != k {
			return wgKey{}, false
		}
		k = wgKey(key)
	}
	return k, true
}

// ipv6 reports whether the net-conf enables IPv6.
func (r *rules) ipv6() bool { return r.network6.IsValid() }

// Lengths an IPv6 half can have in some net-conf: IPv6SubnetLen is at
// least the IPv6Network's length + 2, at most 126.
const minSubnetLen6, maxSubnetLen6 = 2, 126

// static checks what depends on the lease alone, and returns its VtepMACs
// (zero when it has none, or for the IPv6 one when IPv6 is off).
func (r *rules) static(l subnet.Lease) (why Reason, mac4, mac6 dataplane.MAC) {
	switch {
	case l.Subnet.Bits() != r.subnetLen:
		return ReasonSubnetLength, mac4, mac6
	case !inside(r.network, l.Subnet):
		return ReasonOutsideNetwork, mac4, mac6
	}
	if v6 := l.IPv6Subnet; v6.IsValid() {
		// With IPv6 off the half is not used here (backends program
		// IPv6 only when it is on), and a cluster being switched to
		// dual-stack has hosts that write it: accepted, unless no
		// net-conf could have produced it.
		switch {
		case r.ipv6() && v6.Bits() != r.subnetLen6, !r.ipv6() && (v6.Bits() < minSubnetLen6 || v6.Bits() > maxSubnetLen6):
			return ReasonSubnetLength, mac4, mac6
		case r.ipv6() && !inside(r.network6, v6), !r.ipv6() && !v6.Addr().IsGlobalUnicast():
			return ReasonOutsideNetwork, mac4, mac6
		}
	}
	if badPublicIP(l.Attrs.PublicIP, r.network) || l.Attrs.PublicIPv6.IsValid() && badPublicIP(l.Attrs.PublicIPv6, r.network6) {
		return ReasonPublicIPInvalid, mac4, mac6
	}
	if BackendType(l) == wireguard.TypeName {
		if _, ok := leaseWGKey(l); !ok {
			return ReasonBackendData, mac4, mac6
		}
	}
	if BackendType(l) != vxlan.TypeName {
		return "", mac4, mac6
	}
	var err error
	if mac4, err = vxlan.LeaseMAC(l.Attrs.BackendData); err != nil {
		return ReasonBackendData, mac4, mac6
	}
	if len(l.Attrs.BackendV6Data) > 0 {
		if mac6, err = vxlan.LeaseMAC(l.Attrs.BackendV6Data); err != nil {
			return ReasonBackendData, dataplane.MAC{}, mac6
		}
		if !r.ipv6() {
			mac6 = dataplane.MAC{} // no IPv6 device here: not ours to judge
		}
	}
	return "", mac4, mac6
}

// inside reports whether p lies within n (n's length or longer).
func inside(n, p netip.Prefix) bool {
	return n.IsValid() && p.Bits() >= n.Bits() && n.Contains(p.Addr())
}

// badPublicIP: an address no host can be reached at. IsMulticast covers
// the link-local multicast ranges (224.0.0.0/24, ff02::/16) too.
func badPublicIP(a netip.Addr, podNet netip.Prefix) bool {
	return !a.IsValid() || a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() ||
		a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) || podNet.IsValid() && podNet.Contains(a)
}

// own checks what depends on this host: our subnets, addresses, MACs.
func (r *rules) own(e *entry, own subnet.Lease) Reason {
	l := e.l
	switch {
	case own.Subnet.IsValid() && own.Subnet.Overlaps(l.Subnet),
		r.ipv6() && own.IPv6Subnet.IsValid() && l.IPv6Subnet.IsValid() && own.IPv6Subnet.Overlaps(l.IPv6Subnet):
		return ReasonOverlapsOwn
	case r.self.IsValid() && l.Attrs.PublicIP == r.self, r.self6.IsValid() && l.Attrs.PublicIPv6 == r.self6:
		return ReasonPublicIPOwn
	case e.mac4 != (dataplane.MAC{}) && e.mac4 == r.mac4, e.mac6 != (dataplane.MAC{}) && e.mac6 == r.mac6:
		return ReasonVtepMACOwn
	case e.wgKey != nil && *e.wgKey == r.wgKey:
		return ReasonPublicKeyOwn
	}
	return ""
}
