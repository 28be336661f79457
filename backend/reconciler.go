package backend

import (
	"context"
	"fmt"
	"iter"
	"slices"

	"github.com/flanneld-go/flannel/backend/dataplane"
	"github.com/flanneld-go/flannel/subnet"
)

// PerPeer is implemented by backends whose desired state is a sum of
// parts: one per peer, computed from that peer's lease and the host's
// facts alone, and one for the host. The engine then drives the backend
// through a Reconciler: a lease change costs the kernel operations of that
// peer (no dump), and the full comparison with the kernel runs on the
// periodic resync. Reconcile stays the whole-set entry point (for tests
// and tools); it must give the same state as the parts.
type PerPeer interface {
	Backend
	// Refresh re-reads the host facts the parts depend on (the external
	// interface's networks, the devices and their indexes), re-creating
	// a device that went missing. It reports whether the facts changed
	// since the last call (the first call reports true): every peer's
	// part is then computed again.
	Refresh(ctx context.Context) (changed bool, err error)
	// HostState is the part of no peer (the devices' addresses); it may
	// change with the lease given to Start.
	HostState() dataplane.State
	// PeerState is one peer's part, from the facts of the last Refresh;
	// what it cannot serve of the peer comes back as skips.
	PeerState(p subnet.Lease) (dataplane.State, []Skip)
	// Links are the devices whose tables belong to the backend
	// (dataplane.Apply's links).
	Links() []int
	// Kernel is where the state is applied.
	Kernel() dataplane.Kernel
	// PeerLog reports the skips.
	PeerLog() *PeerLog
}

// Tracker is implemented by a PerPeer backend that keeps per-peer state
// of its own besides the kernel's (udp: its forwarding table and the
// senders it accepts datagrams from). The Reconciler calls Track for each
// peer whose part it computes, Forget for each peer whose part it
// removes, and Commit once in every pass, between the kernel's additions
// and its deletions (dataplane.ApplyBetween), so a peer that moves
// between the table and the kernel has one of its paths at every moment. In a Mux (a host serving peers of several backend types while
// a switch goes on) every Tracker member is told of every peer, whatever
// the peer's type: udp accepts datagrams from a vxlan or host-gw peer that
// still sends to it over udp. Track and Forget must be cheap; the work
// belongs in Commit.
type Tracker interface {
	Track(p subnet.Lease)
	Forget(key string)
	Commit()
}

// Closer is implemented by a backend that holds resources besides its
// kernel state (udp: flannel0's queues and sockets). When a live switch
// retires the backend, Close is called after its Run (if any) returned
// and its parts were removed from the kernel; its devices (DeviceOwner)
// are deleted after that. Close must be safe to call once after Start.
type Closer interface {
	Close() error
}

// hostPart names the host's part in the table; lease keys are never
// empty.
const hostPart = ""

// Reconciler keeps a PerPeer backend's desired state as a dataplane.Table
// of parts. Update applies the parts of changed peers as a diff, without
// reading the kernel; Full brings every part up to date (all of them when
// the host facts changed) and compares the whole state with one dump of
// the kernel, so what was changed by hand comes back. After a failed
// Update, NeedsFull reports true until a Full succeeds: the table may
// then hold entries the kernel does not.
//
// It is not safe for concurrent use: the engine's loop owns it.
type Reconciler struct {
	b PerPeer
	t *dataplane.Table
	// leases are the leases the peer parts were built from, by key: the
	// caller's own for FullSeq (a pointer rather than a copy of each),
	// copies of Full's and Update's.
	leases map[string]*subnet.Lease
	skips  map[string][]Skip // by lease key
	owned  map[int]bool      // Links as of the last Full
	dirty  bool
}

// NewReconciler returns a reconciler whose first pass must be Full.
func NewReconciler(b PerPeer) *Reconciler {
	return &Reconciler{b: b, t: dataplane.NewTable(), leases: map[string]*subnet.Lease{}, skips: map[string][]Skip{}, dirty: true}
}

// NeedsFull reports whether the next pass must be Full: none ran yet, or
// the last pass failed.
func (r *Reconciler) NeedsFull() bool { return r.dirty }

// Peers is the number of peers with a part.
func (r *Reconciler) Peers() int { return len(r.leases) }

// Full makes the parts match peers (the whole peer set) and the kernel
// match the whole state: Refresh, the host part, the parts of peers that
// changed, came or went (every peer's if the host facts changed), then one
// dataplane.Apply.
func (r *Reconciler) Full(ctx context.Context, peers []subnet.Lease) (dataplane.Changes, error) {
	own := slices.Clone(peers)
	return r.FullSeq(ctx, func(yield func(*subnet.Lease) bool) {
		for i := range own {
			if !yield(&own[i]) {
				return
			}
		}
	}, len(own))
}

