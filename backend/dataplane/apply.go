package dataplane

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
)

// Changes counts what a reconcile changed.
type Changes struct {
	RoutesSet, RoutesDeleted int
	NeighsSet, NeighsDeleted int
	FDBsSet, FDBsDeleted     int
	AddrsAdded, AddrsDeleted int
}

// Any reports whether anything changed.
func (c Changes) Any() bool { return c != Changes{} }

// Add sums two counts.
func (c Changes) Add(o Changes) Changes {
	return Changes{
		c.RoutesSet + o.RoutesSet, c.RoutesDeleted + o.RoutesDeleted,
		c.NeighsSet + o.NeighsSet, c.NeighsDeleted + o.NeighsDeleted,
		c.FDBsSet + o.FDBsSet, c.FDBsDeleted + o.FDBsDeleted,
		c.AddrsAdded + o.AddrsAdded, c.AddrsDeleted + o.AddrsDeleted,
	}
}

// LogAttrs are the counts that are not zero, as slog key-value pairs.
func (c Changes) LogAttrs() []any {
	var out []any
	for _, kv := range []struct {
		k string
		n int
	}{
		{"routes_set", c.RoutesSet}, {"routes_deleted", c.RoutesDeleted},
		{"neigh_set", c.NeighsSet}, {"neigh_deleted", c.NeighsDeleted},
		{"fdb_set", c.FDBsSet}, {"fdb_deleted", c.FDBsDeleted},
		{"addr_added", c.AddrsAdded}, {"addr_deleted", c.AddrsDeleted},
	} {
		if kv.n != 0 {
			out = append(out, kv.k, kv.n)
		}
	}
	return out
}

// Apply makes the kernel hold want. links are the devices whose
// neighbour, FDB and address tables are ours: entries on them that want
// does not hold are deleted (link-local addresses, fe80::/10 and
// 169.254/16, excepted), as are
// unicast routes marked with Proto anywhere in the main table (blackhole
// routes are ApplyBlackholes' business, not a backend's). Entries of want on
// other links are compared and added, but nothing else there is touched.
//
// The difference is computed from one dump of each table and applied in
// the package's order (see the package doc): every addition, L2 before
// routes, then every deletion, routes before L2. Failures are collected;
// Changes counts what succeeded.
func Apply(k Kernel, links []int, want State) (Changes, error) {
	return ApplyBetween(k, links, want, nil)
}

// ApplyBetween is Apply with between called after the additions and
// before the deletions (at once when the kernel cannot be read): the
// moment a table kept outside the kernel (udp's forwarding table) can
// change, so that no packet finds neither the new path nor the old. A
// peer moving from udp to vxlan gets its VXLAN route before udp forgets
// it; one moving the other way is in udp's table before its VXLAN route
// goes.
func ApplyBetween(k Kernel, links []int, want State, between func()) (Changes, error) {
	p, err := plan(k, links, want)
	if err != nil {
		if between != nil {
			between()
		}
		return Changes{}, err
	}
	p.between = between
	return p.run(k)
}

// ApplyAddrs makes the addresses of links match addrs, touching nothing
// else: the address step of Apply, for a device configured before the
// first peer set is known.
func ApplyAddrs(k Kernel, links []int, addrs []Addr) (Changes, error) {
	var p applyPlan
	if err := p.planAddrs(k, links, addrs); err != nil {
		return Changes{}, err
	}
	return p.run(k)
}

// ApplyBlackholes makes the blackhole routes marked with Proto in the
// main table exactly want (blackhole routes, e.g. BlackholeRoutes): the
// missing ones are added, the others of ours deleted, nothing else is
// touched. An empty want removes every blackhole of ours.
func ApplyBlackholes(k Kernel, want []Route) (Changes, error) {
	p := &applyPlan{}
	if err := p.planRoutes(k, Blackhole, want); err != nil {
		return Changes{}, err
	}
	return p.run(k)
}

// applyPlan is a computed difference.
type applyPlan struct {
	// between runs after the additions and before the deletions (see
	// ApplyBetween).
	between            func()
	addrAdd, addrDel   []Addr
	neighSet, neighDel []Neigh
	fdbSet, fdbDel     []FDB
	routeSet, routeDel []Route
}

