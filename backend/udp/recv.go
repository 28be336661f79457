package udp

// Packet flow, wire to TUN. One receiver goroutine per queue (socket):
//
//	recvmmsg on the queue's socket: up to recvBatch messages per wake-up;
//	with UDP_GRO one message is a run of same-size datagrams of one flow,
//	the size in a control message
//	-> the source address must be a peer's PublicIP (else every datagram
//	   of the message is dropped and counted)
//	-> per datagram: decode the inner IP header (version nibble, lengths),
//	   the destination must be in our lease
//	-> consecutive in-order segments of one TCP flow are coalesced into a
//	   super-packet with a GSO virtio_net_hdr, without copying: one writev
//	   of the header, the first segment and the others' payloads; anything
//	   else is written as it is, behind an empty header
//	-> write to the TUN queue; the open super-packet is flushed before any
//	   other packet and at the end of each wake-up, so nothing waits
//
// As on the send side, all buffers are allocated once.

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

const recvBatch = 8

type receiver struct {
	b        *Backend
	q        *tunQueue
	s        *udpSock
	c        *counters
	vnet     bool
	coalesce bool

	bufs  [recvBatch][]byte
	m     *mmsgs
	nrecv int
	rerr  error
	co    *coalescer

	hdr             [vnetHdrLen]byte // an empty virtio header for single packets
	single          [2][]byte
	iov             [maxCoalescedSegs + 2]unix.Iovec
	niov            int
	werr            unix.Errno
	readFn, writeFn func(fd uintptr) bool
}

func newReceiver(b *Backend, q *tunQueue, s *udpSock, c *counters, vnet bool) *receiver {
	x := &receiver{b: b, q: q, s: s, c: c, vnet: vnet, coalesce: vnet, m: newMmsgs(recvBatch), co: newCoalescer()}
	for i := range x.bufs {
		x.bufs[i] = make([]byte, maxPacket)
	}
	x.readFn, x.writeFn = x.recv, x.writev
	return x
}

func (x *receiver) run() error {
	for {
		for i := range x.bufs {
			x.m.setRecv(i, x.bufs[i])
		}
		if err := x.s.rc.Read(x.readFn); err != nil {
			return err
		}
		if x.rerr != nil {
			return x.rerr
		}
		x.deliver()
	}
}

func (x *receiver) recv(fd uintptr) bool {
	for {
		n, e := recvmmsg(fd, x.m.hdrs)
		switch e {
		case 0:
			x.nrecv, x.rerr = n, nil
			return true
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		default:
			x.nrecv, x.rerr = 0, e
			return true
		}
	}
}

func (x *receiver) deliver() {
	t := x.b.table.Load()
	for i := 0; i < x.nrecv; i++ {
		n := int(x.m.hdrs[i].Len)
		data := x.bufs[i][:n]
		seg := n
		if g := x.m.groSize(i); g > 0 {
			seg = g
		}
		if n == 0 || seg == 0 {
			x.c.drop(dropTruncated)
			continue
		}
		if !t.isPeer(x.m.names[i].addr()) {
			x.c.drops[dropNotPeer].Add(uint64((n + seg - 1) / seg))
			continue
		}
		for off := 0; off < n; off += seg {
			d := data[off:min(off+seg, n)]
			in, reason, ok := acceptInner(t, d)
			if !ok {
				x.c.drop(reason)
				continue
			}
			x.c.rxPackets.Add(1)
			x.c.rxBytes.Add(uint64(len(d)))
			if x.coalesce && coalescible(d, in) {
				if !x.co.add(d) {
					x.flushCoalesced()
					x.co.start(d)
				}
				continue
			}
			x.flushCoalesced()
			x.writeSingle(d)
		}
	}
	x.flushCoalesced()
}

func (x *receiver) flushCoalesced() {
	parts, segs := x.co.finish()
	if parts != nil {
		x.write(parts, segs)
	}
}

// writeSingle writes one packet, behind an empty virtio header when the
// TUN expects one.
func (x *receiver) writeSingle(pkt []byte) {
	x.single[0], x.single[1] = x.hdr[:], pkt
	if x.vnet {
		x.write(x.single[:], 1)
		return
	}
	x.write(x.single[1:], 1)
}

// write writes parts as one packet (carrying segs inner packets) with
// writev.
func (x *receiver) write(parts [][]byte, segs int) {
	for i, p := range parts {
		setIov(&x.iov[i], p)
	}
	x.niov = len(parts)
	x.werr = 0
	if err := x.q.rc.Write(x.writeFn); err != nil || x.werr != 0 {
		x.c.drops[dropTunWriteError].Add(uint64(segs))
		if x.werr != 0 {
			x.b.firstError(&x.b.tunErrLogged, "writing to the TUN device failed", x.werr)
		}
	}
}

func (x *receiver) writev(fd uintptr) bool {
	for {
		_, _, e := unix.Syscall(unix.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&x.iov[0])), uintptr(x.niov))
		switch e {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		}
		x.werr = e
		return true
	}
}
