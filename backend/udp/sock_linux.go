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

// udpSock is one UDP socket bound to the backend port, the real udpIO.
// With several queues there is one per queue, all bound with SO_REUSEPORT.
type udpSock struct {
	conn *net.UDPConn
	rc   syscall.RawConn
	gro  bool // UDP_GRO is on: one read may return many datagrams

	// ReadBatch's state, for readFn (a method value made once: a closure
	// per call would allocate).
	rx         *mmsgs
	nrx, nrecv int
	rerr       unix.Errno
	readFn     func(fd uintptr) bool
	tx         *mmsgs // WriteBatch's state, for writeFn
	txIovs     []unix.Iovec
	ntx, sent  int
	werr       unix.Errno
	writeFn    func(fd uintptr) bool
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
	s := &udpSock{conn: conn, rc: rc, rx: newMmsgs(recvBatch), tx: newMmsgs(maxMsgs), txIovs: make([]unix.Iovec, maxIovs)}
	s.readFn, s.writeFn = s.recv, s.send
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

// setSendIov points message i at the iovecs iov (part of a pool kept
// until the send) for dst; segSize > 0 adds a UDP_SEGMENT control message
// (the kernel cuts the message into datagrams of that size: GSO).
func (m *mmsgs) setSendIov(i int, iov []unix.Iovec, dst netip.AddrPort, segSize int) {
	h := &m.hdrs[i].Hdr
	h.Iov = nil
	if len(iov) > 0 {
		h.Iov = &iov[0]
	}
	h.SetIovlen(len(iov))
	m.names[i] = newSockaddr(dst)
	h.Name = &m.names[i].raw[0]
	h.Namelen = m.names[i].len
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
//
// Every system call of the packet path is on a non-blocking descriptor
// (waits happen in the poller), so it is made with RawSyscall, without
// telling the scheduler: a sendmmsg of a few GSO messages on a veth runs
// the receiving host's softirq inside the call and takes longer than the
// 20 us after which the Go runtime's monitor hands the processor of a
// thread in a system call to another thread. Under load that handoff
// happened thousands of times a second, each a thread wake-up and a
// context switch, and kept the monitor itself polling every 20 us (5% of
// the daemon's samples). None of these calls can block, so the processor
// is never held for long.
func recvmmsg(fd uintptr, hdrs []unix.Mmsghdr) (int, unix.Errno) {
	n, _, e := unix.RawSyscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&hdrs[0])), uintptr(len(hdrs)), 0, 0, 0)
	return int(n), e
}

func sendmmsg(fd uintptr, hdrs []unix.Mmsghdr) (int, unix.Errno) {
	n, _, e := unix.RawSyscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&hdrs[0])), uintptr(len(hdrs)), 0, 0, 0)
	return int(n), e
}

func setIov(v *unix.Iovec, b []byte) {
	if len(b) == 0 {
		v.Base = nil
	} else {
		v.Base = &b[0]
	}
	v.SetLen(len(b))
}

var _ udpIO = (*udpSock)(nil)

// BatchSize implements udpIO.
func (s *udpSock) BatchSize() int { return recvBatch }

// Close implements udpIO.
func (s *udpSock) Close() error { return s.conn.Close() }

// ReadBatch implements udpIO with recvmmsg(2), waiting in the poller while
// nothing has arrived. Errors of the poller (closed, or the read deadline
// that wakes a receiver) are returned as they are.
func (s *udpSock) ReadBatch(msgs []rxMsg) (int, error) {
	s.nrx = min(len(msgs), len(s.rx.hdrs))
	for i := range s.nrx {
		s.rx.setRecv(i, msgs[i].buf)
	}
	s.nrecv, s.rerr = 0, 0
	if err := s.rc.Read(s.readFn); err != nil {
		return 0, err
	}
	if s.rerr != 0 {
		return 0, s.rerr
	}
	for i := range s.nrecv {
		m := &msgs[i]
		m.n = int(s.rx.hdrs[i].Len)
		m.src = s.rx.names[i].addrPort()
		m.segSize = s.rx.groSize(i)
	}
	return s.nrecv, nil
}

func (s *udpSock) recv(fd uintptr) bool {
	for {
		n, e := recvmmsg(fd, s.rx.hdrs[:s.nrx])
		switch e {
		case 0:
			s.nrecv = n
			return true
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		default:
			s.rerr = e
			return true
		}
	}
}

// WriteBatch implements udpIO with sendmmsg(2), as many messages per call
// as the vectors hold, waiting in the poller while the socket buffer is
// full.
func (s *udpSock) WriteBatch(msgs []txMsg) (int, error) {
	done := 0
	for done < len(msgs) {
		s.ntx = s.load(msgs[done:])
		if s.ntx == 0 {
			return done, unix.EMSGSIZE // more parts than iovecs
		}
		s.sent, s.werr = 0, 0
		if err := s.rc.Write(s.writeFn); err != nil {
			return done + s.sent, err
		}
		done += s.sent
		if s.werr != 0 {
			return done, s.werr
		}
	}
	return done, nil
}

// load puts as many of msgs as fit into the sendmmsg vector and returns
// how many.
func (s *udpSock) load(msgs []txMsg) int {
	k, niov := 0, 0
	for ; k < len(msgs) && k < len(s.tx.hdrs); k++ {
		m := &msgs[k]
		if niov+len(m.bufs) > len(s.txIovs) {
			break
		}
		iov := s.txIovs[niov : niov+len(m.bufs)]
		for j, b := range m.bufs {
			setIov(&iov[j], b)
		}
		s.tx.setSendIov(k, iov, m.dst, m.segSize)
		niov += len(m.bufs)
	}
	return k
}

// send is the sendmmsg loop; false waits for the socket to drain. It stops
// at the first message the kernel refuses, with the errno in werr.
func (s *udpSock) send(fd uintptr) bool {
	for s.sent < s.ntx {
		n, e := sendmmsg(fd, s.tx.hdrs[s.sent:s.ntx])
		switch e {
		case 0:
			s.sent += n
		case unix.EINTR:
		case unix.EAGAIN:
			return false
		default:
			s.werr = e
			return true
		}
	}
	return true
}
