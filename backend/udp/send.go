package udp

// Packet flow, TUN to wire. One sender goroutine per TUN queue:
//
//	read the TUN queue: up to readBatch packets per wake-up, each behind a
//	virtio_net_hdr; with TSO a packet is a TCP super-packet of up to 64 KiB
//	-> routeFromTun on the packet: the peer of the destination's lease,
//	   else ICMP net unreachable back into the TUN, or a counted drop
//	-> super-packet: splitTCP/header write one IP+TCP header per MTU-sized
//	   segment (own lengths, sequence numbers, checksums) into a header
//	   arena; the payload is not copied: each segment is two iovecs, its
//	   header and its slice of the read buffer
//	   plain packet: completeChecksum if the kernel left it to us
//	-> one sendmmsg message per packet or, with UDP GSO, one message per
//	   run of up to 64 equal-size segments to one peer (UDP_SEGMENT: the
//	   kernel cuts the message into datagrams)
//	-> sendmmsg on the queue's socket, all messages of the wake-up at once
//
// Every buffer is allocated when the sender is created; the loop allocates
// nothing. The forwarding table is read with one atomic load per wake-up.

import (
	"errors"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	readBatch   = 8          // TUN reads per wake-up
	maxPacket   = 65535      // largest IP packet
	maxMsgs     = 256        // sendmmsg vector
	maxIovs     = 1024       // iovecs of one sendmmsg
	hdrArena    = 64 << 10   // segment headers of one sendmmsg
	gsoMaxSegs  = 64         // UDP_MAX_SEGMENTS on older kernels
	gsoMaxBytes = 65507 - 64 // one UDP datagram's payload limit, with margin
)

type sender struct {
	b    *Backend
	q    *tunQueue
	s    *udpSock
	c    *counters
	vnet bool

	bufs [readBatch][]byte
	lens [readBatch]int
	icmp []byte

	m        *mmsgs
	nmsg     int
	iovs     []unix.Iovec
	niov     int
	hdrs     []byte
	hdrUsed  int
	msgIov   [maxMsgs][2]int // first iovec and count of message i
	msgBytes [maxMsgs]int
	segsOf   [maxMsgs]int // inner packets carried by message i
	segSize  [maxMsgs]int // GSO size of message i, 0 without GSO
	sent     int

	nread  int
	rerr   error
	tunOut []byte
	terr   error

	readFn, sendFn, tunWriteFn func(fd uintptr) bool
}

func newSender(b *Backend, q *tunQueue, s *udpSock, c *counters, vnet bool) *sender {
	x := &sender{b: b, q: q, s: s, c: c, vnet: vnet, m: newMmsgs(maxMsgs), iovs: make([]unix.Iovec, maxIovs), hdrs: make([]byte, hdrArena),
		icmp: make([]byte, vnetHdrLen+ipv6HeaderLen+8+icmp6Quote)}
	for i := range x.bufs {
		x.bufs[i] = make([]byte, vnetHdrLen+maxPacket)
	}
	x.readFn, x.sendFn, x.tunWriteFn = x.readTun, x.sendQueued, x.writeTun
	return x
}

// run forwards until the TUN queue is closed.
func (x *sender) run() error {
	for {
		if err := x.q.rc.Read(x.readFn); err != nil {
			return err
		}
		if x.rerr != nil && x.nread == 0 {
			return x.rerr
		}
		x.forward()
	}
}

// readTun drains up to readBatch packets; false (nothing yet) makes the
// poller wait for the descriptor to become readable.
func (x *sender) readTun(fd uintptr) bool {
	x.nread, x.rerr = 0, nil
	off := vnetHdrLen
	if x.vnet {
		off = 0
	}
	for x.nread < readBatch {
		buf := x.bufs[x.nread]
		n, err := unix.Read(int(fd), buf[off:])
		if err == unix.EINTR {
			continue
		}
		if err == unix.EAGAIN {
			break
		}
		if err != nil {
			x.rerr = err
			return true
		}
		if !x.vnet {
			clear(buf[:vnetHdrLen])
		}
		x.lens[x.nread] = off + n
		x.nread++
	}
	return x.nread > 0
}

