package dataplane

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Neigh is a permanent neighbour (ARP or NDP) entry: IP -> MAC on a link.
// Equivalent to: ip neigh replace $IP lladdr $MAC dev $link nud permanent
type Neigh struct {
	LinkIndex int
	IP        netip.Addr
	MAC       net.HardwareAddr
}

func (n Neigh) String() string {
	return fmt.Sprintf("%s lladdr %s dev #%d permanent", n.IP, n.MAC, n.LinkIndex)
}

// FDB is a forwarding entry of a VXLAN device: frames for MAC go to the
// VTEP at Dst. Equivalent to: bridge fdb replace $MAC dev $link dst $Dst self permanent
type FDB struct {
	LinkIndex int
	MAC       net.HardwareAddr
	Dst       netip.Addr
}

func (f FDB) String() string {
	return fmt.Sprintf("%s dev #%d dst %s self permanent", f.MAC, f.LinkIndex, f.Dst)
}

// NeighKernel is the part of the kernel the neighbour and FDB reconciler
// needs. Lists return only the entries of one link.
type NeighKernel interface {
	// NeighList dumps the permanent neighbour entries of the link (both
	// families). Equivalent to: ip neigh show dev $link nud permanent
	NeighList(linkIndex int) ([]Neigh, error)
	NeighReplace(n Neigh) error
	// NeighDelete removes n; an entry that is already gone is not an error.
	NeighDelete(n Neigh) error
	// FDBList dumps the link's forwarding entries that have a destination.
	// Equivalent to: bridge fdb show dev $link
	FDBList(linkIndex int) ([]FDB, error)
	FDBReplace(f FDB) error
	// FDBDelete removes f; an entry that is already gone is not an error.
	FDBDelete(f FDB) error
}

// L2Changes counts what a neighbour/FDB sync did.
type L2Changes struct {
	NeighSet, NeighDeleted, FDBSet, FDBDeleted int
}

// L2Plan is a computed difference, applied in two halves so that a caller
// can put route changes between them: entries are added before the routes
// that use them and removed after those routes are gone.
type L2Plan struct {
	k                  NeighKernel
	neighSet, neighDel []Neigh
	fdbSet, fdbDel     []FDB
}

// PlanL2 diffs the desired neighbour and FDB entries of the links against
// one dump of each link.
func PlanL2(k NeighKernel, links []int, neighs []Neigh, fdbs []FDB) (*L2Plan, error) {
	p := &L2Plan{k: k}
	wantN := map[netip.Addr]Neigh{}
	for _, n := range neighs {
		wantN[n.IP] = n
	}
	wantF := map[string]FDB{}
	for _, f := range fdbs {
		wantF[fdbKey(f.LinkIndex, f.MAC)] = f
	}
	for _, link := range links {
		cur, err := k.NeighList(link)
		if err != nil {
			return nil, fmt.Errorf("listing neighbours of link %d: %w", link, err)
		}
		have := map[netip.Addr]bool{}
		for _, c := range cur {
			w, ok := wantN[c.IP]
			if ok && w.LinkIndex == c.LinkIndex && bytes.Equal(w.MAC, c.MAC) {
				have[c.IP] = true
				continue
			}
			if !ok || w.LinkIndex != c.LinkIndex {
				p.neighDel = append(p.neighDel, c)
			}
		}
		curF, err := k.FDBList(link)
		if err != nil {
			return nil, fmt.Errorf("listing fdb of link %d: %w", link, err)
		}
		haveF := map[string]bool{}
		for _, c := range curF {
			key := fdbKey(c.LinkIndex, c.MAC)
			w, ok := wantF[key]
			if ok && w.Dst == c.Dst {
				haveF[key] = true
				continue
			}
			if !ok {
				p.fdbDel = append(p.fdbDel, c)
			}
		}
		for _, n := range neighs {
			if n.LinkIndex == link && !have[n.IP] {
				p.neighSet = append(p.neighSet, n)
			}
		}
		for _, f := range fdbs {
			if f.LinkIndex == link && !haveF[fdbKey(f.LinkIndex, f.MAC)] {
				p.fdbSet = append(p.fdbSet, f)
			}
		}
	}
	// Deletions in a fixed order (address, MAC) whatever order the kernel
	// (or a fake's map) listed them in: logs and tests stay reproducible.
	sort.Slice(p.neighDel, func(i, j int) bool {
		a, b := p.neighDel[i], p.neighDel[j]
		if a.LinkIndex != b.LinkIndex {
			return a.LinkIndex < b.LinkIndex
		}
		return a.IP.Less(b.IP)
	})
	sort.Slice(p.fdbDel, func(i, j int) bool {
		a, b := p.fdbDel[i], p.fdbDel[j]
		if a.LinkIndex != b.LinkIndex {
			return a.LinkIndex < b.LinkIndex
		}
		return bytes.Compare(a.MAC, b.MAC) < 0
	})
	return p, nil
}

