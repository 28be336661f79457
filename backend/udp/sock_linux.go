package udp

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// udpSock is one UDP socket bound to the backend port. With several queues
// there is one per queue, all bound with SO_REUSEPORT.
type udpSock struct {
	conn *net.UDPConn
	rc   syscall.RawConn
	gro  bool // UDP_GRO is on: one read may return many datagrams
}

const sockBuf = 4 << 20

func listenUDP(ctx context.Context, addr netip.AddrPort, reusePort bool) (*udpSock, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			if reusePort {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
			}
		})
		return errors.Join(err, serr)
	}}
	pc, err := lc.ListenPacket(ctx, "udp4", addr.String())
	if err != nil {
		return nil, err
	}
	conn := pc.(*net.UDPConn)
	rc, err := conn.SyscallConn()
	if err != nil {
		conn.Close()
		return nil, err
	}
	s := &udpSock{conn: conn, rc: rc}
	rc.Control(func(fd uintptr) {
		// Larger buffers absorb bursts; FORCE works as root, the plain
		// option is the fallback (capped by net.core.[rw]mem_max).
		if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, sockBuf) != nil {
			unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, sockBuf)
		}
		if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, sockBuf) != nil {
			unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF, sockBuf)
		}
	})
	return s, nil
}

// enableGRO asks the kernel to hand over runs of same-size datagrams of
// one flow in one read (UDP_GRO), with the size in a control message.
func (s *udpSock) enableGRO() error {
	var serr error
	err := s.rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_GRO, 1) })
	if err = errors.Join(err, serr); err == nil {
		s.gro = true
	}
	return err
}

// cmsgSpace is the room for one control message with an int payload.
var cmsgSpace = unix.CmsgSpace(4)

// mmsgs is a reusable recvmmsg/sendmmsg vector: headers, one iovec, one
// socket address and one control buffer per message, all allocated once.
type mmsgs struct {
	hdrs  []unix.Mmsghdr
	iovs  []unix.Iovec
	names []sockaddr
	oob   []byte
}

func newMmsgs(n int) *mmsgs {
	m := &mmsgs{hdrs: make([]unix.Mmsghdr, n), iovs: make([]unix.Iovec, n), names: make([]sockaddr, n), oob: make([]byte, n*cmsgSpace)}
	for i := range m.hdrs {
		h := &m.hdrs[i].Hdr
		h.Iov = &m.iovs[i]
		h.SetIovlen(1)
	}
	return m
}

// setRecv points message i at buf, with room for an address and a control
// message (both are overwritten by the kernel, so reset before each read).
func (m *mmsgs) setRecv(i int, buf []byte) {
	h := &m.hdrs[i].Hdr
	m.iovs[i].Base = &buf[0]
	m.iovs[i].SetLen(len(buf))
	h.Name = &m.names[i].raw[0]
	h.Namelen = uint32(len(m.names[i].raw))
	h.Control = &m.oob[i*cmsgSpace]
	h.SetControllen(cmsgSpace)
	m.hdrs[i].Len = 0
}

// setSendIov points message i at the iovecs iov (part of a pool the
// caller keeps until the send) for dst; segSize > 0 adds a UDP_SEGMENT
// control message (the kernel cuts the message into datagrams of that
// size: GSO).
func (m *mmsgs) setSendIov(i int, iov []unix.Iovec, dst *sockaddr, segSize int) {
	h := &m.hdrs[i].Hdr
	h.Iov = &iov[0]
	h.SetIovlen(len(iov))
	m.names[i] = *dst
	h.Name = &m.names[i].raw[0]
	h.Namelen = dst.len
	if segSize > 0 {
		c := m.oob[i*cmsgSpace : (i+1)*cmsgSpace]
		clear(c)
		ch := (*unix.Cmsghdr)(unsafe.Pointer(&c[0]))
		ch.Level, ch.Type = unix.SOL_UDP, unix.UDP_SEGMENT
		ch.SetLen(unix.CmsgLen(2))
		binary.NativeEndian.PutUint16(c[unix.CmsgLen(0):], uint16(segSize))
		h.Control = &c[0]
		h.SetControllen(unix.CmsgSpace(2))
	} else {
		h.Control = nil
		h.SetControllen(0)
	}
}

// groSize returns the datagram size of a UDP_GRO read of message i, or 0
// when the kernel did not coalesce it.
func (m *mmsgs) groSize(i int) int {
	h := &m.hdrs[i].Hdr
	c := m.oob[i*cmsgSpace : i*cmsgSpace+int(h.Controllen)]
	for len(c) >= unix.SizeofCmsghdr {
		ch := (*unix.Cmsghdr)(unsafe.Pointer(&c[0]))
		l := int(ch.Len)
		if l < unix.SizeofCmsghdr || l > len(c) {
			return 0
		}
		if ch.Level == unix.SOL_UDP && ch.Type == unix.UDP_GRO && l >= unix.CmsgLen(2) {
			if l >= unix.CmsgLen(4) {
				return int(binary.NativeEndian.Uint32(c[unix.CmsgLen(0):]))
			}
			return int(binary.NativeEndian.Uint16(c[unix.CmsgLen(0):]))
		}
		c = c[min(unix.CmsgSpace(l-unix.SizeofCmsghdr), len(c)):]
	}
	return 0
}

// recvmmsg and sendmmsg are the raw system calls on fd (x/sys/unix has no
// wrappers); they return the number of messages and an errno.
func recvmmsg(fd uintptr, hdrs []unix.Mmsghdr) (int, unix.Errno) {
	n, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&hdrs[0])), uintptr(len(hdrs)), 0, 0, 0)
	return int(n), e
}

func sendmmsg(fd uintptr, hdrs []unix.Mmsghdr) (int, unix.Errno) {
	n, _, e := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&hdrs[0])), uintptr(len(hdrs)), 0, 0, 0)
	return int(n), e
}
