package vxlan

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// kernelDefaultPort is what the kernel uses when no port is given.
const kernelDefaultPort = 8472

// deviceSpec is what a VXLAN device must look like.
type deviceSpec struct {
	name     string
	vni      int
	port     int // 0: kernel default
	local    netip.Addr
	parent   int // external interface index
	mtu      int
	mac      net.HardwareAddr
	gbp      bool
	learning bool
}

// stableMAC derives the device's MAC from the host's public address and
// the VNI: the same across restarts and even across a re-created device,
// so the FDB and neighbour entries peers hold for us stay valid. It is a
// locally administered unicast address.
func stableMAC(public netip.Addr, vni int, family string) net.HardwareAddr {
	sum := sha256.Sum256([]byte(fmt.Sprintf("flanneld-vxlan/%s/%s/%d", family, public, vni)))
	mac := net.HardwareAddr(sum[:6])
	mac[0] = (mac[0] | 0x02) &^ 0x01
	return mac
}

// incompatible says why an existing link cannot serve as spec ("" if it can).
func (s deviceSpec) incompatible(l netlink.Link) string {
	v, ok := l.(*netlink.Vxlan)
	if !ok {
		return fmt.Sprintf("it is a %s device, not vxlan", l.Type())
	}
	var why []string
	if v.VxlanId != s.vni {
		why = append(why, fmt.Sprintf("VNI %d, want %d", v.VxlanId, s.vni))
	}
	want := s.port
	if want == 0 {
		want = kernelDefaultPort
	}
	if v.Port != want {
		why = append(why, fmt.Sprintf("port %d, want %d", v.Port, want))
	}
	if a, _ := netip.AddrFromSlice(v.SrcAddr); a.Unmap() != s.local {
		why = append(why, fmt.Sprintf("local address %v, want %s", v.SrcAddr, s.local))
	}
	if v.VtepDevIndex != s.parent {
		why = append(why, fmt.Sprintf("underlying device index %d, want %d", v.VtepDevIndex, s.parent))
	}
	if v.GBP != s.gbp {
		why = append(why, fmt.Sprintf("GBP %t, want %t", v.GBP, s.gbp))
	}
	if v.Learning != s.learning {
		why = append(why, fmt.Sprintf("learning %t, want %t", v.Learning, s.learning))
	}
	return strings.Join(why, ", ")
}

// ensureDevice creates the device, or adopts an existing compatible one as
// it is (same MAC, no flap); an incompatible one is deleted and re-created,
// with a log line saying what differed. The MAC is set before the link goes
// up and checked after. Equivalent to:
//
//	ip link add flannel.1 address $MAC mtu $MTU type vxlan id 1 local $IP dev eth0 dstport 8472 nolearning
//	ip link set flannel.1 up
func ensureDevice(h *netlink.Handle, s deviceSpec, log *slog.Logger) (netlink.Link, error) {
	return ensureDeviceOnce(h, s, log, true)
}

// ensureDeviceOnce is ensureDevice; retry says whether a creation refused
// with EEXIST may start over once (a device of our name appeared between
// the lookup and the creation).
func ensureDeviceOnce(h *netlink.Handle, s deviceSpec, log *slog.Logger, retry bool) (netlink.Link, error) {
	existing, err := h.LinkByName(s.name)
	switch {
	case err == nil:
		why := s.incompatible(existing)
		if why == "" {
			return finishDevice(h, existing, s, log)
		}
		log.Warn("re-creating VXLAN device: the existing one is incompatible", "device", s.name, "differs", why)
		if err := h.LinkDel(existing); err != nil {
			return nil, fmt.Errorf("deleting incompatible %s: %w", s.name, err)
		}
	case !isNotFound(err):
		return nil, fmt.Errorf("looking up %s: %w", s.name, err)
	}
	v := &netlink.Vxlan{
		LinkAttrs:    netlink.LinkAttrs{Name: s.name, MTU: s.mtu, HardwareAddr: s.mac},
		VxlanId:      s.vni,
		VtepDevIndex: s.parent,
		SrcAddr:      net.IP(s.local.AsSlice()),
		Port:         s.port,
		Learning:     s.learning,
		GBP:          s.gbp,
	}
	if err := h.LinkAdd(v); err != nil {
		if !errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("creating VXLAN device %s (VNI %d on %s): %w", s.name, s.vni, s.local, err)
		}
		// Either someone created our device between the lookup and now
		// (adopt it, or re-create it, once), or another VXLAN device
		// holds our VNI and port, which the kernel allows only once per
		// address family.
		if _, lerr := h.LinkByName(s.name); lerr == nil && retry {
			return ensureDeviceOnce(h, s, log, false)
		}
		return nil, s.heldError(h, err)
	}
	link, err := h.LinkByName(s.name)
	if err != nil {
		return nil, fmt.Errorf("reading back %s: %w", s.name, err)
	}
	log.Info("created VXLAN device", "device", s.name, "vni", s.vni, "local", s.local, "mac", s.mac.String(), "mtu", s.mtu)
	return finishDevice(h, link, s, log)
}

