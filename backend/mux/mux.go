// Package mux serves the peers of several backend types at once, so a
// cluster can move from one backend to another while every pod keeps
// reaching every other.
//
// A host publishes one backend in its lease, the primary (the net-conf's).
// Each peer is reached by the backend that peer advertises: a vxlan peer
// through our VXLAN device to its VtepMAC, a udp peer through flannel0 to
// its port, a host-gw peer by a direct route. So while a switch goes on,
// or whenever hosts of different backends share a cluster, a host runs a
// member backend per type among its peers, besides the primary. A member
// is retired (its Run stopped, Close called, its devices deleted by the
// engine) once no peer of its type has been left for Grace: packets a
// peer sent before it saw our new lease still find the device.
//
// The Mux is itself a backend.PerPeer: each peer's part is its member's
// part for that peer, the host part the union of the members' host parts,
// and the links the union of theirs, so one backend.Reconciler keeps one
// table and one Apply owns every route with proto 98 (two reconcilers
// would delete each other's routes). Members must be PerPeer; wireguard is
// not, and is never mixed with the plaintext backends (see Mixable).
//
// Only the engine's loop calls the Mux, except Run (its own goroutine)
// and Collect (the metrics handler); mu guards what those two read.
package mux

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flanneld-go/flannel/backend"
	"github.com/flanneld-go/flannel/backend/dataplane"
	"github.com/flanneld-go/flannel/subnet"
)

// Mixable are the backend types a Mux combines: a host whose primary is
// one of them serves peers of any of them.
var Mixable = []string{"udp", "vxlan", "host-gw"}

// CanMix reports whether typ can be a member of a Mux.
func CanMix(typ string) bool { return slices.Contains(Mixable, typ) }

// LeaseType is the backend type a lease advertises; upstream's udp
// backend writes none.
func LeaseType(l subnet.Lease) string {
	if l.Attrs.BackendType == "" {
		return "udp"
	}
	return l.Attrs.BackendType
}

// DefaultGrace is how long a member is kept after its last peer left (or,
// for the type we published before a switch, after the new lease is
// published): time for every peer to see the new leases, its watch
// lagging under a whole cluster's republishing. An idle member costs
// nothing but its device.
const DefaultGrace = 5 * time.Second

// Factory creates a member backend of a type with its parsed options; it
// must not touch the kernel (that is Prepare's).
type Factory func(typ string, opts any) (backend.PerPeer, error)

// Config is what a Mux is built from.
type Config struct {
	Log *slog.Logger
	// New creates members; Defaults gives the options of a type the
	// net-conf never named (a peer of that type appeared), from such a
	// peer's lease (zero when none is known).
	New      Factory
	Defaults func(typ string, peer subnet.Lease) (any, error)
	// Grace is how long a member outlives its last peer (DefaultGrace
	// when zero).
	Grace time.Duration
	// Now is the clock (time.Now when nil), for tests.
	Now func() time.Time
}

type member struct {
	typ   string
	opts  any
	be    backend.PerPeer
	attrs subnet.LeaseAttrs
	mtu   int
	// idle is when the member's last peer left (zero: it has peers, or
	// is the primary).
	idle   time.Time
	cancel context.CancelFunc
	done   chan struct{}
}

// Mux is a backend.PerPeer over member backends, one per type.
type Mux struct {
	cfg     Config
	log     *slog.Logger
	peerLog *backend.PeerLog

	mu      sync.Mutex
	primary *member
	members map[string]*member
	runCtx  context.Context
	runErr  chan error

	opts map[string]any // the last options of each type
	// held is the type our lease advertised before a Switch, kept until
	// Published: peers reach us by it until they see the new lease.
	held    string
	own     subnet.Lease
	started bool
	changed bool // membership changed since the last Refresh
	// retiredSince are the types retired since the last Need (which
	// reports them, for their devices to be deleted).
	retiredSince []string
}

