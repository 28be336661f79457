package dataplane

import (
	"net/netip"
	"slices"
)

// Table is a desired state assembled from parts (one per peer, one for
// the host's own entries), kept so that replacing a few parts yields the
// kernel operations for those parts alone: a change costs work for the
// entries it touches, not a pass over the whole state. The full
// comparison with the kernel stays Apply's job, run with State() on a
// timer.
//
// Entries of different parts under one key (a route destination, a
// neighbour address or an FDB MAC on a link) collide: the part set first
// wins, as the first state does in Merge, and when it lets go of the key
// the next part's entry takes over. Re-setting a part keeps its place.
//
// It is not safe for concurrent use.
type Table struct {
	seq    uint64
	parts  map[string]part
	routes column[netip.Prefix, Route]
	neighs column[neighKey, Neigh]
	fdbs   column[fdbKey, FDB]
	addrs  column[Addr, Addr]
}

type part struct {
	seq   uint64
	state State
}

// NewTable returns an empty table.
func NewTable() *Table {
	return &Table{
		parts:  map[string]part{},
		routes: newColumn[netip.Prefix, Route](),
		neighs: newColumn[neighKey, Neigh](),
		fdbs:   newColumn[fdbKey, FDB](),
		addrs:  newColumn[Addr, Addr](),
	}
}

// Diff is what a batch of part changes means for the kernel: entries to
// set (new, or a key whose winning entry changed) and entries to delete
// (keys nobody wants any more). ApplyDiff runs it in Apply's order.
type Diff struct{ p applyPlan }

// Len is the number of kernel operations in d.
func (d Diff) Len() int {
	p := d.p
	return len(p.addrAdd) + len(p.addrDel) + len(p.neighSet) + len(p.neighDel) +
		len(p.fdbSet) + len(p.fdbDel) + len(p.routeSet) + len(p.routeDel)
}

// Update replaces the parts named in batch; a nil state deletes the part.
// It returns the net difference for the kernel: a part deleted and set
// again in one batch to the same entries costs nothing.
func (t *Table) Update(batch map[string]*State) Diff {
	// In name order: parts new in one batch are ranked the same way
	// whatever the map's order.
	names := make([]string, 0, len(batch))
	for name := range batch {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		s := batch[name]
		old, had := t.parts[name]
		seq := old.seq
		if !had {
			t.seq++
			seq = t.seq
		}
		t.unset(name, old.state)
		if s == nil {
			delete(t.parts, name)
			continue
		}
		t.parts[name] = part{seq, *s}
		t.set(name, seq, *s)
	}
	var d Diff
	d.p.addrAdd, d.p.addrDel = t.addrs.flush()
	d.p.neighSet, d.p.neighDel = t.neighs.flush()
	d.p.fdbSet, d.p.fdbDel = t.fdbs.flush()
	d.p.routeSet, d.p.routeDel = t.routes.flush()
	sortAddrs(d.p.addrDel)
	s := State{Routes: d.p.routeDel, Neighs: d.p.neighDel, FDBs: d.p.fdbDel}.Sorted()
	d.p.routeDel, d.p.neighDel, d.p.fdbDel = s.Routes, s.Neighs, s.FDBs
	return d
}

func (t *Table) unset(name string, s State) {
	for _, r := range s.Routes {
		t.routes.remove(r.Dst.Masked(), name)
	}
	for _, n := range s.Neighs {
		t.neighs.remove(neighKey{n.LinkIndex, n.IP}, name)
	}
	for _, f := range s.FDBs {
		t.fdbs.remove(fdbKey{f.LinkIndex, f.MAC}, name)
	}
	for _, a := range s.Addrs {
		t.addrs.remove(a, name)
	}
}

func (t *Table) set(name string, seq uint64, s State) {
	for _, r := range s.Routes {
		t.routes.add(r.Dst.Masked(), owner[Route]{seq, name, r})
	}
	for _, n := range s.Neighs {
		t.neighs.add(neighKey{n.LinkIndex, n.IP}, owner[Neigh]{seq, name, n})
	}
	for _, f := range s.FDBs {
		t.fdbs.add(fdbKey{f.LinkIndex, f.MAC}, owner[FDB]{seq, name, f})
	}
	for _, a := range s.Addrs {
		t.addrs.add(a, owner[Addr]{seq, name, a})
	}
}