func plan(k Kernel, links []int, want State) (*applyPlan, error) {
	p := &applyPlan{}
	if err := p.planAddrs(k, links, want.Addrs); err != nil {
		return nil, err
	}
	if err := p.planL2(k, links, want); err != nil {
		return nil, err
	}
	if err := p.planRoutes(k, Unicast, want.Routes); err != nil {
		return nil, err
	}
	return p, nil
}

// planOnLinks diffs want against the current entries of the links:
// wanted entries that are missing or differ are set (the first of several
// under one key wins, as in Merge), and entries on links that nobody wants
// are deleted. An entry whose key is wanted is replaced in place, not
// deleted, unless the kernel holds several under that key (an FDB MAC
// with two remotes): then those that are not exactly wanted go. Links of
// wanted entries outside links are read for the comparison only; nothing
// there is deleted.
func planOnLinks[K comparable, V comparable](links []int, want []V, key func(V) K, link func(V) int,
	list func(int) ([]V, error)) (set, del []V, err error) {
	// wanted is the index in want of the first entry under each key; have
	// and count are by that index (a plan at 10,000 peers keeps one small
	// map, not one per question).
	wanted := make(map[K]int32, len(want))
	for i, w := range want {
		if _, dup := wanted[key(w)]; !dup {
			wanted[key(w)] = int32(i)
		}
	}
	read := slices.Clone(links)
	for _, w := range want {
		if l := link(w); !slices.Contains(read, l) {
			read = append(read, l)
		}
	}
	have := make([]bool, len(want))
	count := make([]int32, len(want)) // under the key, on the link being read
	var nread int
	for _, l := range read {
		cur, err := list(l)
		if err != nil {
			return nil, nil, err
		}
		nread += len(cur)
		for _, c := range cur {
			if i, ok := wanted[key(c)]; ok {
				count[i]++
			}
		}
		owned := slices.Contains(links, l)
		for _, c := range cur {
			i, ok := wanted[key(c)]
			switch {
			case ok && want[i] == c:
				have[i] = true
			case owned && (!ok || count[i] > 1):
				del = append(del, c)
			}
		}
		for _, c := range cur {
			if i, ok := wanted[key(c)]; ok {
				count[i] = 0
			}
		}
	}
	// Room for what is wanted beyond what was read (a hint: all of it on
	// the first pass, rather than a slice grown step by step).
	set = make([]V, 0, max(0, len(want)-nread))
	for i, w := range want { // in want's order: logs and tests stay reproducible
		if j := wanted[key(w)]; !have[j] && (j == int32(i) || want[j] == w) {
			set = append(set, w)
			have[j] = true
		}
	}
	return set, del, nil
}

func (p *applyPlan) planAddrs(k Kernel, links []int, addrs []Addr) error {
	var err error
	p.addrAdd, p.addrDel, err = planOnLinks(links, addrs,
		func(a Addr) Addr { return a }, func(a Addr) int { return a.LinkIndex }, func(l int) ([]Addr, error) {
			cur, err := k.AddrList(l)
			if err != nil {
				return nil, fmt.Errorf("listing addresses of link %d: %w", l, err)
			}
			return slices.DeleteFunc(cur, func(a Addr) bool { return a.Prefix.Addr().IsLinkLocalUnicast() }), nil
		})
	sortAddrs(p.addrDel)
	return err
}

func (p *applyPlan) planL2(k Kernel, links []int, want State) error {
	var err error
	p.neighSet, p.neighDel, err = planOnLinks(links, want.Neighs,
		func(n Neigh) neighKey { return neighKey{n.LinkIndex, n.IP} }, func(n Neigh) int { return n.LinkIndex }, func(l int) ([]Neigh, error) {
			cur, err := k.NeighList(l)
			if err != nil {
				return nil, fmt.Errorf("listing neighbours of link %d: %w", l, err)
			}
			return cur, nil
		})
	if err != nil {
		return err
	}
	p.fdbSet, p.fdbDel, err = planOnLinks(links, want.FDBs,
		func(f FDB) fdbKey { return fdbKey{f.LinkIndex, f.MAC} }, func(f FDB) int { return f.LinkIndex }, func(l int) ([]FDB, error) {
			cur, err := k.FDBList(l)
			if err != nil {
				return nil, fmt.Errorf("listing fdb of link %d: %w", l, err)
			}
			return cur, nil
		})
	// Deletions in a fixed order whatever order the kernel (or a fake's
	// map) listed them in: logs and tests stay reproducible.
	s := State{Neighs: p.neighDel, FDBs: p.fdbDel}.Sorted()
	p.neighDel, p.fdbDel = s.Neighs, s.FDBs
	return err
}

