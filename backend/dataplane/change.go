package dataplane

import (
	"fmt"
	"net/netip"
)

// ChangeKind says what a Change is about.
type ChangeKind uint8

const (
	// RouteChanged: a route of the main table (Change.Route).
	RouteChanged ChangeKind = iota + 1
	// NeighChanged: a neighbour entry (Change.Neigh). A new entry that is
	// not permanent comes as the deletion of the permanent one under its
	// key, since the kernel holds one entry per key; a deletion carries
	// no MAC.
	NeighChanged
	// FDBChanged: a forwarding entry of a device (Change.FDB).
	FDBChanged
	// AddrChanged: an address (Change.Addr).
	AddrChanged
	// LinkChanged: a device came, went or changed (Change.Link: its index;
	// Change.Up: it is up).
	LinkChanged
	// NexthopChanged: a nexthop object of ours that routes of ours use
	// went away (Change.Nexthop: its id). The kernel takes its routes with
	// it without a word for each.
	NexthopChanged
	// ChangesLost: the kernel dropped notifications (the socket's buffer
	// overflowed). Anything may have changed.
	ChangesLost
)

// Change is one change of the kernel's tables, as a watch (Watcher)
// reports it: the entry as the kernel now holds it, or as it held it
// before deleting it.
type Change struct {
	Kind    ChangeKind
	Deleted bool
	// Route is a route of the main table; Metric is its priority as the
	// kernel keeps it (with the destination, the slot a route replaces).
	// A route of a type the reconciler does not make (unreachable,
	// multipath, ...) has Type OtherRoute.
	Route   Route
	Metric  int
	Neigh   Neigh
	FDB     FDB
	Addr    Addr
	Link    int
	Up      bool
	Nexthop uint32
}

// ChangeKey names the kernel entry a change is about, so that the last
// change of each entry tells its state: a route's destination and
// priority (its slot in the table), a neighbour's link and address, an
// FDB entry's link, MAC and remote, an address, a link, a nexthop.
type ChangeKey struct {
	kind   ChangeKind
	link   int
	pfx    netip.Prefix
	mac    MAC
	remote netip.Addr
	id     uint32
}

// Key is the key of what c changed.
func (c Change) Key() ChangeKey {
	switch c.Kind {
	case RouteChanged:
		return ChangeKey{kind: c.Kind, pfx: c.Route.Dst.Masked(), id: uint32(c.Metric)}
	case NeighChanged:
		return ChangeKey{kind: c.Kind, link: c.Neigh.LinkIndex, pfx: netip.PrefixFrom(c.Neigh.IP, c.Neigh.IP.BitLen())}
	case FDBChanged:
		return ChangeKey{kind: c.Kind, link: c.FDB.LinkIndex, mac: c.FDB.MAC, remote: c.FDB.Dst}
	case AddrChanged:
		return ChangeKey{kind: c.Kind, link: c.Addr.LinkIndex, pfx: c.Addr.Prefix}
	case LinkChanged:
		return ChangeKey{kind: c.Kind, link: c.Link}
	case NexthopChanged:
		return ChangeKey{kind: c.Kind, id: c.Nexthop}
	}
	return ChangeKey{kind: c.Kind}
}

// String renders c like `ip monitor`: the entry, "Deleted " before a
// deletion.
func (c Change) String() string {
	var s string
	switch c.Kind {
	case RouteChanged:
		s = c.Route.String()
	case NeighChanged:
		s = c.Neigh.String()
		if c.Deleted {
			s = fmt.Sprintf("%s dev %s", c.Neigh.IP, linkNum(c.Neigh.LinkIndex))
		}
	case FDBChanged:
		s = c.FDB.String()
	case AddrChanged:
		s = c.Addr.String()
	case LinkChanged:
		s = "link " + linkNum(c.Link)
		if !c.Deleted && !c.Up {
			s += " down"
		}
	case NexthopChanged:
		s = fmt.Sprintf("nexthop id %d", c.Nexthop)
	case ChangesLost:
		return "notifications lost"
	}
	if c.Deleted {
		return "Deleted " + s
	}
	return s
}

// Watcher is implemented by a Kernel that can report the changes of its
// tables as they happen (Netlink: rtnetlink notifications). Watch sends
// batches of changes until done is closed, then closes the channel. The
// changes a caller makes itself come back too, as the kernel's echo.
type Watcher interface {
	Watch(done <-chan struct{}) (<-chan []Change, error)
}

// Explains reports whether the kernel, having made change c, still holds
// the table's state for what c is about, or c is none of the table's
// business. owned reports the links whose tables are ours (Apply's
// links). A change it does not explain is drift: someone else changed
// an entry of ours, or took one of ours away, or added one on a device of
// ours. It answers for routes (blackholes of ours aside: ApplyBlackholes
// keeps those), neighbours, FDB entries and addresses; other kinds are
// the caller's to judge.
//
// Echoes of the table's own changes are explained once they reflect the
// table; an echo that arrives after the table moved on is not, so a
// caller should judge the last change of each entry (ChangeKey) a moment
// later, once the echo of any newer change of ours has come too.
func (t *Table) Explains(c Change, owned func(link int) bool) bool {
	switch c.Kind {
	case RouteChanged:
		r := c.Route
		if r.Type == Blackhole && r.Proto == Proto {
			return true
		}
		w, ok := t.routes.winner(r.Dst.Masked())
		// Our routes take the kernel's default priority; a route at
		// another one lies beside ours, as Apply leaves it.
		ours := c.Metric == defaultMetric(r.Dst)
		switch {
		case c.Deleted:
			return !ok || !ours || w != r
		case ok && ours:
			return w == r
		case ok:
			return true
		}
		return r.Proto != Proto || r.Type != Unicast
	case NeighChanged:
		n := c.Neigh
		w, ok := t.neighs.winner(neighKey{n.LinkIndex, n.IP})
		switch {
		case c.Deleted:
			return !ok
		case ok:
			return w == n
		}
		return !owned(n.LinkIndex)
	case FDBChanged:
		f := c.FDB
		w, ok := t.fdbs.winner(fdbKey{f.LinkIndex, f.MAC})
		switch {
		case c.Deleted:
			return !ok || w != f
		case ok:
			return w == f
		}
		return !owned(f.LinkIndex)
	case AddrChanged:
		a := c.Addr
		if a.Prefix.Addr().IsLinkLocalUnicast() {
			return true
		}
		_, ok := t.addrs.winner(a)
		if c.Deleted {
			return !ok
		}
		return ok || !owned(a.LinkIndex)
	}
	return true
}

// defaultMetric is the priority the kernel gives a route added without
// one: 0 for IPv4, 1024 for IPv6.
func defaultMetric(dst netip.Prefix) int {
	if dst.Addr().Is6() {
		return 1024
	}
	return 0
}

func (c *column[K, V]) winner(k K) (V, bool) {
	if f, ok := c.first[k]; ok {
		return c.value(f, k), true
	}
	var zero V
	return zero, false
}
