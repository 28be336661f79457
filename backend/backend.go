// Package backend defines what a data-plane backend does for the daemon.
//
// The daemon drives every backend the same way:
//
//	Prepare   create or adopt devices; return what to publish in the lease
//	Start     configure the devices for the lease this host got; report the MTU
//	Reconcile make the data plane match the current set of peer leases
//
// Reconcile is declarative: it receives the whole peer set every time (after
// each etcd change and on a timer), turns it into a dataplane.State with a
// pure function and hands that to dataplane.Apply, so state deleted by hand
// comes back and state of departed peers goes away.
//
// host-gw and vxlan leave their data plane in place when the daemon stops:
// routes, devices and entries stay, so traffic between existing hosts keeps
// flowing across a restart. udp cannot: its TUN device flannel0 lives only
// as long as the daemon holds it open, so stopping the daemon removes
// flannel0 and, with it, the route through it. wireguard is either: the
// kernel's device stays, the embedded one (a TUN device) goes with the
// daemon.
package backend

import (
	"context"
	"log/slog"
	"net/netip"

	"github.com/flanneld-go/flannel/backend/dataplane"
	"github.com/flanneld-go/flannel/subnet"
)

// ExternalInterface is the underlay interface that carries traffic between
// hosts, and the addresses this host uses and advertises on it.
type ExternalInterface struct {
	Name  string
	Index int
	MTU   int
	// Addr and Addr6 are the interface's own addresses (tunnel sources).
	Addr  netip.Addr
	Addr6 netip.Addr // invalid unless IPv6 is enabled
	// PublicIP and PublicIPv6 are advertised to peers in the lease; they
	// equal Addr/Addr6 unless overridden with --public-ip/--public-ipv6.
	PublicIP   netip.Addr
	PublicIPv6 netip.Addr
}

// Params is what a backend gets when it is created.
type Params struct {
	Ext    *ExternalInterface
	Config *subnet.Config
	// Options is the value returned by the type's ParseOptions.
	Options any
	Log     *slog.Logger
	// Tuning is the daemon's per-host settings for the backend, from its
	// environment rather than the net-conf (udp.Tuning for udp); a
	// backend uses its defaults when it is nil or of another type.
	Tuning any
}

// Backend is one host's data plane. A backend that is also a
// prometheus.Collector has its metrics served once Prepare has returned;
// from then on Collect may run at any time, concurrently with Start,
// Reconcile and Run.
type Backend interface {
	// Prepare creates or adopts the backend's devices before the lease is
	// known and returns the attributes to publish: BackendType and, when
	// the backend has any, BackendData/BackendV6Data. PublicIP fields are
	// filled in by the caller.
	Prepare(ctx context.Context) (subnet.LeaseAttrs, error)
	// Start configures the devices for this host's lease and returns the
	// MTU pods must use. It may be called again if the lease changes.
	Start(ctx context.Context, own subnet.Lease) (mtu int, err error)
	// Reconcile makes the kernel state match peers (every lease except
	// ours). It is idempotent and must not block for long. It returns what
	// it changed (for the engine's log line and metrics), also when it
	// fails part-way.
	Reconcile(ctx context.Context, peers []subnet.Lease) (dataplane.Changes, error)
}

// Runner is implemented by backends with long-running work of their own,
// such as a userspace packet loop. Run returns when ctx is done.
type Runner interface {
	Run(ctx context.Context) error
}

// DeviceOwner is implemented by backends that own network devices. After
// a backend starts, the daemon deletes the devices other backends would
// have created (flannel.<VNI>, flannel-v6.<VNI>, flannel0, flannel-wg,
// flannel-wg-v6) that the current backend does not list, so switching
// backends leaves nothing behind.
type DeviceOwner interface {
	Devices() []string
}

// Type describes one backend type in the registry.
type Type struct {
	// Name is the net-conf Backend.Type value.
	Name string
	// ParseOptions validates the net-conf's Backend object and returns the
	// options with their defaults filled in (printed by config check).
	// Keys it does not know are ignored (see OptionWarnings).
	ParseOptions func(raw []byte) (any, error)
	// Options are the names of the options ParseOptions reads, besides
	// Type. WindowsOptions are those only upstream's Windows nodes read
	// (a net-conf shared with them carries these).
	Options, WindowsOptions []string
	// New creates the backend; it should not touch the kernel yet.
	New func(p Params) (Backend, error)
}
