package udp

// Packet flow, TUN to wire. One sender goroutine per TUN queue:
//
//	tunIO.Read: up to BatchSize packets per wake-up, each behind a
//	virtio_net_hdr; with TSO a packet is a TCP super-packet of up to 64 KiB
//	-> routeFromTun on the packet: the peer of the destination's lease,
//	   else ICMP net unreachable back into the TUN, or a counted drop
//	-> super-packet: splitTCP/header write one IP+TCP header per MTU-sized
//	   segment (own lengths, sequence numbers, checksums) into a header
//	   arena; the payload is not copied: each segment is two parts of a
//	   message, its header and its slice of the read buffer
//	   plain packet: completeChecksum if the kernel left it to us
//	-> one message per packet or, with UDP GSO, one message per run of up
//	   to 64 equal-size segments to one peer (segSize: the kernel cuts the
//	   message into datagrams)
//	-> udpIO.WriteBatch with all messages of the wake-up at once; a GSO
//	   message the kernel refuses goes again as one datagram per segment,
//	   and GSO stays off from then on
//	-> the ICMP errors of the wake-up, in one tunIO.Write
//
// Every buffer is allocated when the sender is created; the loop allocates
// nothing. The forwarding table is read with one atomic load per wake-up.

import (
	"errors"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

const (
	readBatch   = 8          // TUN reads per wake-up
	maxPacket   = 65535      // largest IP packet
	maxMsgs     = 256        // messages of one WriteBatch
	maxIovs     = 1024       // their parts
	hdrArena    = 64 << 10   // segment headers of one WriteBatch
	gsoMaxSegs  = 64         // UDP_MAX_SEGMENTS on older kernels
	gsoMaxBytes = 65507 - 64 // one UDP datagram's payload limit, with margin
)

type sender struct {
	b   *Backend
	tun tunIO
	udp udpIO
	c   *counters

	bufs  [][]byte // read buffers: virtio header, then the packet
	sizes []int

	msgs     [maxMsgs]txMsg
	nmsg     int
	parts    [maxIovs][]byte // the messages' bufs point into it
	npart    int
	hdrs     []byte
	hdrUsed  int
	msgBytes [maxMsgs]int
	segsOf   [maxMsgs]int      // inner packets carried by message i
	each     [gsoMaxSegs]txMsg // a refused GSO message, one per segment

	icmp      [][]byte   // ICMP error buffers, one per read buffer
	icmpParts [][]byte   // their gather lists: header, packet
	icmpOut   [][][]byte // queued for the TUN
}

func newSender(b *Backend, tun tunIO, udp udpIO, c *counters) *sender {
	n := max(tun.BatchSize(), 1)
	x := &sender{b: b, tun: tun, udp: udp, c: c, hdrs: make([]byte, hdrArena),
		bufs: make([][]byte, n), sizes: make([]int, n),
		icmp: make([][]byte, n), icmpParts: make([][]byte, 2*n), icmpOut: make([][][]byte, 0, n)}
	for i := range n {
		x.bufs[i] = make([]byte, vnetHdrLen+maxPacket)
		x.icmp[i] = make([]byte, vnetHdrLen+ipv6HeaderLen+8+icmp6Quote)
	}
	return x
}

// run forwards until the TUN queue is closed.
func (x *sender) run() error {
	for {
		n, err := x.tun.Read(x.bufs, x.sizes, vnetHdrLen)
		if n > 0 {
			x.forward(n)
		}
		if err != nil {
			return err
		}
	}
}

// forward sends the first n packets of the read buffers on, and writes
// the ICMP errors they caused.
func (x *sender) forward(n int) {
	t := x.b.table.Load()
	gso := x.b.gso.Load()
	for i := range n {
		if x.sizes[i] <= 0 {
			x.c.drop(dropTruncated)
			continue
		}
		buf := x.bufs[i][:vnetHdrLen+x.sizes[i]]
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
				x.refuse(pkt, in, reason, s.count)
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
			x.refuse(pkt, in, reason, 1)
			continue
		}
		if x.nmsg == maxMsgs || x.npart == len(x.parts) {
			x.flush()
		}
		x.parts[x.npart] = pkt
		x.add(p, 1, 1, 0, len(pkt))
	}
	x.flush()
	x.writeICMP()
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
		if x.nmsg == maxMsgs || x.npart+2*k > len(x.parts) || x.hdrUsed+k*s.hdrLen > len(x.hdrs) {
			x.flush()
		}
		n := 0
		for j := range k {
			hdr := x.hdrs[x.hdrUsed : x.hdrUsed+s.hdrLen]
			x.hdrUsed += s.hdrLen
			s.header(pkt, i+j, hdr)
			pl := s.payloadOf(pkt, i+j)
			x.parts[x.npart+2*j], x.parts[x.npart+2*j+1] = hdr, pl
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

// add makes a message for p of the next nparts parts.
func (x *sender) add(p *peer, nparts, segs, segSize, n int) {
	end := x.npart + nparts
	x.msgs[x.nmsg] = txMsg{bufs: x.parts[x.npart:end:end], dst: p.addr, segSize: segSize}
	x.segsOf[x.nmsg], x.msgBytes[x.nmsg] = segs, n
	x.nmsg++
	x.npart = end
}

// flush sends every queued message, counting what went and what did not.
func (x *sender) flush() {
	for done := 0; done < x.nmsg; {
		n, err := x.udp.WriteBatch(x.msgs[done:x.nmsg])
		for i := done; i < done+n; i++ {
			x.c.txPackets.Add(uint64(x.segsOf[i]))
			x.c.txBytes.Add(uint64(x.msgBytes[i]))
		}
		if done += n; done == x.nmsg {
			break
		}
		if closedErr(err) { // shutting down
			for i := done; i < x.nmsg; i++ {
				x.c.drops[dropSendError].Add(uint64(x.segsOf[i]))
			}
			break
		}
		x.refused(done, err)
		done++
	}
	x.nmsg, x.npart, x.hdrUsed = 0, 0, 0
}

// refused handles message i, which the socket did not send for err.
func (x *sender) refused(i int, err error) {
	if x.msgs[i].segSize > 0 && gsoRefused(err) {
		// The route's device cannot do UDP GSO: stop using it and send
		// this message's datagrams one by one.
		if x.b.gso.CompareAndSwap(true, false) {
			x.b.log.Warn("UDP GSO (UDP_SEGMENT) refused by the kernel; sending datagrams one by one", "error", err)
		}
		x.sendEach(i)
		return
	}
	x.c.drops[dropSendError].Add(uint64(x.segsOf[i]))
	x.b.firstError(&x.b.sendErrLogged, "sending to a peer failed", err)
}

// gsoRefused reports whether err is the kernel's answer to a UDP_SEGMENT
// message that the route's device cannot segment.
func gsoRefused(err error) bool {
	return errors.Is(err, unix.EIO) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP)
}

// sendEach sends the GSO message i as separate datagrams, one message
// per segment (its header and payload parts).
func (x *sender) sendEach(i int) {
	m := x.msgs[i]
	k := len(m.bufs) / 2
	for j := range k {
		x.each[j] = txMsg{bufs: m.bufs[2*j : 2*j+2 : 2*j+2], dst: m.dst}
	}
	for done := 0; done < k; {
		n, err := x.udp.WriteBatch(x.each[done:k])
		for _, e := range x.each[done : done+n] {
			x.c.txPackets.Add(1)
			x.c.txBytes.Add(uint64(len(e.bufs[0]) + len(e.bufs[1])))
		}
		if done += n; done < k {
			x.c.drop(dropSendError)
			if done++; closedErr(err) {
				x.c.drops[dropSendError].Add(uint64(k - done))
				return
			}
		}
	}
}

// refuse counts count packets as dropped for reason and, for a destination
// inside the Network that no lease covers, queues an ICMP destination
// unreachable to the sender, written to the TUN by writeICMP.
func (x *sender) refuse(pkt []byte, in inner, reason, count int) {
	x.c.drops[reason].Add(uint64(count))
	if reason != dropNoRoute || len(x.icmpOut) == cap(x.icmpOut) {
		return
	}
	// The message comes from the unreachable address itself: a source
	// address of this host would be dropped by the kernel as martian when
	// the message comes in through flannel0.
	k := len(x.icmpOut)
	buf := x.icmp[k]
	var n int
	if in.version == 4 {
		n = icmpUnreachable(buf[vnetHdrLen:], in.dst, pkt, in)
	} else {
		n = icmp6Unreachable(buf[vnetHdrLen:], in.dst, pkt, in)
	}
	if n == 0 {
		return
	}
	clear(buf[:vnetHdrLen])
	parts := x.icmpParts[2*k : 2*k+2 : 2*k+2]
	parts[0], parts[1] = buf[:vnetHdrLen], buf[vnetHdrLen:vnetHdrLen+n]
	x.icmpOut = append(x.icmpOut, parts)
}

// writeICMP writes the queued ICMP errors into the TUN; one that cannot be
// written is not counted as sent (its packet is already counted as a drop).
func (x *sender) writeICMP() {
	for done := 0; done < len(x.icmpOut); done++ {
		n, _ := x.tun.Write(x.icmpOut[done:])
		x.c.icmp.Add(uint64(n))
		done += n
	}
	x.icmpOut = x.icmpOut[:0]
}

// closedErr reports whether err means the descriptor was closed (shutdown).
func closedErr(err error) bool {
	return errors.Is(err, os.ErrClosed) || errors.Is(err, net.ErrClosed) || errors.Is(err, unix.EBADF)
}
