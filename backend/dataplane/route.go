package dataplane

import (
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strings"
)

// Proto marks the routes this daemon installs (the route's "proto" field,
// shown by `ip route` as "proto 98"). Reconcilers delete only routes with
// this mark, so they never touch routes someone else owns, and a backend
// switch can find and remove the routes of the previous backend.
const Proto = 98

// Route is a unicast route in the main table.
type Route struct {
	Dst       netip.Prefix
	Gw        netip.Addr // invalid for a route straight onto the link
	LinkIndex int
	OnLink    bool // the gateway is on the link even without a matching address
	Proto     int
}

// String renders the route like `ip route`, with the link as an index.
func (r Route) String() string {
	var b strings.Builder
	b.WriteString(r.Dst.String())
	if r.Gw.IsValid() {
		b.WriteString(" via " + r.Gw.String())
	}
	fmt.Fprintf(&b, " dev #%d", r.LinkIndex)
	if r.OnLink {
		b.WriteString(" onlink")
	}
	if r.Proto != 0 {
		fmt.Fprintf(&b, " proto %d", r.Proto)
	}
	return b.String()
}

// same reports whether the kernel route cur already is the desired route d.
func (d Route) same(cur Route) bool {
	return d.Dst == cur.Dst && d.Gw == cur.Gw && d.LinkIndex == cur.LinkIndex && d.OnLink == cur.OnLink && d.Proto == cur.Proto
}

// RouteKernel is the part of the kernel the route reconciler needs.
type RouteKernel interface {
	// RouteList dumps the main table's unicast routes of both families.
	RouteList() ([]Route, error)
	// RouteReplace installs r, replacing a route to the same destination.
	// Equivalent to: ip route replace $r
	RouteReplace(r Route) error
	// RouteDelete removes r; a route that is already gone is not an error.
	// Equivalent to: ip route del $r
	RouteDelete(r Route) error
}

// RouteChanges counts what a sync did.
type RouteChanges struct {
	Replaced, Deleted int
}

// SyncRoutes makes the kernel's routes match desired: every desired route is
// installed (replacing whatever route to that destination differs), then
// every route marked with Proto whose destination is not desired is deleted.
// Additions come before deletions so a peer that moves never loses its
// route. The diff is computed from one dump, so the cost is one dump plus
// one call per actual change. Every failure is collected; one bad route
// does not stop the others.
func SyncRoutes(k RouteKernel, desired []Route) (RouteChanges, error) {
	var ch RouteChanges
	current, err := k.RouteList()
	if err != nil {
		return ch, fmt.Errorf("listing routes: %w", err)
	}
	byDst := make(map[netip.Prefix][]Route, len(current))
	for _, r := range current {
		byDst[r.Dst] = append(byDst[r.Dst], r)
	}
	want := make(map[netip.Prefix]bool, len(desired))
	var errs []error
	for _, d := range desired {
		want[d.Dst] = true
		ok := false
		for _, c := range byDst[d.Dst] {
			if d.same(c) {
				ok = true
				break
			}
		}
		if ok {
			continue
		}
		if err := k.RouteReplace(d); err != nil {
			errs = append(errs, fmt.Errorf("ip route replace %s: %w", d, err))
			continue
		}
		ch.Replaced++
	}
	for _, c := range current {
		if c.Proto != Proto || want[c.Dst] {
			continue
		}
		if err := k.RouteDelete(c); err != nil {
			errs = append(errs, fmt.Errorf("ip route del %s: %w", c, err))
			continue
		}
		ch.Deleted++
	}
	return ch, errors.Join(errs...)
}

// FakeKernel is an in-memory RouteKernel for tests. Dump prints its state
// as `ip route` lines, sorted, for golden comparisons.
type FakeKernel struct {
	Routes map[netip.Prefix]Route
	// Calls counts mutating calls, to check that a sync in the desired
	// state changes nothing.
	Calls int
	// Fail makes the next mutating calls on these destinations fail.
	Fail map[netip.Prefix]error
}

// NewFakeKernel returns an empty fake.
func NewFakeKernel() *FakeKernel {
	return &FakeKernel{Routes: map[netip.Prefix]Route{}, Fail: map[netip.Prefix]error{}}
}

// RouteList implements RouteKernel.
func (f *FakeKernel) RouteList() ([]Route, error) {
	out := make([]Route, 0, len(f.Routes))
	for _, r := range f.Routes {
		out = append(out, r)
	}
	return out, nil
}

// RouteReplace implements RouteKernel.
func (f *FakeKernel) RouteReplace(r Route) error {
	f.Calls++
	if err := f.Fail[r.Dst]; err != nil {
		return err
	}
	f.Routes[r.Dst] = r
	return nil
}

// RouteDelete implements RouteKernel.
func (f *FakeKernel) RouteDelete(r Route) error {
	f.Calls++
	if err := f.Fail[r.Dst]; err != nil {
		return err
	}
	delete(f.Routes, r.Dst)
	return nil
}

// Dump renders the routes as sorted `ip route` lines.
func (f *FakeKernel) Dump() string {
	lines := make([]string, 0, len(f.Routes))
	for _, r := range f.Routes {
		lines = append(lines, r.String())
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}
