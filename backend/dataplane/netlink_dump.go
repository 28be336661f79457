package dataplane

import (
	"fmt"
	"net/netip"
	"syscall"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// Why the dumps read the socket themselves.
//
// A full reconcile dumps the main table, the neighbours and the FDB of
// the backend's links: at 10,000 peers, 10,000 entries each. Through the
// library, every entry becomes a copy of its message, a slice of its
// attributes and a library struct (with slices for the addresses) before
// we keep three fields of it: 30-40 MiB of garbage per pass at 10,000
// vxlan peers, which set the daemon's peak resident size. dumpEach reads
// the replies into one buffer and hands each message to a parser that
// looks at the attributes in place, so a dump allocates the buffer and
// what the caller keeps.

// dumpBufSize is the receive buffer of a dump: the kernel fills a read of
// a dump with as many messages as fit in 32 KiB at most.
const dumpBufSize = 64 << 10

// dumpEach sends the dump request req on a netlink socket of its own (in
// the calling thread's network namespace) and calls f with the payload of
// each reply of type resType, until the kernel says the dump is done. The
// payload is valid during the call only. An error from the kernel is
// returned as its errno; a dump the kernel interrupted because the table
// changed meanwhile is read to its end and reported as
// netlink.ErrDumpInterrupted (dump retries it).
func dumpEach(req *nl.NetlinkRequest, resType uint16, f func(msg []byte)) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	tv := nl.SocketTimeoutTv
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return err
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return err
	}
	local, ok := sa.(*unix.SockaddrNetlink)
	if !ok {
		return fmt.Errorf("netlink socket bound to %T", sa)
	}
	if err := unix.Sendto(fd, req.Serialize(), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	r := dumpReader{seq: req.Seq, pid: local.Pid, resType: resType, f: f}
	buf := make([]byte, dumpBufSize)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if done, err := r.read(buf[:n]); done || err != nil {
			return err
		}
	}
}

// dumpReader walks the messages of a dump's reads.
type dumpReader struct {
	seq, pid uint32
	resType  uint16
	f        func(msg []byte)
	intr     bool // the kernel flagged a message NLM_F_DUMP_INTR
}

// read handles the messages of one read; done is true at the end of the
// dump.
func (r *dumpReader) read(b []byte) (done bool, err error) {
	native := nl.NativeEndian()
	for len(b) >= unix.NLMSG_HDRLEN {
		l := int(native.Uint32(b[0:4]))
		typ, flags := native.Uint16(b[4:6]), native.Uint16(b[6:8])
		seq, pid := native.Uint32(b[8:12]), native.Uint32(b[12:16])
		if l < unix.NLMSG_HDRLEN || l > len(b) {
			return true, fmt.Errorf("netlink message of %d bytes in a read of %d", l, len(b))
		}
		data := b[unix.NLMSG_HDRLEN:l]
		b = b[min(nlmAlign(l), len(b)):]
		if seq != r.seq || pid != r.pid {
			continue
		}
		if flags&unix.NLM_F_DUMP_INTR != 0 {
			r.intr = true
		}
		switch typ {
		case unix.NLMSG_DONE, unix.NLMSG_ERROR:
			if len(data) >= 4 {
				if errno := int32(native.Uint32(data[0:4])); errno != 0 {
					return true, syscall.Errno(-errno)
				}
			}
			if r.intr {
				return true, netlink.ErrDumpInterrupted
			}
			return true, nil
		case r.resType:
			r.f(data)
		}
	}
	return false, nil
}

func nlmAlign(l int) int { return (l + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1) }

func rtaAlign(l int) int { return (l + unix.RTA_ALIGNTO - 1) &^ (unix.RTA_ALIGNTO - 1) }

// eachAttr calls f with the type and value of each attribute in b, in
// place. It reports false, having called f for those before it, when an
// attribute's length does not fit: the message is malformed.
func eachAttr(b []byte, f func(typ uint16, v []byte)) bool {
	native := nl.NativeEndian()
	for len(b) >= unix.SizeofRtAttr {
		l := int(native.Uint16(b[0:2]))
		if l < unix.SizeofRtAttr || l > len(b) {
			return false
		}
		f(native.Uint16(b[2:4]), b[unix.SizeofRtAttr:l])
		b = b[min(rtaAlign(l), len(b)):]
	}
	return true
}

// sizeofNdmsg is struct ndmsg: family, pads, ifindex, state, flags, type.
const sizeofNdmsg = 12

// dumpedNeigh is the part of a neighbour message the tables use.
type dumpedNeigh struct {
	link  int
	state uint16
	ip    netip.Addr // invalid when the message has none
	mac   MAC
	isMAC bool // the link-layer address is 6 bytes
}

// neighDump calls f with the neighbour entries of family (AF_INET,
// AF_INET6, or AF_BRIDGE for the FDB) on link, as the library's
// NeighList selects them: the kernel is asked for that link and family,
// and entries of others are left out.
// Equivalent to: ip neigh show dev $link; bridge fdb show dev $link
func neighDump(link, family int, f func(dumpedNeigh)) error {
	req := nl.NewNetlinkRequest(unix.RTM_GETNEIGH, unix.NLM_F_DUMP)
	req.AddData(&netlink.Ndmsg{Family: uint8(family), Index: uint32(link)})
	return dumpEach(req, unix.RTM_NEWNEIGH, func(m []byte) {
		if n, ok := parseNeigh(m); ok && (link == 0 || n.link == link) && (family == 0 || int(m[0]) == family) {
			f(n)
		}
	})
}

func parseNeigh(m []byte) (dumpedNeigh, bool) {
	if len(m) < sizeofNdmsg {
		return dumpedNeigh{}, false
	}
	native := nl.NativeEndian()
	n := dumpedNeigh{link: int(int32(native.Uint32(m[4:8]))), state: native.Uint16(m[8:10])}
	ok := eachAttr(m[sizeofNdmsg:], func(typ uint16, v []byte) {
		switch typ {
		case unix.NDA_DST:
			if a, ok := netip.AddrFromSlice(v); ok {
				n.ip = a.Unmap()
			} else {
				n.ip = netip.Addr{}
			}
		case unix.NDA_LLADDR:
			n.isMAC = len(v) == 6
			if n.isMAC {
				n.mac = MAC(v)
			}
		}
	})
	return n, ok
}