// FullSeq is Full with the peers as a sequence of n leases that the
// Reconciler keeps, by pointer, until a later pass replaces them: they
// must never change (the engine's peer set hands out its own leases,
// which it never modifies; a changed lease is a new one). At 10,000
// peers that is 10,000 pointers rather than a copy of every lease.
func (r *Reconciler) FullSeq(ctx context.Context, peers iter.Seq[*subnet.Lease], n int) (dataplane.Changes, error) {
	r.dirty = true
	changed, err := r.b.Refresh(ctx)
	if err != nil {
		return dataplane.Changes{}, err
	}
	r.owned = map[int]bool{}
	for _, l := range r.b.Links() {
		r.owned[l] = true
	}
	host := r.b.HostState()
	batch := map[string]*dataplane.State{hostPart: &host}
	first := len(r.leases) == 0
	var seen map[string]bool
	if first {
		// Every peer is new (the first pass): no part can be gone, and the
		// maps get their size at once.
		batch = make(map[string]*dataplane.State, n+1)
		batch[hostPart] = &host
		r.leases = make(map[string]*subnet.Lease, n)
	} else {
		seen = make(map[string]bool, n)
	}
	for p := range peers {
		key := p.Key()
		if !first {
			seen[key] = true
		}
		// The key names the subnets: the same key and attributes, the
		// same part. The lease kept becomes the caller's, so a copy made
		// by Update, or a lease the caller has replaced, can go.
		if old, ok := r.leases[key]; ok && !changed && old.Attrs.Equal(p.Attrs) {
			r.leases[key] = p
			continue
		}
		r.set(batch, p)
	}
	for key := range r.leases {
		if first {
			break
		}
		if !seen[key] {
			r.drop(batch, key)
		}
	}
	r.t.Update(batch)
	ch, err := dataplane.ApplyBetween(r.b.Kernel(), r.b.Links(), r.t.State(), r.commit)
	r.dirty = err != nil
	return ch, err
}

// Update applies the parts of the peers in set (their current leases)
// and removes those of the keys in gone, running only the kernel
// operations they mean. It must not be called while NeedsFull.
func (r *Reconciler) Update(set []subnet.Lease, gone []string) (dataplane.Changes, error) {
	if r.dirty {
		return dataplane.Changes{}, fmt.Errorf("incremental update before a full reconcile")
	}
	batch := make(map[string]*dataplane.State, len(set)+len(gone))
	for _, key := range gone {
		r.drop(batch, key)
	}
	own := slices.Clone(set)
	for i := range own {
		r.set(batch, &own[i])
	}
	ch, err := dataplane.ApplyDiffBetween(r.b.Kernel(), r.t.Update(batch), r.commit)
	r.dirty = err != nil
	return ch, err
}

func (r *Reconciler) set(batch map[string]*dataplane.State, p *subnet.Lease) {
	key := p.Key()
	s, skips := r.b.PeerState(*p)
	batch[key] = &s
	r.leases[key] = p
	if t, ok := r.b.(Tracker); ok {
		t.Track(*p)
	}
	r.b.PeerLog().ReportPeer(r.skips[key], skips)
	if len(skips) == 0 {
		delete(r.skips, key)
	} else {
		r.skips[key] = skips
	}
}

func (r *Reconciler) drop(batch map[string]*dataplane.State, key string) {
	if _, ok := r.leases[key]; !ok {
		return
	}
	batch[key] = nil
	delete(r.leases, key)
	if t, ok := r.b.(Tracker); ok {
		t.Forget(key)
	}
	r.b.PeerLog().ReportPeer(r.skips[key], nil)
	delete(r.skips, key)
}

func (r *Reconciler) commit() {
	if t, ok := r.b.(Tracker); ok {
		t.Commit()
	}
}

// Explains reports whether the kernel change c leaves the kernel holding
// the desired state for what c is about (an echo of our own change, or
// none of our business): dataplane.Table.Explains, with the backend's
// links as of the last Full as the owned ones.
func (r *Reconciler) Explains(c dataplane.Change) bool {
	return r.t.Explains(c, func(link int) bool { return r.owned[link] })
}

// Owns reports whether link is one of the backend's devices, as of the
// last Full.
func (r *Reconciler) Owns(link int) bool { return r.owned[link] }

// OwnedLinks are the backend's devices as of the last Full.
func (r *Reconciler) OwnedLinks() []int {
	out := make([]int, 0, len(r.owned))
	for l := range r.owned {
		out = append(out, l)
	}
	return out
}

// Kernel is the backend's kernel.
func (r *Reconciler) Kernel() dataplane.Kernel { return r.b.Kernel() }

// Watcher is the backend's kernel as a dataplane.Watcher, if it is one.
func (r *Reconciler) Watcher() (dataplane.Watcher, bool) {
	w, ok := r.b.Kernel().(dataplane.Watcher)
	return w, ok
}