// finishDevice sets MTU and MAC if they drifted, turns off IPv6 router
// advertisements, brings the link up and verifies the MAC.
func finishDevice(h *netlink.Handle, link netlink.Link, s deviceSpec, log *slog.Logger) (netlink.Link, error) {
	a := link.Attrs()
	if a.MTU != s.mtu {
		if err := h.LinkSetMTU(link, s.mtu); err != nil {
			return nil, fmt.Errorf("setting MTU %d on %s: %w", s.mtu, s.name, err)
		}
	}
	if a.HardwareAddr.String() != s.mac.String() {
		// The MAC can only change while the link is down.
		if a.Flags&net.FlagUp != 0 {
			if err := h.LinkSetDown(link); err != nil {
				return nil, err
			}
		}
		if err := h.LinkSetHardwareAddr(link, s.mac); err != nil {
			return nil, fmt.Errorf("setting MAC %s on %s: %w", s.mac, s.name, err)
		}
		log.Info("set the VXLAN device's stable MAC", "device", s.name, "old", a.HardwareAddr.String(), "mac", s.mac.String())
	}
	// The device carries no IPv6 router advertisements; accepting them
	// could add routes nobody asked for. Best effort: IPv6 may be off.
	_ = os.WriteFile(filepath.Join("/proc/sys/net/ipv6/conf", s.name, "accept_ra"), []byte("0"), 0o644)
	if err := h.LinkSetUp(link); err != nil {
		return nil, fmt.Errorf("bringing %s up: %w", s.name, err)
	}
	link, err := h.LinkByName(s.name)
	if err != nil {
		return nil, err
	}
	if got := link.Attrs().HardwareAddr.String(); got != s.mac.String() {
		return nil, fmt.Errorf("%s has MAC %s after bringing it up, want %s", s.name, got, s.mac)
	}
	return link, nil
}

// heldError explains a creation refused with EEXIST when no device of our
// name is in the way: it names the VXLAN device that holds our VNI and
// port, and what to do.
func (s deviceSpec) heldError(h *netlink.Handle, err error) error {
	port := s.port
	if port == 0 {
		port = kernelDefaultPort
	}
	links, lerr := h.LinkList()
	if lerr == nil {
		for _, l := range links {
			v, ok := l.(*netlink.Vxlan)
			if !ok || v.Name == s.name || v.VxlanId != s.vni || v.Port != port || isV6(v) != s.local.Is6() {
				continue
			}
			return fmt.Errorf("cannot create VXLAN device %s: the VXLAN device %s (VNI %d, port %d) holds that VNI and port, "+
				"and the kernel allows one such device per address family; delete it (ip link del %s) if it is left over, "+
				"or give this network another Backend.VNI or Backend.Port in the net-conf: %w", s.name, v.Name, v.VxlanId, v.Port, v.Name, err)
		}
	}
	return fmt.Errorf("cannot create VXLAN device %s: the kernel says a VXLAN device with VNI %d and port %d exists already, "+
		"but none of this namespace's devices is it (ip -d link show type vxlan); give this network another Backend.VNI or Backend.Port in the net-conf: %w",
		s.name, s.vni, port, err)
}

// isV6 reports whether a VXLAN device runs over IPv6 (local or group
// address IPv6).
func isV6(v *netlink.Vxlan) bool {
	for _, ip := range []net.IP{v.SrcAddr, v.Group} {
		if len(ip) > 0 && ip.To4() == nil {
			return true
		}
	}
	return false
}

func isNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, unix.ENODEV)
}