// planRoutes diffs the routes of one type against one dump of the main
// table. Routes are keyed by destination: a wanted destination with a
// different route (ours or not) is replaced; a route of ours (Proto) to a
// destination nobody wants is deleted; routes of others, and routes of
// other types, are left alone.
func (p *applyPlan) planRoutes(k Kernel, typ RouteType, want []Route) error {
	all, err := k.RouteList()
	if err != nil {
		return fmt.Errorf("listing routes: %w", err)
	}
	current := slices.DeleteFunc(all, func(r Route) bool { return r.Type != typ })
	// The routes to each destination: the first in dsts, the others
	// chained through next (a destination rarely has two).
	type dstInfo struct {
		first  int32 // in current; -1 for none
		wanted bool
	}
	dsts := make(map[netip.Prefix]dstInfo, max(len(current), len(want)))
	next := make([]int32, len(current))
	for i := len(current) - 1; i >= 0; i-- {
		d, ok := dsts[current[i].Dst]
		next[i] = -1
		if ok {
			next[i] = d.first
		}
		dsts[current[i].Dst] = dstInfo{first: int32(i)}
	}
	p.routeSet = make([]Route, 0, max(0, len(want)-len(current))) // a hint, as in planOnLinks
	for _, w := range want {
		d, ok := dsts[w.Dst]
		if w.Type != typ || d.wanted {
			continue
		}
		if !ok {
			d.first = -1
		}
		d.wanted = true
		dsts[w.Dst] = d
		found := false
		for i := d.first; i >= 0 && !found; i = next[i] {
			found = current[i] == w
		}
		if !found {
			p.routeSet = append(p.routeSet, w)
		}
	}
	for _, c := range current {
		if c.Proto == Proto && (!dsts[c.Dst].wanted || typ == Blackhole && !slices.Contains(want, c)) {
			p.routeDel = append(p.routeDel, c)
		}
	}
	p.routeDel = State{Routes: p.routeDel}.Sorted().Routes
	return nil
}

func sortAddrs(a []Addr) { copy(a, State{Addrs: a}.Sorted().Addrs) }

// run applies the plan: additions (addresses, neighbours, FDB, routes),
// then deletions (routes, FDB, neighbours, addresses).
func (p *applyPlan) run(k Kernel) (Changes, error) {
	var ch Changes
	var errs []error
	each(p.addrAdd, k.AddrAdd, "ip addr add", &ch.AddrsAdded, &errs)
	each(p.neighSet, k.NeighReplace, "ip neigh replace", &ch.NeighsSet, &errs)
	each(p.fdbSet, k.FDBReplace, "bridge fdb replace", &ch.FDBsSet, &errs)
	each(p.routeSet, k.RouteReplace, "ip route replace", &ch.RoutesSet, &errs)
	if p.between != nil {
		p.between()
	}
	each(p.routeDel, k.RouteDelete, "ip route del", &ch.RoutesDeleted, &errs)
	each(p.fdbDel, k.FDBDelete, "bridge fdb del", &ch.FDBsDeleted, &errs)
	each(p.neighDel, k.NeighDelete, "ip neigh del", &ch.NeighsDeleted, &errs)
	each(p.addrDel, k.AddrDelete, "ip addr del", &ch.AddrsDeleted, &errs)
	return ch, errors.Join(errs...)
}

// each runs op on every entry, counting the successes in n and
// collecting the failures as "<what> <entry>: <error>". The entry is
// formatted only when it fails: 30,000 operations succeed when 10,000
// vxlan peers are programmed.
func each[V fmt.Stringer](vs []V, op func(V) error, what string, n *int, errs *[]error) {
	for _, v := range vs {
		if err := op(v); err != nil {
			*errs = append(*errs, fmt.Errorf("%s %s: %w", what, v.String(), err))
			continue
		}
		*n++
	}
}
