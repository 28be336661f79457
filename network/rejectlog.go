package network

import (
	"fmt"
)

// rejectMessages are the log lines of rejected leases, one per reason,
// each with what to do; Documentation/troubleshooting.md has a section
// for each.
var rejectMessages = map[Reason]string{
	ReasonSubnetLength:       "rejecting lease: its subnet length is not the net-conf's; delete the key, or restart its host so it leases with the current net-conf",
	ReasonOutsideNetwork:     "rejecting lease: its subnet is outside the network; restart its host so it picks up the current net-conf, or delete the key",
	ReasonPublicIPInvalid:    "rejecting lease: its PublicIP cannot be a host's address; fix --public-ip on its host, or delete the key",
	ReasonBackendData:        "rejecting lease: its BackendData is unusable (vxlan: no VtepMAC; wireguard: no PublicKey, or two different ones); delete the key, its host writes a correct one when it restarts",
	ReasonOverlapsOwn:        "rejecting lease: its subnet overlaps ours; delete the key",
	ReasonPublicIPOwn:        "rejecting lease: it claims our PublicIP; delete the key, or give one of the two hosts another --public-ip",
	ReasonVtepMACOwn:         "rejecting lease: it carries our VtepMAC; delete the key",
	ReasonOverlapsLease:      "rejecting lease: its subnet overlaps an older lease's; delete the younger key",
	ReasonVtepMACDuplicate:   "rejecting lease: its VtepMAC is an older lease's; delete the younger key",
	ReasonPublicKeyOwn:       "rejecting lease: it carries our WireGuard public key; delete the key, and if the host copied our key file, give it its own (delete its key file and restart it)",
	ReasonPublicKeyDuplicate: "rejecting lease: its WireGuard public key is an older lease's; delete the younger key, and give that host its own key (delete its key file and restart it)",
	ReasonBackendType:        "ignoring peer of a backend that does not mix with ours",
}

// logRejected logs one rejection with the etcd keys an operator would
// act on.
func logRejected(e *Engine, r Rejection) {
	p := r.Lease
	msg, ok := rejectMessages[r.Reason]
	if !ok {
		msg = "rejecting lease"
	}
	attrs := []any{"reason", string(r.Reason), "key", e.sm.LeaseKey(p), "peer_subnet", p.String(), "peer_ip", p.Attrs.PublicIP}
	if p.Attrs.PublicIPv6.IsValid() {
		attrs = append(attrs, "peer_ipv6", p.Attrs.PublicIPv6)
	}
	switch r.Reason {
	case ReasonOverlapsLease, ReasonVtepMACDuplicate:
		attrs = append(attrs, "winner", e.sm.LeaseKey(r.Winner), "winner_ip", r.Winner.Attrs.PublicIP)
	case ReasonOverlapsOwn, ReasonPublicIPOwn, ReasonVtepMACOwn:
		attrs = append(attrs, "subnet", e.Lease().String())
	case ReasonSubnetLength, ReasonOutsideNetwork:
		attrs = append(attrs, "network", e.net.Network, "subnet_len", e.net.SubnetLen)
		if e.net.EnableIPv6 {
			attrs = append(attrs, "ipv6_network", e.net.IPv6Network, "ipv6_subnet_len", e.net.IPv6SubnetLen)
		}
	case ReasonBackendType:
		attrs = append(attrs, "backend", e.net.BackendType, "peer_backend", BackendType(p))
	}
	if r.Reason != ReasonBackendType {
		attrs = append(attrs, "fix", fmt.Sprintf("etcdctl del '%s'", e.sm.LeaseKey(p)))
	}
	e.log.Warn(msg, attrs...)
}
