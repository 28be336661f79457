package dataplane

import (
	"cmp"
	"fmt"
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
	names  map[string]int32 // the index of each part in parts
	parts  []part           // by index; a deleted part's slot is in free
	free   []int32
	routes column[netip.Prefix, Route]
	neighs column[neighKey, Neigh]
	fdbs   column[fdbKey, FDB]
	addrs  column[Addr, Addr]
}

// part is one part's entries; seq is its place (the order parts were
// first set in).
type part struct {
	seq   uint64
	name  string
	state State
}

// NewTable returns an empty table.
func NewTable() *Table {
	t := &Table{names: map[string]int32{}}
	t.routes = newColumn(t, func(s *State) []Route { return s.Routes }, func(r Route) netip.Prefix { return r.Dst.Masked() })
	t.neighs = newColumn(t, func(s *State) []Neigh { return s.Neighs }, func(n Neigh) neighKey { return neighKey{n.LinkIndex, n.IP} })
	t.fdbs = newColumn(t, func(s *State) []FDB { return s.FDBs }, func(f FDB) fdbKey { return fdbKey{f.LinkIndex, f.MAC} })
	t.addrs = newColumn(t, func(s *State) []Addr { return s.Addrs }, func(a Addr) Addr { return a })
	return t
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
	t.reserve(batch)
	for _, name := range names {
		s := batch[name]
		i, had := t.names[name]
		if had {
			t.each(i, t.routes.remove, t.neighs.remove, t.fdbs.remove, t.addrs.remove)
		}
		switch {
		case s == nil && had:
			delete(t.names, name)
			t.parts[i] = part{}
			t.free = append(t.free, i)
			continue
		case s == nil:
			continue
		case !had:
			t.seq++
			i = t.newPart(part{seq: t.seq, name: name})
			t.names[name] = i
		}
		t.parts[i].state = *s
		t.each(i, t.routes.add, t.neighs.add, t.fdbs.add, t.addrs.add)
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

// reserve makes room for the parts batch adds at once, rather than
// growing the slice and the maps step by step through the first batch of
// 10,000 parts.
func (t *Table) reserve(batch map[string]*State) {
	var n int
	for name, s := range batch {
		if _, had := t.names[name]; !had && s != nil {
			n++
		}
	}
	if n <= len(t.free) {
		return
	}
	t.parts = slices.Grow(t.parts, n-len(t.free))
	if len(t.names) == 0 && n > 1024 {
		t.names = make(map[string]int32, n)
		t.routes.first, t.neighs.first, t.fdbs.first = make(map[netip.Prefix]int32, n), make(map[neighKey]int32, n), make(map[fdbKey]int32, n)
		t.routes.before, t.neighs.before, t.fdbs.before = make(map[netip.Prefix]int32, n), make(map[neighKey]int32, n), make(map[fdbKey]int32, n)
		t.routes.order, t.neighs.order, t.fdbs.order = make([]netip.Prefix, 0, n), make([]neighKey, 0, n), make([]fdbKey, 0, n)
	}
}

func (t *Table) newPart(p part) int32 {
	if n := len(t.free); n > 0 {
		i := t.free[n-1]
		t.free = t.free[:n-1]
		t.parts[i] = p
		return i
	}
	t.parts = append(t.parts, p)
	return int32(len(t.parts) - 1)
}

// each calls, for every entry of part i, its column's f with the entry's
// key and i.
func (t *Table) each(i int32, route func(netip.Prefix, int32), neigh func(neighKey, int32), fdb func(fdbKey, int32), addr func(Addr, int32)) {
	s := &t.parts[i].state
	for _, r := range s.Routes {
		route(r.Dst.Masked(), i)
	}
	for _, n := range s.Neighs {
		neigh(neighKey{n.LinkIndex, n.IP}, i)
	}
	for _, f := range s.FDBs {
		fdb(fdbKey{f.LinkIndex, f.MAC}, i)
	}
	for _, a := range s.Addrs {
		addr(a, i)
	}
}

// Part returns the state last set for a part.
func (t *Table) Part(name string) (State, bool) {
	i, ok := t.names[name]
	if !ok {
		return State{}, false
	}
	return t.parts[i].state, true
}

// Parts is the number of parts.
func (t *Table) Parts() int { return len(t.names) }

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
// being folded, each touched key's winner before the batch. It holds
// part indexes, not entries: an entry is read from its part's state when
// needed, so the table keeps each entry once (a few parts' entries, and
// its own maps of small values, at 10,000 peers).
type column[K comparable, V comparable] struct {
	t       *Table
	entries func(*State) []V // the column's entries of a state
	key     func(V) K
	first   map[K]int32   // the winning part under each key
	more    map[K][]int32 // the others, oldest first (collisions only)
	// before is, for each key touched in the batch, its winner before
	// the batch as an index in prev, or -1 for none (the first batch: a
	// small map, no entries).
	before map[K]int32
	prev   []V
	order  []K // touched keys in first-touch order
}

func newColumn[K comparable, V comparable](t *Table, entries func(*State) []V, key func(V) K) column[K, V] {
	return column[K, V]{t: t, entries: entries, key: key, first: map[K]int32{}, more: map[K][]int32{}, before: map[K]int32{}}
}

// value is part i's entry under k: its first one, as in Merge.
func (c *column[K, V]) value(i int32, k K) V {
	for _, v := range c.entries(&c.t.parts[i].state) {
		if c.key(v) == k {
			return v
		}
	}
	panic(fmt.Sprintf("dataplane: table part %q holds no entry under %v", c.t.parts[i].name, k))
}

func (c *column[K, V]) touch(k K) {
	if _, done := c.before[k]; done {
		return
	}
	w := int32(-1)
	if f, ok := c.first[k]; ok {
		w = int32(len(c.prev))
		c.prev = append(c.prev, c.value(f, k))
	}
	c.before[k] = w
	c.order = append(c.order, k)
}

func (c *column[K, V]) remove(k K, i int32) {
	c.touch(k)
	f, ok := c.first[k]
	switch {
	case !ok:
		return
	case f != i:
		c.setMore(k, slices.DeleteFunc(c.more[k], func(x int32) bool { return x == i }))
	case len(c.more[k]) > 0:
		m := c.more[k]
		c.first[k] = m[0]
		c.setMore(k, slices.Delete(m, 0, 1))
	default:
		delete(c.first, k)
	}
}

func (c *column[K, V]) add(k K, i int32) {
	c.touch(k)
	f, ok := c.first[k]
	if !ok {
		c.first[k] = i
		return
	}
	m := c.more[k]
	if f == i || slices.Contains(m, i) {
		return // a part holding one key twice: its first entry counts
	}
	seq := c.t.parts[i].seq
	if seq < c.t.parts[f].seq {
		c.first[k] = i
		c.more[k] = slices.Insert(m, 0, f)
		return
	}
	at, _ := slices.BinarySearchFunc(m, seq, func(x int32, seq uint64) int { return cmp.Compare(c.t.parts[x].seq, seq) })
	c.more[k] = slices.Insert(m, at, i)
}

func (c *column[K, V]) setMore(k K, m []int32) {
	if len(m) == 0 {
		delete(c.more, k)
		return
	}
	c.more[k] = m
}

// flush ends a batch: the entries whose winner changed are set, those
// with no owner left deleted.
func (c *column[K, V]) flush() (set, del []V) {
	if len(c.order) > 1024 {
		// A big batch (the first: every entry new) gets its slices at
		// their size rather than grown step by step.
		var ns, nd int
		for _, k := range c.order {
			_, ok := c.first[k]
			if ok {
				ns++
			} else if c.before[k] >= 0 {
				nd++
			}
		}
		set, del = make([]V, 0, ns), make([]V, 0, nd)
	}
	for _, k := range c.order {
		b := c.before[k]
		f, ok := c.first[k]
		switch {
		case ok:
			if v := c.value(f, k); b < 0 || c.prev[b] != v {
				set = append(set, v)
			}
		case b >= 0:
			del = append(del, c.prev[b])
		}
	}
	// A map keeps the buckets of its largest batch and clear walks them
	// all: after a big batch (the first list) start a small one, so a
	// lone change costs its own entries, not the size of the table.
	if len(c.before) > 1024 {
		c.before, c.prev, c.order = map[K]int32{}, nil, nil
	} else {
		clear(c.before)
		c.prev, c.order = c.prev[:0], c.order[:0]
	}
	return set, del
}

func (c *column[K, V]) winners() []V {
	out := make([]V, 0, len(c.first))
	for k, f := range c.first {
		out = append(out, c.value(f, k))
	}
	return out
}
