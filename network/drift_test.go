package network

import (
	"net/netip"
	"testing"
	"time"

	"github.com/flanneld-go/flannel/backend/dataplane"
)

// tableJudge judges changes by a desired-state table, as the Reconciler
// does.
type tableJudge struct {
	t     *dataplane.Table
	owned int
}

func (j tableJudge) Explains(c dataplane.Change) bool {
	return j.t.Explains(c, func(l int) bool { return l == j.owned })
}
func (j tableJudge) Owns(l int) bool { return l == j.owned }

func driftBed() (tableJudge, dataplane.Route, func(*dataplane.Route)) {
	const dev = 5
	r := dataplane.Route{Dst: netip.MustParsePrefix("10.244.2.0/24"), Gw: netip.MustParseAddr("10.244.2.0"), LinkIndex: dev, OnLink: true, Proto: dataplane.Proto}
	t := dataplane.NewTable()
	set := func(r *dataplane.Route) {
		if r == nil {
			t.Update(map[string]*dataplane.State{"p": nil})
			return
		}
		t.Update(map[string]*dataplane.State{"p": {Routes: []dataplane.Route{*r}}})
	}
	set(&r)
	return tableJudge{t, dev}, r, set
}

func routeChange(r dataplane.Route, deleted bool) dataplane.Change {
	return dataplane.Change{Kind: dataplane.RouteChanged, Route: r, Deleted: deleted}
}

func TestDriftEchoesAreNotDrift(t *testing.T) {
	j, r, set := driftBed()
	d := newDrift()
	defer d.close()
	now := time.Now()

	// Our own delete and re-add of a route: the deletion's echo is read
	// after the table moved on, the addition's confirms it.
	d.note(j, 2, []dataplane.Change{routeChange(r, true)})
	d.note(j, 2, []dataplane.Change{routeChange(r, false)})
	if v := d.check(j, now); v.full || v.count != 0 {
		t.Errorf("an echo followed by the confirming echo is drift: %+v", v)
	}

	// A peer that left: the echo of its route's deletion comes after the
	// table let go of it.
	set(nil)
	d.note(j, 2, []dataplane.Change{routeChange(r, true)})
	if v := d.check(j, now); v.full {
		t.Errorf("the echo of a departed peer's deletion is drift: %+v", v)
	}

	// A late echo of a route the table no longer wants, explained by the
	// time it settles because the table wants it again.
	d.note(j, 2, []dataplane.Change{routeChange(r, false)})
	set(&r)
	if v := d.check(j, now); v.full {
		t.Errorf("a late echo explained at settle time is drift: %+v", v)
	}
	if d.armed {
		t.Error("the settle timer is armed with nothing left to judge")
	}

	// A peer that came and went before the echoes were read: the echo of
	// the addition is unexplained when read, the deletion's after it tells
	// the entry's state.
	set(nil)
	d.note(j, 2, []dataplane.Change{routeChange(r, false)})
	d.note(j, 2, []dataplane.Change{routeChange(r, true)})
	if v := d.check(j, now); v.full {
		t.Errorf("a route set and deleted by us is drift: %+v", v)
	}
}

func TestDriftHandChanges(t *testing.T) {
	j, r, _ := driftBed()
	d := newDrift()
	defer d.close()
	now := time.Now()

	// A route of ours deleted by hand, then someone else's route to
	// another place (explained, not confirming): still drift.
	d.note(j, 2, []dataplane.Change{routeChange(r, true)})
	other := dataplane.Route{Dst: netip.MustParsePrefix("10.9.0.0/16"), LinkIndex: 2}
	d.note(j, 2, []dataplane.Change{routeChange(other, false)})
	if !d.armed {
		t.Fatal("a deletion of our route did not arm the settle timer")
	}
	v := d.check(j, now)
	if !v.full || v.count != 1 || len(v.changes) != 1 || v.changes[0] != routeChange(r, true).String() {
		t.Fatalf("check = %+v, want a full reconcile for the deleted route", v)
	}

	// Another within driftMinInterval waits and is reported when it is up.
	d.note(j, 2, []dataplane.Change{routeChange(r, true)})
	if v := d.check(j, now.Add(driftMinInterval/2)); v.full {
		t.Errorf("a second repair within %v: %+v", driftMinInterval, v)
	}
	if !d.armed {
		t.Error("the deferred repair is not re-armed")
	}
	if v := d.check(j, now.Add(driftMinInterval)); !v.full {
		t.Errorf("the deferred repair did not come: %+v", v)
	}
}

