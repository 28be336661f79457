package dataplane

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Fake is an in-memory Kernel for tests. Dump prints its state as sorted
// `ip addr`, `ip neigh`, `bridge fdb` and `ip route` lines with device
// names, for golden comparisons; Calls records every mutating call in
// order, for ordering checks. It is not safe for concurrent use.
type Fake struct {
	Links  map[int]*Link
	Routes map[netip.Prefix]Route // unicast routes
	// Blackholes are the blackhole routes, apart, keyed like the kernel
	// keys them (destination and metric): the kernel keeps one beside a
	// unicast route to the same destination, which has another metric.
	Blackholes map[blackholeKey]Route
	Neighs     map[neighKey]Neigh
	FDBs       map[fdbKey]FDB
	Addrs      map[Addr]bool
	Sysctls    map[string]string
	Calls      []string
	// Fail makes mutating calls whose rendered line contains a key fail
	// with the value (e.g. "10.244.2.0/24" → an error).
	Fail map[string]error
}

var _ Kernel = (*Fake)(nil)

type blackholeKey struct {
	dst    netip.Prefix
	metric int
}

var errFakeNoLink = errors.New("link not found")

// NewFake returns an empty fake kernel.
func NewFake() *Fake {
	return &Fake{Links: map[int]*Link{}, Routes: map[netip.Prefix]Route{}, Blackholes: map[blackholeKey]Route{}, Neighs: map[neighKey]Neigh{},
		FDBs: map[fdbKey]FDB{}, Addrs: map[Addr]bool{}, Sysctls: map[string]string{}, Fail: map[string]error{}}
}

// AddLink adds a device (up, MTU 1500 unless set) and returns its index.
func (f *Fake) AddLink(l Link) int {
	if l.Index == 0 {
		l.Index = len(f.Links) + 2 // 1 is lo
	}
	if l.MTU == 0 {
		l.MTU = 1500
	}
	f.Links[l.Index] = &l
	return l.Index
}

// DelLink removes a device and everything on it, as the kernel does.
func (f *Fake) DelLink(index int) {
	delete(f.Links, index)
	for k, r := range f.Routes {
		if r.LinkIndex == index {
			delete(f.Routes, k)
		}
	}
	for k := range f.Neighs {
		if k.link == index {
			delete(f.Neighs, k)
		}
	}
	for k := range f.FDBs {
		if k.link == index {
			delete(f.FDBs, k)
		}
	}
	for a := range f.Addrs {
		if a.LinkIndex == index {
			delete(f.Addrs, a)
		}
	}
}

func (f *Fake) name(i int) string {
	if l, ok := f.Links[i]; ok {
		return l.Name
	}
	return linkNum(i)
}

// call records a mutating call and returns the failure set up for it.
func (f *Fake) call(line string) error {
	f.Calls = append(f.Calls, line)
	for k, err := range f.Fail {
		if strings.Contains(line, k) {
			return err
		}
	}
	return nil
}

func (f *Fake) hasLink(i int) error {
	if _, ok := f.Links[i]; !ok {
		return fmt.Errorf("link %d: %w", i, errFakeNoLink)
	}
	return nil
}

// State returns everything the fake holds (routes of every proto).
func (f *Fake) State() State {
	var s State
	for _, r := range f.Routes {
		s.Routes = append(s.Routes, r)
	}
	for _, r := range f.Blackholes {
		s.Routes = append(s.Routes, r)
	}
	for _, n := range f.Neighs {
		s.Neighs = append(s.Neighs, n)
	}
	for _, e := range f.FDBs {
		s.FDBs = append(s.FDBs, e)
	}
	for a := range f.Addrs {
		s.Addrs = append(s.Addrs, a)
	}
	return s.Sorted()
}

// Dump renders the state as sorted lines with device names.
func (f *Fake) Dump() string { return f.State().format(f.name) }

// RouteList implements Kernel.
func (f *Fake) RouteList() ([]Route, error) { return f.State().Routes, nil }

// RouteReplace implements Kernel.
func (f *Fake) RouteReplace(r Route) error {
	if err := f.call("ip route replace " + r.format(f.name)); err != nil {
		return err
	}
	if r.Type == Blackhole {
		f.Blackholes[blackholeKey{r.Dst, r.Metric}] = r
		return nil
	}
	if err := f.hasLink(r.LinkIndex); err != nil {
		return err
	}
	f.Routes[r.Dst] = r
	return nil
}

