package dataplane

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"golang.org/x/sys/unix"
)

// Why routes of ours go through nexthop objects.
//
// The kernel keeps the attributes of IPv4 routes (struct fib_info) in a
// hash that covers the nexthop's device but not its gateway. Every route
// of a backend (<subnet> via <gw> dev <one device> proto 98) lands in one
// bucket, and each insertion compares itself with all before it: 10,000
// peers cost seconds of kernel time at start. A route that names a
// nexthop object (RTA_NH_ID, kernel 5.3 and later) hashes by the
// nexthop's id instead. So a unicast route of ours with a gateway goes
// through a nexthop object of ours: one per (gateway, device, onlink),
// shared by the routes that use it, marked proto 98, under an id from a
// range of ours, and deleted when the last route using it goes.
//
// The count of routes using a nexthop must be right: deleting a nexthop
// deletes the routes that use it. The kernel's nexthop table is one per
// network namespace, and so is this table: every Netlink of the process
// shares it (processNexthops), so two backends never give one id two
// meanings, nor delete a nexthop the other uses. It is filled from the
// kernel on first use (a restarted daemon reuses its nexthops), and its
// counts are recounted from every route dump, which also deletes the
// nexthops of ours that no route uses (left by a crash between the two
// steps, or by a route deleted by hand).

// Our nexthop ids: [nhIDBase, nhIDBase+nhIDSpan), far from the small ids
// people and other software pick.
const (
	nhIDBase = 0x0f1a0000
	nhIDSpan = 1 << 20
)

func ourNexthopID(id uint32) bool { return id >= nhIDBase && id-nhIDBase < nhIDSpan }

// nexthopTable is what this process knows of its nexthops in the kernel.
// Its fields are guarded by mu, which also serialises the kernel calls
// that change them.
type nexthopTable struct {
	mu     sync.Mutex
	loaded bool   // adopted from the kernel
	off    bool   // the kernel takes no nexthop objects: plain routes
	made   bool   // the kernel has taken a nexthop of ours
	cursor uint32 // the next id to try, as an offset from nhIDBase

	ids  map[nhKey]uint32
	keys map[uint32]nhKey
	refs map[uint32]int32        // the routes using each nexthop
	dsts map[netip.Prefix]uint32 // the routes through a nexthop of ours

	conn rtnl
	// add creates a nexthop (conn.nexthopAdd); the fallback test replaces it.
	add func(id uint32, k nhKey, flags int) error
}

// processNexthops is the table of the process's network namespace.
var processNexthops = newNexthopTable()

func newNexthopTable() *nexthopTable {
	t := &nexthopTable{ids: map[nhKey]uint32{}, keys: map[uint32]nhKey{}, refs: map[uint32]int32{},
		dsts: map[netip.Prefix]uint32{}}
	t.add = t.conn.nexthopAdd
	return t
}

// nexthopFor is the nexthop a route goes through: routes of ours that are
// unicast, with a gateway of the destination's family, on a link.
func nexthopFor(r Route) (nhKey, bool) {
	ok := r.Type == Unicast && r.Proto == Proto && r.Metric == 0 && r.LinkIndex > 0 &&
		r.Gw.IsValid() && r.Gw.Is4() == r.Dst.Addr().Is4()
	return newNHKey(r.Gw, r.LinkIndex, r.OnLink), ok
}

// load adopts the nexthops of ours the kernel holds, once, and learns
// whether it has nexthop objects at all (a kernel without them refuses
// the dump).
func (t *nexthopTable) load() error {
	if t.loaded {
		return nil
	}
	nhs, err := dump(t.conn.nexthopDump)
	switch {
	case errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL):
		t.off = true // before 5.3, or a kernel that will not say
	case err != nil:
		return fmt.Errorf("listing nexthops: %w", err)
	}
	for _, nh := range nhs {
		if nh.proto == Proto && nh.gateway && ourNexthopID(nh.id) {
			t.remember(nh.id, nh.key)
			t.cursor = max(t.cursor, (nh.id-nhIDBase+1)%nhIDSpan)
			t.made = true
		}
	}
	t.loaded = true
	return nil
}

// remember records nexthop id for k. Of two for one key (not ours to
// make, but adoptable), new routes take the lower.
func (t *nexthopTable) remember(id uint32, k nhKey) {
	t.keys[id] = k
	if old, ok := t.ids[k]; !ok || id < old {
		t.ids[k] = id
	}
}

// recount sets the use counts from a dump of the routes and deletes the
// nexthops of ours that no route uses.
func (t *nexthopTable) recount(rs []dumpedRoute) {
	clear(t.refs)
	clear(t.dsts)
	for _, r := range rs {
		if _, ours := t.keys[r.nhid]; ours {
			t.refs[r.nhid]++
			t.dsts[r.Dst] = r.nhid
		}
	}
	for id := range t.keys {
		if t.refs[id] == 0 {
			t.drop(id)
		}
	}
}

// acquire returns the nexthop for k, creating it under a free id of ours
// when there is none (fresh).
func (t *nexthopTable) acquire(k nhKey) (id uint32, fresh bool, err error) {
	if id, ok := t.ids[k]; ok {
		return id, false, nil
	}
	for range nhIDSpan {
		id := nhIDBase + t.cursor
		t.cursor = (t.cursor + 1) % nhIDSpan
		if _, taken := t.keys[id]; taken {
			continue
		}
		err := t.add(id, k, unix.NLM_F_EXCL)
		if errors.Is(err, unix.EEXIST) {
			continue // someone else's: never replaced
		}
		if err != nil {
			return 0, false, err
		}
		t.made = true
		t.remember(id, k)
		return id, true, nil
	}
	return 0, false, errors.New("no free nexthop id")
}

// use records that the route to dst goes through nexthop id now.
func (t *nexthopTable) use(dst netip.Prefix, id uint32) {
	old, had := t.dsts[dst]
	if had && old == id {
		return
	}
	t.dsts[dst] = id
	t.refs[id]++
	if had {
		t.unref(old)
	}
}

// forget records that the route to dst goes through no nexthop of ours.
func (t *nexthopTable) forget(dst netip.Prefix) {
	if old, had := t.dsts[dst]; had {
		delete(t.dsts, dst)
		t.unref(old)
	}
}

func (t *nexthopTable) unref(id uint32) {
	if t.refs[id]--; t.refs[id] <= 0 {
		t.drop(id)
	}
}

// drop deletes nexthop id, which no route uses. When the kernel refuses,
// the table keeps it and the next route dump tries again.
func (t *nexthopTable) drop(id uint32) {
	if ignoreGone(t.conn.nexthopDel(id)) != nil {
		return
	}
	k := t.keys[id]
	delete(t.keys, id)
	delete(t.refs, id)
	if t.ids[k] == id {
		delete(t.ids, k)
	}
}

// reset forgets everything: the next use adopts from the kernel again.
func (t *nexthopTable) reset() {
	t.loaded, t.made = false, false
	clear(t.ids)
	clear(t.keys)
	clear(t.refs)
	clear(t.dsts)
}