func (x *sender) forward() {
	t := x.b.table.Load()
	gso := x.b.gso.Load()
	for i := 0; i < x.nread; i++ {
		buf := x.bufs[i][:x.lens[i]]
		if len(buf) <= vnetHdrLen {
			x.c.drop(dropTruncated)
			continue
		}
		var h vnetHdr
		h.decode(buf)
		pkt := buf[vnetHdrLen:]
		if h.gsoType != gsoNone {
			s, ok := splitTCP(pkt, h)
			if !ok {
				x.c.drop(dropBadOffload)
				continue
			}
			p, in, reason := routeFromTun(t, pkt)
			if p == nil {
				x.refuse(t, pkt, in, reason, s.count)
				continue
			}
			x.queueSplit(p, pkt, &s, gso)
			continue
		}
		if !completeChecksum(pkt, h) {
			x.c.drop(dropBadOffload)
			continue
		}
		p, in, reason := routeFromTun(t, pkt)
		if p == nil {
			x.refuse(t, pkt, in, reason, 1)
			continue
		}
		if x.nmsg == maxMsgs || x.niov == len(x.iovs) {
			x.flush()
		}
		setIov(&x.iovs[x.niov], pkt)
		x.add(p, 1, 1, 0, len(pkt))
	}
	x.flush()
}

// queueSplit queues the segments of a super-packet for p: runs of up to
// gsoMaxSegs segments per GSO message, or one message per segment.
func (x *sender) queueSplit(p *peer, pkt []byte, s *tsoSplit, gso bool) {
	per := 1
	if gso && s.count > 1 {
		per = min(gsoMaxSegs, gsoMaxBytes/s.segLen())
	}
	for i := 0; i < s.count; {
		k := min(per, s.count-i)
		if x.nmsg == maxMsgs || x.niov+2*k > len(x.iovs) || x.hdrUsed+k*s.hdrLen > len(x.hdrs) {
			x.flush()
		}
		n := 0
		for j := range k {
			hdr := x.hdrs[x.hdrUsed : x.hdrUsed+s.hdrLen]
			x.hdrUsed += s.hdrLen
			s.header(pkt, i+j, hdr)
			pl := s.payloadOf(pkt, i+j)
			setIov(&x.iovs[x.niov+2*j], hdr)
			setIov(&x.iovs[x.niov+2*j+1], pl)
			n += len(hdr) + len(pl)
		}
		seg := 0
		if k > 1 {
			seg = s.segLen()
		}
		x.add(p, 2*k, k, seg, n)
		i += k
	}
}

// add makes a message of the next niov iovecs.
func (x *sender) add(p *peer, niov, segs, segSize, n int) {
	x.m.setSendIov(x.nmsg, x.iovs[x.niov:x.niov+niov], &p.sa, segSize)
	x.msgIov[x.nmsg] = [2]int{x.niov, niov}
	x.segsOf[x.nmsg], x.segSize[x.nmsg], x.msgBytes[x.nmsg] = segs, segSize, n
	x.nmsg++
	x.niov += niov
}

func setIov(v *unix.Iovec, b []byte) {
	if len(b) == 0 {
		v.Base = nil
	} else {
		v.Base = &b[0]
	}
	v.SetLen(len(b))
}

// flush sends every queued message.
func (x *sender) flush() {
	if x.nmsg == 0 {
		return
	}
	x.sent = 0
	if err := x.s.rc.Write(x.sendFn); err != nil {
		for i := x.sent; i < x.nmsg; i++ {
			x.c.drops[dropSendError].Add(uint64(x.segsOf[i]))
		}
	}
	x.nmsg, x.niov, x.hdrUsed = 0, 0, 0
}