func TestDriftWholeAndBlackholes(t *testing.T) {
	j, _, _ := driftBed()
	d := newDrift()
	defer d.close()
	d.seed([]int{5}, dataplane.Link{Index: 2, Up: true}, []dataplane.Addr{{LinkIndex: 2, Prefix: netip.MustParsePrefix("192.168.50.11/24")}})
	now := time.Now()
	extAddr := func(p string, deleted bool) dataplane.Change {
		return dataplane.Change{Kind: dataplane.AddrChanged, Deleted: deleted, Addr: dataplane.Addr{LinkIndex: 2, Prefix: netip.MustParsePrefix(p)}}
	}
	link := func(l int, up, deleted bool) dataplane.Change {
		return dataplane.Change{Kind: dataplane.LinkChanged, Link: l, Up: up, Deleted: deleted}
	}
	for _, tc := range []struct {
		name string
		c    dataplane.Change
		full bool
	}{
		{"our device down (or without a carrier)", link(5, false, false), true},
		{"our device down again before it came up", link(5, false, false), false},
		{"our device up", link(5, true, false), false},
		{"our device gone", link(5, false, true), true},
		{"the external interface down", link(2, false, false), true},
		{"the external interface up", link(2, true, false), false},
		{"a pod's veth gone", link(9, false, true), false},
		{"a nexthop of ours", dataplane.Change{Kind: dataplane.NexthopChanged, Deleted: true, Nexthop: 7}, true},
		{"the external interface's address refreshed", extAddr("192.168.50.11/24", false), false},
		{"a new address on the external interface", extAddr("192.168.60.11/24", false), true},
		{"an address of the external interface gone", extAddr("192.168.50.11/24", true), true},
		{"a link-local address of the external interface", extAddr("fe80::2/64", false), false},
	} {
		now = now.Add(driftMinInterval)
		d.note(j, 2, []dataplane.Change{tc.c})
		if v := d.check(j, now); v.full != tc.full || v.lost {
			t.Errorf("%s: full = %v, want %v (%+v)", tc.name, v.full, tc.full, v)
		}
	}
	now = now.Add(driftMinInterval)
	d.note(j, 2, []dataplane.Change{{Kind: dataplane.ChangesLost}})
	if v := d.check(j, now); !v.full || !v.lost {
		t.Errorf("lost notifications: %+v, want a full reconcile for them", v)
	}

	// A device we just made says it is down before we bring it up.
	j.owned = 6
	d.note(j, 2, []dataplane.Change{link(6, false, false)})
	if v := d.check(j, now.Add(driftMinInterval)); v.full {
		t.Errorf("the creation of our device is drift: %+v", v)
	}

	bh := dataplane.Route{Dst: netip.MustParsePrefix("10.244.1.0/24"), Type: dataplane.Blackhole, Proto: dataplane.Proto, Metric: dataplane.BlackholeMetric}
	d.note(j, 2, []dataplane.Change{routeChange(bh, true)})
	if v := d.check(j, now.Add(driftMinInterval)); !v.blackholes || v.full {
		t.Errorf("a blackhole of ours deleted: %+v, want a blackhole sync alone", v)
	}
	bh.Proto = 0
	d.note(j, 2, []dataplane.Change{routeChange(bh, true)})
	if v := d.check(j, now.Add(driftMinInterval)); v.blackholes {
		t.Errorf("someone else's blackhole: %+v", v)
	}
}
