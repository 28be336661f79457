package dataplane

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// State is everything a backend wants in the kernel for a peer set, for
// both address families (each entry's addresses say its family). Entries
// are plain values: two States with the same entries in any order are the
// same kernel state (Equal).
type State struct {
	Routes []Route
	Neighs []Neigh
	FDBs   []FDB
	Addrs  []Addr
}

// Keys of the entries: two entries with the same key cannot both be in
// the kernel (a second one replaces the first).
type (
	neighKey struct {
		link int
		ip   netip.Addr
	}
	// routeKey: a blackhole has a metric of its own, so it and a unicast
	// route to the same destination are both in the kernel.
	routeKey struct {
		dst netip.Prefix
		typ RouteType
	}
	fdbKey struct {
		link int
		mac  MAC
	}
)

// Len is the number of entries.
func (s State) Len() int { return len(s.Routes) + len(s.Neighs) + len(s.FDBs) + len(s.Addrs) }

// Sorted returns a copy with every list in a canonical order.
func (s State) Sorted() State {
	out := State{Routes: slices.Clone(s.Routes), Neighs: slices.Clone(s.Neighs), FDBs: slices.Clone(s.FDBs), Addrs: slices.Clone(s.Addrs)}
	slices.SortFunc(out.Routes, func(a, b Route) int {
		return cmp.Or(a.Dst.Addr().Compare(b.Dst.Addr()), cmp.Compare(a.Dst.Bits(), b.Dst.Bits()), cmp.Compare(a.Type, b.Type),
			cmp.Compare(a.LinkIndex, b.LinkIndex))
	})
	slices.SortFunc(out.Neighs, func(a, b Neigh) int { return cmp.Or(cmp.Compare(a.LinkIndex, b.LinkIndex), a.IP.Compare(b.IP)) })
	slices.SortFunc(out.FDBs, func(a, b FDB) int {
		return cmp.Or(cmp.Compare(a.LinkIndex, b.LinkIndex), slices.Compare(a.MAC[:], b.MAC[:]))
	})
	slices.SortFunc(out.Addrs, func(a, b Addr) int {
		return cmp.Or(cmp.Compare(a.LinkIndex, b.LinkIndex), a.Prefix.Addr().Compare(b.Prefix.Addr()))
	})
	return out
}

// Equal reports whether s and o hold the same entries.
func (s State) Equal(o State) bool {
	a, b := s.Sorted(), o.Sorted()
	return slices.Equal(a.Routes, b.Routes) && slices.Equal(a.Neighs, b.Neighs) &&
		slices.Equal(a.FDBs, b.FDBs) && slices.Equal(a.Addrs, b.Addrs)
}

// String renders the state as sorted lines, one per entry, links as
// indexes: "route ...", "neigh ...", "fdb ...", "addr ...".
func (s State) String() string { return s.format(linkNum) }

func (s State) format(link func(int) string) string {
	var lines []string
	for _, a := range s.Addrs {
		lines = append(lines, "ip addr add "+a.format(link))
	}
	for _, n := range s.Neighs {
		lines = append(lines, "ip neigh "+n.format(link))
	}
	for _, f := range s.FDBs {
		lines = append(lines, "bridge fdb "+f.format(link))
	}
	for _, r := range s.Routes {
		lines = append(lines, "ip route "+r.format(link))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// Merge returns the union of states. An entry present in several with the
// same value is kept once. Entries that collide (the same route
// destination, neighbour address or FDB MAC on a link with different
// values) keep the first state's value, and each collision is reported in
// the error, so a caller can log it and still apply the rest.
func Merge(states ...State) (State, error) {
	var out State
	var errs []error
	routes := map[routeKey]Route{}
	neighs := map[neighKey]Neigh{}
	fdbs := map[fdbKey]FDB{}
	addrs := map[Addr]bool{}
	for _, s := range states {
		for _, r := range s.Routes {
			errs = appendMerged(&out.Routes, routes, routeKey{r.Dst.Masked(), r.Type}, r, errs)
		}
		for _, n := range s.Neighs {
			errs = appendMerged(&out.Neighs, neighs, neighKey{n.LinkIndex, n.IP}, n, errs)
		}
		for _, f := range s.FDBs {
			errs = appendMerged(&out.FDBs, fdbs, fdbKey{f.LinkIndex, f.MAC}, f, errs)
		}
		for _, a := range s.Addrs {
			if !addrs[a] {
				addrs[a] = true
				out.Addrs = append(out.Addrs, a)
			}
		}
	}
	return out, errors.Join(errs...)
}

func appendMerged[K comparable, V interface {
	comparable
	String() string
}](list *[]V, seen map[K]V, k K, v V, errs []error) []error {
	prev, ok := seen[k]
	switch {
	case !ok:
		seen[k] = v
		*list = append(*list, v)
	case prev != v:
		errs = append(errs, fmt.Errorf("conflicting entries %q and %q: keeping the first", prev, v))
	}
	return errs
}

// Nets are the networks a link is directly attached to (its addresses'
// prefixes): the on-link facts a backend's desired state depends on.
type Nets []netip.Prefix

// Contains reports whether ip is on one of the networks, that is,
// reachable without a router.
func (n Nets) Contains(ip netip.Addr) bool {
	for _, p := range n {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// LinkNets reads the networks of a link's addresses.
// Equivalent to: ip addr show dev $link
func LinkNets(k Kernel, linkIndex int) (Nets, error) {
	addrs, err := k.AddrList(linkIndex)
	if err != nil {
		return nil, err
	}
	out := make(Nets, 0, len(addrs))
	for _, a := range addrs {
		out = append(out, a.Prefix.Masked())
	}
	return out, nil
}