func fdbKey(link int, mac net.HardwareAddr) string { return fmt.Sprintf("%d/%s", link, mac) }

// Add installs missing or changed entries: neighbours first, then FDB.
func (p *L2Plan) Add(ch *L2Changes) error {
	var errs []error
	for _, n := range p.neighSet {
		if err := p.k.NeighReplace(n); err != nil {
			errs = append(errs, fmt.Errorf("ip neigh replace %s: %w", n, err))
			continue
		}
		ch.NeighSet++
	}
	for _, f := range p.fdbSet {
		if err := p.k.FDBReplace(f); err != nil {
			errs = append(errs, fmt.Errorf("bridge fdb replace %s: %w", f, err))
			continue
		}
		ch.FDBSet++
	}
	return errors.Join(errs...)
}

// Delete removes entries nobody wants: FDB first, then neighbours (the
// reverse of Add).
func (p *L2Plan) Delete(ch *L2Changes) error {
	var errs []error
	for _, f := range p.fdbDel {
		if err := p.k.FDBDelete(f); err != nil {
			errs = append(errs, fmt.Errorf("bridge fdb del %s: %w", f, err))
			continue
		}
		ch.FDBDeleted++
	}
	for _, n := range p.neighDel {
		if err := p.k.NeighDelete(n); err != nil {
			errs = append(errs, fmt.Errorf("ip neigh del %s: %w", n, err))
			continue
		}
		ch.NeighDeleted++
	}
	return errors.Join(errs...)
}

// --- real kernel ---

// NeighList implements NeighKernel.
func (n *Netlink) NeighList(linkIndex int) ([]Neigh, error) {
	var out []Neigh
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		ns, err := n.neighDump(linkIndex, fam)
		if err != nil {
			return nil, err
		}
		for _, e := range ns {
			if e.State&netlink.NUD_PERMANENT == 0 || len(e.HardwareAddr) == 0 {
				continue
			}
			ip, ok := netip.AddrFromSlice(e.IP)
			if !ok {
				continue
			}
			if e.IP.To4() != nil {
				ip = ip.Unmap()
			}
			out = append(out, Neigh{LinkIndex: e.LinkIndex, IP: ip, MAC: e.HardwareAddr})
		}
	}
	return out, nil
}

