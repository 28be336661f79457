package dataplane

import (
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// NeighList implements Kernel.
func (n *Netlink) NeighList(linkIndex int) ([]Neigh, error) {
	var out []Neigh
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		ns, err := dump(func() (ns []Neigh, err error) {
			err = neighDump(linkIndex, fam, func(e dumpedNeigh) {
				if e.state&netlink.NUD_PERMANENT != 0 && e.isMAC && e.ip.IsValid() {
					ns = append(ns, Neigh{LinkIndex: e.link, IP: e.ip, MAC: e.mac})
				}
			})
			return ns, err
		})
		if err != nil {
			return nil, err
		}
		if out == nil {
			out = ns
		} else {
			out = append(out, ns...)
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
	out, err := dump(func() (out []FDB, err error) {
		err = neighDump(linkIndex, unix.AF_BRIDGE, func(e dumpedNeigh) {
			if e.link == linkIndex && e.ip.IsValid() && e.isMAC {
				out = append(out, FDB{LinkIndex: e.link, MAC: e.mac, Dst: e.ip})
			}
		})
		return out, err
	})
	if err != nil {
		return nil, err
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
