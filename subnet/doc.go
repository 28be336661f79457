// Package subnet is the lease model: what one host holds of the cluster
// network, how it is written down, and how the network is configured. It
// does no I/O; the etcd side (reading, writing and watching these values)
// is subnet/etcd. Backends see only this package.
//
// The pieces, each in the layout upstream flannel uses, so that hosts of
// both implementations share one cluster:
//
//   - Config is the net-conf, the JSON document an operator stores at
//     <prefix>/config: the pod network per family (Network, IPv6Network),
//     the length of each host's subnet, the range hosts may lease from
//     (SubnetMin..SubnetMax) and the backend with its options. ParseConfig
//     validates it, fills in upstream's defaults, and names the field at
//     fault in its errors.
//   - Lease is one host's IPv4 subnet (and IPv6 subnet when enabled) with
//     LeaseAttrs, what other hosts need to reach it: its public addresses
//     and the backend's data (e.g. the VXLAN MAC). In etcd a lease is a key
//     whose last element is SubnetKey ("10.244.3.0-24", dual-stack
//     "10.244.3.0-24&fd00:10:244:3::-64") and whose value is the LeaseAttrs
//     JSON; DecodeLease reads such a pair back. A key attached to an etcd
//     lease expires with it; a key without one is a reservation, which an
//     operator made and which never expires (Lease.Reserved). Any other
//     key under subnets/ is Malformed; GuardedSubnet says which subnet it
//     still holds (the same rule as the etcd side's creation guard).
//   - Event is a change of one lease (added or changed, removed), as the
//     engine and backends receive them; DiffLeases turns two complete sets
//     of leases into the events between them.
//   - Allocation: Config.PickSubnets chooses free subnets for a new lease,
//     the previous one (Hint) first, else at random; making the choice
//     safe against other hosts choosing at the same moment is the etcd
//     side's job (a transaction). Config.LeaseFits says whether a lease a
//     host already has can be kept.
//
// Prefix arithmetic (ipmath.go) treats IPv4 and IPv6 alike, so every rule
// above is written once for both families.
package subnet
