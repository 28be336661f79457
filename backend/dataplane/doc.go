// Package dataplane is the one model of what this host's kernel should hold
// for a set of peers, and the one reconciler that makes the kernel hold it.
//
// A backend describes the kernel it wants as a State: routes, neighbour
// entries, FDB entries and device addresses, for both address families, as
// plain comparable values. It computes that State with a pure function of
// its options, this host, the peer leases and the on-link facts (Nets);
// nothing in that function calls the kernel, so every backend's desired
// state is golden-tested against plain values. Two States merge (Merge), so
// two backends' states can be applied side by side.
//
// Apply is the reconciler: it dumps the kernel's current entries once
// (routes of the main table, and the neighbour, FDB and address tables of
// the links the caller owns), computes the difference and applies it in
// the one order that never breaks a path in use:
//
//	add:    addresses, neighbours, FDB entries, then the routes that use them
//	delete: routes, then FDB entries, neighbours, addresses
//
// with every addition before any deletion, so a peer that moves keeps a
// path at every instant. Entries that are already gone count as removed;
// every failure is collected (errors.Join) and one bad entry does not stop
// the others. Apply returns what it changed, for the log line and the
// metrics. It only deletes what is ours: routes marked with Proto, and
// entries on the links it is given.
//
// Kernel is the seam: the few netlink calls the backends use. Netlink is the
// real implementation (dumps retried when the kernel interrupts them, one
// place converting between net.IP and netip, routes with a gateway through
// nexthop objects of ours, see nexthop_table.go); Fake is an in-memory kernel
// whose Dump prints its state as `ip route`, `ip neigh`, `bridge fdb` and
// `ip addr` lines for golden tests.
package dataplane
