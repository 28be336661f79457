// Package dataplane is the small seam between backends and the kernel: the
// few netlink operations the backends use, behind an interface with a real
// netlink implementation and an in-memory fake for tests, plus the
// reconcilers that turn a desired set of routes (neighbours, FDB entries)
// into the minimal set of kernel changes, computed from one dump.
package dataplane
