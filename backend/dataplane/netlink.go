package dataplane

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// Netlink is the real kernel of the process's network namespace, through
// one netlink handle. It is safe for use by several goroutines, and every
// Netlink of the process shares the one table of our nexthop objects (see
// nexthop_table.go).
type Netlink struct {
	h  *netlink.Handle
	nh *nexthopTable
}

var _ Kernel = (*Netlink)(nil)

// NewNetlink wraps h, which must be nil (a handle for the process's network
// namespace) or such a handle: the nexthop messages the library does not
// have go through sockets of the calling thread's namespace.
func NewNetlink(h *netlink.Handle) *Netlink {
	if h == nil {
		h = processHandle()
	}
	return &Netlink{h: h, nh: processNexthops}
}

// processHandle is the handle of the process's network namespace, opened
// on first use and kept. The library's zero Handle opens, binds and
// closes a socket for every request: 20,000 of them, and their garbage,
// when 10,000 vxlan peers are programmed. Its requests get the zero
// Handle's timeout.
var processHandle = sync.OnceValue(func() *netlink.Handle {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return &netlink.Handle{}
	}
	if err := h.SetSocketTimeout(time.Duration(nl.SocketTimeoutTv.Nano())); err != nil {
		h.Close()
		return &netlink.Handle{}
	}
	return h
})

// Handle is the netlink handle, for device code that needs calls beyond
// Kernel (creating a VXLAN device with its attributes).
func (n *Netlink) Handle() *netlink.Handle { return n.h }

// dumpRetries bounds retries of dumps the kernel interrupted because the
// table changed under them (netlink.ErrDumpInterrupted).
const dumpRetries = 5

// dump runs a netlink dump, again when the kernel interrupted it: the one
// place that handles ErrDumpInterrupted.
func dump[T any](f func() ([]T, error)) ([]T, error) {
	var out []T
	var err error
	for range dumpRetries {
		out, err = f()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	return out, err
}

// ignoreGone makes deleting something that is already gone a success.
func ignoreGone(err error) error {
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.EADDRNOTAVAIL) {
		return nil
	}
	return err
}

// IsNotFound reports whether err says a device does not exist.
func IsNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, unix.ENODEV) || errors.Is(err, errFakeNoLink)
}

// --- the one place where net.IP and netip meet ---

// addrFromIP converts a netlink address; IPv4 comes back unmapped.
func addrFromIP(ip net.IP) (netip.Addr, bool) {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Addr{}, false
	}
	if ip.To4() != nil {
		a = a.Unmap()
	}
	return a, true
}

func prefixFromIPNet(n *net.IPNet) (netip.Prefix, bool) {
	a, ok := addrFromIP(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a, ones), true
}

func ipNetFromPrefix(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func family(a netip.Addr) int {
	if a.Is4() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

// --- links, addresses, sysctls ---

// LinkByName implements Kernel.
func (n *Netlink) LinkByName(name string) (Link, error) {
	l, err := n.h.LinkByName(name)
	if err != nil {
		return Link{}, err
	}
	a := l.Attrs()
	out := Link{Index: a.Index, Name: a.Name, Type: l.Type(), MTU: a.MTU, Up: a.Flags&net.FlagUp != 0}
	if len(a.HardwareAddr) == 6 {
		out.MAC = MAC(a.HardwareAddr)
	}
	return out, nil
}

// LinkSetMTU implements Kernel.
func (n *Netlink) LinkSetMTU(linkIndex, mtu int) error {
	return n.h.LinkSetMTU(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Index: linkIndex}}, mtu)
}

// LinkSetUp implements Kernel.
func (n *Netlink) LinkSetUp(linkIndex int) error {
	return n.h.LinkSetUp(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Index: linkIndex}})
}

// AddrList implements Kernel. A link that does not exist is an error.
func (n *Netlink) AddrList(linkIndex int) ([]Addr, error) {
	link, err := n.h.LinkByIndex(linkIndex)
	if err != nil {
		return nil, fmt.Errorf("looking up link %d: %w", linkIndex, err)
	}
	as, err := dump(func() ([]netlink.Addr, error) { return n.h.AddrList(link, netlink.FAMILY_ALL) })
	if err != nil {
		return nil, fmt.Errorf("listing addresses of %s: %w", link.Attrs().Name, err)
	}
	out := make([]Addr, 0, len(as))
	for _, a := range as {
		if p, ok := prefixFromIPNet(a.IPNet); ok {
			out = append(out, Addr{LinkIndex: linkIndex, Prefix: p})
		}
	}
	return out, nil
}

func toNetlinkAddr(a Addr) *netlink.Addr {
	na := &netlink.Addr{IPNet: ipNetFromPrefix(a.Prefix)}
	if a.Prefix.Addr().Is6() {
		na.Flags = unix.IFA_F_NODAD
	}
	return na
}

// AddrAdd implements Kernel.
func (n *Netlink) AddrAdd(a Addr) error {
	err := n.h.AddrAdd(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Index: a.LinkIndex}}, toNetlinkAddr(a))
	if errors.Is(err, unix.EEXIST) {
		return nil
	}
	return err
}

// AddrDelete implements Kernel.
func (n *Netlink) AddrDelete(a Addr) error {
	return ignoreGone(n.h.AddrDel(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Index: a.LinkIndex}}, toNetlinkAddr(a)))
}

// Sysctl implements Kernel. /proc/sys/net is that of the calling thread's
// network namespace, which is the handle's for the handles used here.
func (n *Netlink) Sysctl(name, value string) error {
	return os.WriteFile(filepath.Join("/proc/sys", name), []byte(value), 0o644)
}
