package dataplane

import (
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// NeighList implements Kernel.
func (n *Netlink) NeighList(linkIndex int) ([]Neigh, error) {
	var out []Neigh
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		ns, err := dump(func() ([]netlink.Neigh, error) { return n.h.NeighList(linkIndex, fam) })
		if err != nil {
			return nil, err
		}
		for _, e := range ns {
			if e.State&netlink.NUD_PERMANENT == 0 || len(e.HardwareAddr) != 6 {
				continue
			}
			if ip, ok := addrFromIP(e.IP); ok {
				out = append(out, Neigh{LinkIndex: e.LinkIndex, IP: ip, MAC: MAC(e.HardwareAddr)})
			}
		}
	}
	return out, nil
}

// NeighReplace implements Kernel.
func (n *Netlink) NeighReplace(e Neigh) error {
	return n.h.NeighSet(&netlink.Neigh{
		LinkIndex: e.LinkIndex, Family: family(e.IP), State: netlink.NUD_PERMANENT,
		Type: unix.RTN_UNICAST, IP: e.IP.AsSlice(), HardwareAddr: e.MAC.HardwareAddr(),
	})
}

// NeighDelete implements Kernel.
func (n *Netlink) NeighDelete(e Neigh) error {
	return ignoreGone(n.h.NeighDel(&netlink.Neigh{LinkIndex: e.LinkIndex, Family: family(e.IP), IP: e.IP.AsSlice(), HardwareAddr: e.MAC.HardwareAddr()}))
}

// FDBList implements Kernel.
func (n *Netlink) FDBList(linkIndex int) ([]FDB, error) {
	ns, err := dump(func() ([]netlink.Neigh, error) { return n.h.NeighList(linkIndex, unix.AF_BRIDGE) })
	if err != nil {
		return nil, err
	}
	var out []FDB
	for _, e := range ns {
		if e.LinkIndex != linkIndex || e.IP == nil || len(e.HardwareAddr) != 6 {
			continue
		}
		if ip, ok := addrFromIP(e.IP); ok {
			out = append(out, FDB{LinkIndex: e.LinkIndex, MAC: MAC(e.HardwareAddr), Dst: ip})
		}
	}
	return out, nil
}

func toNetlinkFDB(f FDB) *netlink.Neigh {
	return &netlink.Neigh{
		LinkIndex: f.LinkIndex, Family: unix.AF_BRIDGE, State: netlink.NUD_PERMANENT,
		Flags: netlink.NTF_SELF, IP: f.Dst.AsSlice(), HardwareAddr: f.MAC.HardwareAddr(),
	}
}

// FDBReplace implements Kernel.
func (n *Netlink) FDBReplace(f FDB) error { return n.h.NeighSet(toNetlinkFDB(f)) }

// FDBDelete implements Kernel.
func (n *Netlink) FDBDelete(f FDB) error { return ignoreGone(n.h.NeighDel(toNetlinkFDB(f))) }