// New returns a Mux whose primary is a backend of typ with opts.
func New(c Config, typ string, opts any) (*Mux, error) {
	if c.Grace <= 0 {
		c.Grace = DefaultGrace
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	log := c.Log
	if log == nil {
		log = slog.Default()
	}
	m := &Mux{cfg: c, log: log, peerLog: backend.NewPeerLog(log), members: map[string]*member{},
		opts: map[string]any{typ: opts}, runErr: make(chan error, 1)}
	be, err := c.New(typ, opts)
	if err != nil {
		return nil, err
	}
	m.primary = &member{typ: typ, opts: opts, be: be}
	m.members[typ] = m.primary
	return m, nil
}

// Primary is the type this host publishes.
func (m *Mux) Primary() string { return m.primary.typ }

// Types are the member types, sorted.
func (m *Mux) Types() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]string, 0, len(m.members))
	for t := range m.members {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// Options are the options of the member of typ (nil: none).
func (m *Mux) Options(typ string) any {
	if mb := m.members[typ]; mb != nil {
		return mb.opts
	}
	return nil
}

// Changed reports whether members came or went since the last Refresh:
// every part must be computed again (a full pass).
func (m *Mux) Changed() bool { return m.changed }

// Prepare implements backend.Backend: the primary's.
func (m *Mux) Prepare(ctx context.Context) (subnet.LeaseAttrs, error) {
	attrs, err := m.primary.be.Prepare(ctx)
	m.primary.attrs = attrs
	return attrs, err
}

// Start implements backend.Backend: every member is started with our
// lease; pods get the primary's MTU.
func (m *Mux) Start(ctx context.Context, own subnet.Lease) (int, error) {
	m.own, m.started = own, true
	for _, mb := range m.sorted() {
		mtu, err := mb.be.Start(ctx, own)
		if err != nil {
			return 0, fmt.Errorf("%s backend: %w", mb.typ, err)
		}
		mb.mtu = mtu
	}
	return m.primary.mtu, nil
}

// sorted are the members, primary first, then by type.
func (m *Mux) sorted() []*member {
	out := []*member{m.primary}
	for _, t := range m.typesLocked() {
		if mb := m.members[t]; mb != m.primary {
			out = append(out, mb)
		}
	}
	return out
}

func (m *Mux) typesLocked() []string {
	out := make([]string, 0, len(m.members))
	for t := range m.members {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// Reconcile implements backend.Backend for the whole peer set (tests and
// tools; the engine drives the Mux through a backend.Reconciler): members
// for the peers' types are added, then every part applied at once.
func (m *Mux) Reconcile(ctx context.Context, peers []subnet.Lease) (dataplane.Changes, error) {
	if _, _, err := m.Need(ctx, CountTypes(peers), func(typ string) subnet.Lease {
		for _, p := range peers {
			if LeaseType(p) == typ {
				return p
			}
		}
		return subnet.Lease{}
	}); err != nil {
		return dataplane.Changes{}, err
	}
	if _, err := m.Refresh(ctx); err != nil {
		return dataplane.Changes{}, err
	}
	states := []dataplane.State{m.HostState()}
	var skips []backend.Skip
	for _, p := range peers {
		s, sk := m.PeerState(p)
		states = append(states, s)
		skips = append(skips, sk...)
	}
	m.peerLog.Report(skips)
	want, _ := dataplane.Merge(states...)
	return dataplane.Apply(m.Kernel(), m.Links(), want)
}

// CountTypes counts leases by advertised type.
func CountTypes(leases []subnet.Lease) map[string]int {
	out := map[string]int{}
	for _, l := range leases {
		out[LeaseType(l)]++
	}
	return out
}

// Refresh implements backend.PerPeer: every member's facts; a change of
// membership counts as a change (every part is computed again).
func (m *Mux) Refresh(ctx context.Context) (bool, error) {
	changed := m.changed
	var errs []error
	for _, mb := range m.sorted() {
		c, err := mb.be.Refresh(ctx)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s backend: %w", mb.typ, err))
		}
		changed = changed || c
	}
	if err := errors.Join(errs...); err != nil {
		return false, err
	}
	m.changed = false
	return changed, nil
}

// HostState implements backend.PerPeer: the union of the members'.
func (m *Mux) HostState() dataplane.State {
	var states []dataplane.State
	for _, mb := range m.sorted() {
		states = append(states, mb.be.HostState())
	}
	s, err := dataplane.Merge(states...)
	if err != nil {
		m.log.Warn("the backends' host states collide; keeping the primary's", "backend", m.primary.typ, "error", err)
	}
	return s
}

// PeerState implements backend.PerPeer: the part of the member of the
// peer's type.
func (m *Mux) PeerState(p subnet.Lease) (dataplane.State, []backend.Skip) {
	typ := LeaseType(p)
	mb := m.members[typ]
	if mb == nil {
		return dataplane.State{}, []backend.Skip{{Peer: p, Reason: "no_backend",
			Msg:   "cannot reach peer: its backend could not be set up here (see the error above)",
			Attrs: []any{"peer_subnet", p.String(), "peer_ip", p.Attrs.PublicIP, "peer_backend", typ}}}
	}
	return mb.be.PeerState(p)
}

// Links implements backend.PerPeer: the union of the members'.
func (m *Mux) Links() []int {
	var out []int
	for _, mb := range m.sorted() {
		for _, l := range mb.be.Links() {
			if !slices.Contains(out, l) {
				out = append(out, l)
			}
		}
	}
	return out
}

// Kernel implements backend.PerPeer: the primary's (every member's kernel
// is this host's).
func (m *Mux) Kernel() dataplane.Kernel { return m.primary.be.Kernel() }

// PeerLog implements backend.PerPeer.
func (m *Mux) PeerLog() *backend.PeerLog { return m.peerLog }

// Track implements backend.Tracker: every member that keeps a table of
// its own hears of every peer.
func (m *Mux) Track(p subnet.Lease) {
	for _, mb := range m.members {
		if t, ok := mb.be.(backend.Tracker); ok {
			t.Track(p)
		}
	}
}

// Forget implements backend.Tracker.
func (m *Mux) Forget(key string) {
	for _, mb := range m.members {
		if t, ok := mb.be.(backend.Tracker); ok {
			t.Forget(key)
		}
	}
}

// Commit implements backend.Tracker.
func (m *Mux) Commit() {
	for _, mb := range m.members {
		if t, ok := mb.be.(backend.Tracker); ok {
			t.Commit()
		}
	}
}

// Devices implements backend.DeviceOwner: every member's devices.
func (m *Mux) Devices() []string {
	var out []string
	for _, mb := range m.sorted() {
		if o, ok := mb.be.(backend.DeviceOwner); ok {
			out = append(out, o.Devices()...)
		}
	}
	return out
}

// Describe implements prometheus.Collector: nothing, as the members (and
// so the metrics) change with the peers (an unchecked collector).
func (m *Mux) Describe(chan<- *prometheus.Desc) {}

// Collect implements prometheus.Collector: the members' metrics.
func (m *Mux) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	var cols []prometheus.Collector
	for _, mb := range m.members {
		if c, ok := mb.be.(prometheus.Collector); ok {
			cols = append(cols, c)
		}
	}
	m.mu.Unlock()
	for _, c := range cols {
		c.Collect(ch)
	}
}

// sameOptions reports whether two parsed options are the same.
func sameOptions(a, b any) bool { return reflect.DeepEqual(a, b) }