// sendQueued is the sendmmsg loop; false waits for the socket to drain.
func (x *sender) sendQueued(fd uintptr) bool {
	for x.sent < x.nmsg {
		n, e := sendmmsg(fd, x.m.hdrs[x.sent:x.nmsg])
		switch e {
		case 0:
			for i := x.sent; i < x.sent+n; i++ {
				x.c.txPackets.Add(uint64(x.segsOf[i]))
				x.c.txBytes.Add(uint64(x.msgBytes[i]))
			}
			x.sent += n
		case unix.EINTR:
		case unix.EAGAIN:
			return false
		default:
			i := x.sent
			if x.segSize[i] > 0 && (e == unix.EIO || e == unix.EINVAL || e == unix.EOPNOTSUPP) {
				// The route's device cannot do UDP GSO: stop using it and
				// send this message's datagrams one by one.
				if x.b.gso.CompareAndSwap(true, false) {
					x.b.log.Warn("UDP GSO (UDP_SEGMENT) refused by the kernel; sending datagrams one by one", "error", e)
				}
				x.sendEach(fd, i)
			} else {
				x.c.drops[dropSendError].Add(uint64(x.segsOf[i]))
				x.b.firstError(&x.b.sendErrLogged, "sending to a peer failed", e)
			}
			x.sent++
		}
	}
	return true
}

// sendEach sends the GSO message i as separate datagrams, one sendmsg
// per segment (a header and a payload iovec).
func (x *sender) sendEach(fd uintptr, i int) {
	first, n := x.msgIov[i][0], x.msgIov[i][1]
	h := x.m.hdrs[i].Hdr
	h.Control = nil
	h.SetControllen(0)
	h.SetIovlen(2)
	for j := first; j+1 < first+n; j += 2 {
		h.Iov = &x.iovs[j]
		_, _, e := unix.Syscall(unix.SYS_SENDMSG, fd, uintptr(unsafe.Pointer(&h)), 0)
		if e != 0 {
			x.c.drop(dropSendError)
			continue
		}
		x.c.txPackets.Add(1)
		x.c.txBytes.Add(x.iovs[j].Len + x.iovs[j+1].Len)
	}
}

// refuse counts count packets as dropped for reason and, for a destination
// inside the Network that no lease covers, writes an ICMP destination
// unreachable to the sender through the TUN.
func (x *sender) refuse(t *table, pkt []byte, in inner, reason, count int) {
	x.c.drops[reason].Add(uint64(count))
	if reason != dropNoRoute {
		return
	}
	// The message comes from the unreachable address itself: a source
	// address of this host would be dropped by the kernel as martian when
	// the message comes in through flannel0.
	var n int
	if in.version == 4 {
		n = icmpUnreachable(x.icmp[vnetHdrLen:], in.dst, pkt, in)
	} else {
		n = icmp6Unreachable(x.icmp[vnetHdrLen:], in.dst, pkt, in)
	}
	if n == 0 {
		return
	}
	clear(x.icmp[:vnetHdrLen])
	out := x.icmp[:vnetHdrLen+n]
	if !x.vnet {
		out = out[vnetHdrLen:]
	}
	if x.writeTunPacket(out) == nil {
		x.c.icmp.Add(1)
	}
}

func (x *sender) writeTunPacket(b []byte) error {
	x.tunOut, x.terr = b, nil
	if err := x.q.rc.Write(x.tunWriteFn); err != nil {
		return err
	}
	return x.terr
}

func (x *sender) writeTun(fd uintptr) bool {
	_, err := unix.Write(int(fd), x.tunOut)
	if err == unix.EAGAIN {
		return false
	}
	x.terr = err
	return true
}

// closedErr reports whether err means the descriptor was closed (shutdown).
func closedErr(err error) bool {
	return errors.Is(err, os.ErrClosed) || errors.Is(err, unix.EBADF)
}