// Part returns the state last set for a part.
func (t *Table) Part(name string) (State, bool) {
	p, ok := t.parts[name]
	return p.state, ok
}

// Parts is the number of parts.
func (t *Table) Parts() int { return len(t.parts) }

// State returns the winning entries: what the kernel should hold, for a
// full Apply.
func (t *Table) State() State {
	return State{Routes: t.routes.winners(), Neighs: t.neighs.winners(), FDBs: t.fdbs.winners(), Addrs: t.addrs.winners()}
}

// ApplyDiff makes the kernel changes of d, in Apply's order, without
// reading the kernel: entries are replaced, so one that is already right
// costs a call but changes nothing, and one already gone counts as
// deleted. Failures are collected; Changes counts what succeeded. After a
// failure the caller should run a full Apply.
func ApplyDiff(k Kernel, d Diff) (Changes, error) { return ApplyDiffBetween(k, d, nil) }

// ApplyDiffBetween is ApplyDiff with between called after the additions
// and before the deletions (see ApplyBetween).
func ApplyDiffBetween(k Kernel, d Diff, between func()) (Changes, error) {
	p := d.p
	p.between = between
	return p.run(k)
}

// column is one kind of entry: for each key the parts that want it, in
// the order they were first set (the first wins), and, while a batch is
// being folded, each touched key's winner before the batch.
type column[K comparable, V comparable] struct {
	owners map[K][]owner[V]
	before map[K]winner[V]
	order  []K // touched keys in first-touch order
}

type owner[V any] struct {
	seq  uint64
	name string
	v    V
}

type winner[V any] struct {
	v  V
	ok bool
}

func newColumn[K comparable, V comparable]() column[K, V] {
	return column[K, V]{owners: map[K][]owner[V]{}, before: map[K]winner[V]{}}
}

func (c *column[K, V]) touch(k K) {
	if _, done := c.before[k]; done {
		return
	}
	var w winner[V]
	if os := c.owners[k]; len(os) > 0 {
		w = winner[V]{os[0].v, true}
	}
	c.before[k] = w
	c.order = append(c.order, k)
}

func (c *column[K, V]) remove(k K, name string) {
	c.touch(k)
	os := slices.DeleteFunc(c.owners[k], func(o owner[V]) bool { return o.name == name })
	if len(os) == 0 {
		delete(c.owners, k)
		return
	}
	c.owners[k] = os
}

func (c *column[K, V]) add(k K, o owner[V]) {
	c.touch(k)
	os := c.owners[k]
	if slices.ContainsFunc(os, func(x owner[V]) bool { return x.name == o.name }) {
		return // a part holding one key twice: its first entry counts
	}
	i, _ := slices.BinarySearchFunc(os, o.seq, func(x owner[V], seq uint64) int {
		switch {
		case x.seq < seq:
			return -1
		case x.seq > seq:
			return 1
		}
		return 0
	})
	c.owners[k] = slices.Insert(os, i, o)
}

// flush ends a batch: the entries whose winner changed are set, those
// with no owner left deleted.
func (c *column[K, V]) flush() (set, del []V) {
	for _, k := range c.order {
		b := c.before[k]
		os := c.owners[k]
		switch {
		case len(os) > 0 && (!b.ok || b.v != os[0].v):
			set = append(set, os[0].v)
		case len(os) == 0 && b.ok:
			del = append(del, b.v)
		}
	}
	// A map keeps the buckets of its largest batch and clear walks them
	// all: after a big batch (the first list) start a small one, so a
	// lone change costs its own entries, not the size of the table.
	if len(c.before) > 1024 {
		c.before, c.order = map[K]winner[V]{}, nil
	} else {
		clear(c.before)
		c.order = c.order[:0]
	}
	return set, del
}

func (c *column[K, V]) winners() []V {
	out := make([]V, 0, len(c.owners))
	for _, os := range c.owners {
		out = append(out, os[0].v)
	}
	return out
}