// RouteDelete implements Kernel.
func (f *Fake) RouteDelete(r Route) error {
	if err := f.call("ip route del " + r.format(f.name)); err != nil {
		return err
	}
	if r.Type == Blackhole {
		delete(f.Blackholes, blackholeKey{r.Dst, r.Metric})
		return nil
	}
	delete(f.Routes, r.Dst)
	return nil
}

// NeighList implements Kernel.
func (f *Fake) NeighList(link int) ([]Neigh, error) {
	if err := f.hasLink(link); err != nil {
		return nil, err
	}
	return slices.DeleteFunc(f.State().Neighs, func(n Neigh) bool { return n.LinkIndex != link }), nil
}

// NeighReplace implements Kernel.
func (f *Fake) NeighReplace(n Neigh) error {
	if err := f.call("ip neigh replace " + n.format(f.name)); err != nil {
		return err
	}
	if err := f.hasLink(n.LinkIndex); err != nil {
		return err
	}
	f.Neighs[neighKey{n.LinkIndex, n.IP}] = n
	return nil
}

// NeighDelete implements Kernel.
func (f *Fake) NeighDelete(n Neigh) error {
	if err := f.call("ip neigh del " + n.format(f.name)); err != nil {
		return err
	}
	delete(f.Neighs, neighKey{n.LinkIndex, n.IP})
	return nil
}

// FDBList implements Kernel.
func (f *Fake) FDBList(link int) ([]FDB, error) {
	if err := f.hasLink(link); err != nil {
		return nil, err
	}
	return slices.DeleteFunc(f.State().FDBs, func(e FDB) bool { return e.LinkIndex != link }), nil
}

// FDBReplace implements Kernel.
func (f *Fake) FDBReplace(e FDB) error {
	if err := f.call("bridge fdb replace " + e.format(f.name)); err != nil {
		return err
	}
	if err := f.hasLink(e.LinkIndex); err != nil {
		return err
	}
	f.FDBs[fdbKey{e.LinkIndex, e.MAC}] = e
	return nil
}

// FDBDelete implements Kernel.
func (f *Fake) FDBDelete(e FDB) error {
	if err := f.call("bridge fdb del " + e.format(f.name)); err != nil {
		return err
	}
	delete(f.FDBs, fdbKey{e.LinkIndex, e.MAC})
	return nil
}

// AddrList implements Kernel.
func (f *Fake) AddrList(link int) ([]Addr, error) {
	if err := f.hasLink(link); err != nil {
		return nil, err
	}
	return slices.DeleteFunc(f.State().Addrs, func(a Addr) bool { return a.LinkIndex != link }), nil
}

// AddrAdd implements Kernel.
func (f *Fake) AddrAdd(a Addr) error {
	if err := f.call("ip addr add " + a.format(f.name)); err != nil {
		return err
	}
	if err := f.hasLink(a.LinkIndex); err != nil {
		return err
	}
	f.Addrs[a] = true
	return nil
}

// AddrDelete implements Kernel.
func (f *Fake) AddrDelete(a Addr) error {
	if err := f.call("ip addr del " + a.format(f.name)); err != nil {
		return err
	}
	delete(f.Addrs, a)
	return nil
}

// LinkByName implements Kernel.
func (f *Fake) LinkByName(name string) (Link, error) {
	for _, l := range f.Links {
		if l.Name == name {
			return *l, nil
		}
	}
	return Link{}, fmt.Errorf("%s: %w", name, errFakeNoLink)
}

// LinkSetMTU implements Kernel.
func (f *Fake) LinkSetMTU(i, mtu int) error {
	if err := f.call(fmt.Sprintf("ip link set %s mtu %d", f.name(i), mtu)); err != nil {
		return err
	}
	if err := f.hasLink(i); err != nil {
		return err
	}
	f.Links[i].MTU = mtu
	return nil
}

// LinkSetUp implements Kernel.
func (f *Fake) LinkSetUp(i int) error {
	if err := f.call(fmt.Sprintf("ip link set %s up", f.name(i))); err != nil {
		return err
	}
	if err := f.hasLink(i); err != nil {
		return err
	}
	f.Links[i].Up = true
	return nil
}

// Sysctl implements Kernel.
func (f *Fake) Sysctl(name, value string) error {
	if err := f.call("sysctl -w " + strings.ReplaceAll(name, "/", ".") + "=" + value); err != nil {
		return err
	}
	f.Sysctls[name] = value
	return nil
}
