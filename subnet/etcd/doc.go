// Package etcd keeps this host's subnet lease in etcd and follows everyone
// else's, in upstream flannel's key layout:
//
//	<prefix>/config                          the net-conf JSON (subnet.ParseConfig)
//	<prefix>/subnets/<v4>-<len>              one host's lease: subnet.LeaseAttrs JSON,
//	<prefix>/subnets/<v4>-<len>&<v6>-<len>   attached to an etcd lease with the TTL
//
// <prefix> is /coreos.com/network by default (DefaultPrefix). A subnet key
// with no etcd lease attached is a reservation: an operator's, used as it
// is by the host whose PublicIP it names, never renewed, expired or
// deleted by this package.
//
// Acquisition is by transaction (acquire.go). Acquire lists the subnet
// table, reuses a lease already held under our PublicIP (refusing, with a
// HostConflictError, one that names another host identity: hostconflict.go),
// else picks free subnets (subnet.Config.PickSubnets) and creates the key
// in a transaction that succeeds only if no key holds that IPv4 subnet
// (and, dual-stack, the table is unchanged since the read, because etcd
// cannot match the IPv6 half of a key by prefix). A host that loses the
// race backs off and reads again, so two hosts never get the same subnet;
// after 50 lost races it gives up with ErrLostRaces. Keys that are not
// leases (malformed.go) hold subnets by the same rule as that guard
// (subnet.Malformed), so they never make it fail. Renew resets the
// TTL and checks that the key still holds what we wrote: a lease deleted
// or rewritten by someone else is ErrLeaseLost, and the caller acquires
// again. Republish (republish.go) rewrites our lease's attributes in
// place, on the same key and etcd lease, for a backend switch.
//
// Following the other leases is list-then-watch (watch.go). WatchLeases
// lists the subnet table, sends it as one batch, then watches from the
// list's revision + 1. When the watch breaks (compaction, lost leader,
// etcd restart, or a re-list asked for after an outage) it lists again and
// sends only the difference (subnet.DiffLeases) from what it sent before,
// so the receiver's view is exact without replaying history. WatchConfig
// (configwatch.go) follows the net-conf key the same way: read, watch
// from the read's revision + 1, read again when the watch breaks, and
// report a value only when its bytes differ from the last one reported.
//
// Connecting (client.go, probe.go): Connect, Dial and NewClient probe the
// endpoints before creating the client, because the etcd client reports a
// wrong CA, a rejected certificate, a wrong scheme and an etcd that is
// down all as the same timeout. The probe tells an outage (ErrUnreachable,
// waited out) from a mistake in the flags (an error naming the flag to
// check). OutageLog reports an outage once, with reminders, instead of a
// line per retry.
package etcd