func (n *Netlink) neighDump(linkIndex, family int) ([]netlink.Neigh, error) {
	var ns []netlink.Neigh
	var err error
	for i := 0; i < dumpRetries; i++ {
		ns, err = n.h.NeighList(linkIndex, family)
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	return ns, err
}

// NeighReplace implements NeighKernel.
func (n *Netlink) NeighReplace(e Neigh) error {
	return n.h.NeighSet(&netlink.Neigh{
		LinkIndex: e.LinkIndex, Family: family(e.IP), State: netlink.NUD_PERMANENT,
		Type: unix.RTN_UNICAST, IP: net.IP(e.IP.AsSlice()), HardwareAddr: e.MAC,
	})
}

// NeighDelete implements NeighKernel.
func (n *Netlink) NeighDelete(e Neigh) error {
	err := n.h.NeighDel(&netlink.Neigh{LinkIndex: e.LinkIndex, Family: family(e.IP), IP: net.IP(e.IP.AsSlice()), HardwareAddr: e.MAC})
	return ignoreGone(err)
}

// FDBList implements NeighKernel.
func (n *Netlink) FDBList(linkIndex int) ([]FDB, error) {
	ns, err := n.neighDump(linkIndex, unix.AF_BRIDGE)
	if err != nil {
		return nil, err
	}
	var out []FDB
	for _, e := range ns {
		if e.LinkIndex != linkIndex || e.IP == nil || len(e.HardwareAddr) == 0 {
			continue
		}
		ip, ok := netip.AddrFromSlice(e.IP)
		if !ok {
			continue
		}
		if e.IP.To4() != nil {
			ip = ip.Unmap()
		}
		out = append(out, FDB{LinkIndex: e.LinkIndex, MAC: e.HardwareAddr, Dst: ip})
	}
	return out, nil
}

// FDBReplace implements NeighKernel.
func (n *Netlink) FDBReplace(f FDB) error {
	return n.h.NeighSet(&netlink.Neigh{
		LinkIndex: f.LinkIndex, Family: unix.AF_BRIDGE, State: netlink.NUD_PERMANENT,
		Flags: netlink.NTF_SELF, IP: net.IP(f.Dst.AsSlice()), HardwareAddr: f.MAC,
	})
}

// FDBDelete implements NeighKernel.
func (n *Netlink) FDBDelete(f FDB) error {
	err := n.h.NeighDel(&netlink.Neigh{
		LinkIndex: f.LinkIndex, Family: unix.AF_BRIDGE, State: netlink.NUD_PERMANENT,
		Flags: netlink.NTF_SELF, IP: net.IP(f.Dst.AsSlice()), HardwareAddr: f.MAC,
	})
	return ignoreGone(err)
}

func family(a netip.Addr) int {
	if a.Is4() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

func ignoreGone(err error) error {
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH) || errors.Is(err, unix.ENODEV) {
		return nil
	}
	return err
}

// --- fake ---

// FakeL2 is an in-memory NeighKernel; Dump prints `ip neigh` and
// `bridge fdb` lines, sorted.
type FakeL2 struct {
	Neighs map[netip.Addr]Neigh
	FDBs   map[string]FDB
	Calls  []string // mutating calls in order, for ordering checks
}

// NewFakeL2 returns an empty fake.
func NewFakeL2() *FakeL2 { return &FakeL2{Neighs: map[netip.Addr]Neigh{}, FDBs: map[string]FDB{}} }

func (f *FakeL2) NeighList(link int) ([]Neigh, error) {
	var out []Neigh
	for _, n := range f.Neighs {
		if n.LinkIndex == link {
			out = append(out, n)
		}
	}
	return out, nil
}

func (f *FakeL2) NeighReplace(n Neigh) error {
	f.Calls = append(f.Calls, "neigh replace "+n.IP.String())
	f.Neighs[n.IP] = n
	return nil
}

func (f *FakeL2) NeighDelete(n Neigh) error {
	f.Calls = append(f.Calls, "neigh del "+n.IP.String())
	delete(f.Neighs, n.IP)
	return nil
}

func (f *FakeL2) FDBList(link int) ([]FDB, error) {
	var out []FDB
	for _, e := range f.FDBs {
		if e.LinkIndex == link {
			out = append(out, e)
		}
	}
	return out, nil
}

func (f *FakeL2) FDBReplace(e FDB) error {
	f.Calls = append(f.Calls, "fdb replace "+e.MAC.String())
	f.FDBs[fdbKey(e.LinkIndex, e.MAC)] = e
	return nil
}

func (f *FakeL2) FDBDelete(e FDB) error {
	f.Calls = append(f.Calls, "fdb del "+e.MAC.String())
	delete(f.FDBs, fdbKey(e.LinkIndex, e.MAC))
	return nil
}

// Dump renders the entries as sorted lines.
func (f *FakeL2) Dump() string {
	var lines []string
	for _, n := range f.Neighs {
		lines = append(lines, "neigh "+n.String())
	}
	for _, e := range f.FDBs {
		lines = append(lines, "fdb "+e.String())
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}
