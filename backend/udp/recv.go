package udp

// Packet flow, wire to TUN. One receiver goroutine per queue (socket):
//
//	udpIO.ReadBatch: up to BatchSize messages per wake-up; with UDP_GRO
//	one message is a run of same-size datagrams of one flow (segSize)
//	-> the source must be a peer's PublicIP and the backend port (one
//	   map lookup, table.origin; else every datagram of the message is
//	   dropped and counted: not_peer, wrong_port)
//	-> per datagram: decode the inner IP header (version nibble, lengths),
//	   the destination must be in our lease, the source in the sending
//	   peer's subnets (spoofed_source)
//	-> IPv4 TCP segments that may be coalesced have their IP and TCP
//	   checksums verified (bad_checksum): a super-packet goes to the kernel
//	   with its checksum left partial, which the kernel trusts
//	-> consecutive in-order segments of one TCP flow are coalesced into a
//	   super-packet with a GSO virtio_net_hdr, without copying: a gather
//	   list of the header, the first segment and the others' payloads;
//	   anything else goes as it is, behind an empty header (the kernel
//	   verifies its checksums)
//	-> queued in order; the open super-packet is closed before any other
//	   packet is queued and at the end of each wake-up, when the queue goes
//	   to the TUN in one tunIO.Write (one writev per packet), so nothing
//	   waits for more traffic
//
// As on the send side, all buffers are allocated once.

import "net/netip"

const (
	recvBatch   = 8
	maxOut      = 64                   // packets of one tunIO.Write
	maxOutParts = 4 * maxCoalescedSegs // their parts
)

type receiver struct {
	b        *Backend
	tun      tunIO
	udp      udpIO
	c        *counters
	coalesce bool

	msgs []rxMsg // with their buffers
	co   *coalescer
	hdr  [vnetHdrLen]byte // an empty virtio header for single packets
	one  [2][]byte

	out     [maxOut][][]byte // queued packets: gather lists into parts
	outSegs [maxOut]int      // inner packets carried by out[i]
	outHdr  [maxOut][vnetHdrLen]byte
	nout    int
	parts   [maxOutParts][]byte
	npart   int
}

// newReceiver returns the receiver of one queue; coalesce says whether the
// TUN takes GSO packets (it has IFF_VNET_HDR).
func newReceiver(b *Backend, tun tunIO, udp udpIO, c *counters, coalesce bool) *receiver {
	x := &receiver{b: b, tun: tun, udp: udp, c: c, coalesce: coalesce, co: newCoalescer(),
		msgs: make([]rxMsg, max(udp.BatchSize(), 1))}
	for i := range x.msgs {
		x.msgs[i].buf = make([]byte, maxPacket)
	}
	return x
}

func (x *receiver) run() error {
	for {
		n, err := x.udp.ReadBatch(x.msgs)
		if n > 0 {
			x.deliver(n)
		}
		if err != nil {
			return err
		}
	}
}

// deliver checks the first n messages and writes what they carry to the
// TUN.
func (x *receiver) deliver(n int) {
	t := x.b.table.Load()
	for i := range n {
		x.deliverMsg(t, &x.msgs[i])
	}
	x.closeCoalesced()
	x.flush()
}

// deliverMsg checks the sender of one message (with UDP_GRO, a run of
// datagrams from one source) and queues the datagrams it carries.
func (x *receiver) deliverMsg(t *table, m *rxMsg) {
	if m.n <= 0 {
		x.c.drop(dropTruncated)
		return
	}
	seg := m.n
	if m.segSize > 0 {
		seg = m.segSize
	}
	o, reason := t.origin(m.src)
	if o == nil {
		x.c.dropFrom(reason, uint64((m.n+seg-1)/seg), m.src, netip.Addr{}, netip.Prefix{})
		return
	}
	data := m.buf[:m.n]
	for off := 0; off < m.n; off += seg {
		x.deliverOne(t, o, data[off:min(off+seg, m.n)])
	}
}

// deliverOne checks one datagram from o and queues its packet, coalesced
// with the open super-packet when it continues it.
func (x *receiver) deliverOne(t *table, o *origin, d []byte) {
	in, reason, ok := acceptInner(t, o, d)
	co := ok && x.coalesce && coalescible(d, in)
	if co && !segmentValid(d) {
		reason, ok = dropBadChecksum, false
	}
	if !ok {
		if reason == dropSpoofedSource || reason == dropBadChecksum {
			x.c.dropFrom(reason, 1, o.addr, in.src, o.subnets[0])
		} else {
			x.c.drop(reason)
		}
		return
	}
	x.c.rxPackets.Add(1)
	x.c.rxBytes.Add(uint64(len(d)))
	if co {
		if !x.co.add(d) {
			x.closeCoalesced()
			x.co.start(d)
		}
		return
	}
	x.closeCoalesced()
	x.one[0], x.one[1] = x.hdr[:], d
	x.queue(x.one[:], 1, false)
}

// closeCoalesced queues the open super-packet, if any.
func (x *receiver) closeCoalesced() {
	if parts, segs := x.co.finish(); parts != nil {
		x.queue(parts, segs, true)
	}
}

// queue adds a packet (a gather list: header, then its bytes, carrying
// segs inner packets) to the TUN write queue. ownHdr copies the header: the
// coalescer reuses its own for the next super-packet.
func (x *receiver) queue(parts [][]byte, segs int, ownHdr bool) {
	if x.nout == maxOut || x.npart+len(parts) > len(x.parts) {
		x.flush()
	}
	p := x.parts[x.npart : x.npart+len(parts) : x.npart+len(parts)]
	copy(p, parts)
	if ownHdr {
		h := x.outHdr[x.nout][:]
		copy(h, parts[0])
		p[0] = h
	}
	x.out[x.nout], x.outSegs[x.nout] = p, segs
	x.nout++
	x.npart += len(parts)
}

// flush writes the queued packets to the TUN, counting those it refuses.
func (x *receiver) flush() {
	for done := 0; done < x.nout; done++ {
		n, err := x.tun.Write(x.out[done:x.nout])
		if done += n; done == x.nout {
			break
		}
		x.c.drops[dropTunWriteError].Add(uint64(x.outSegs[done]))
		if !closedErr(err) {
			x.b.firstError(&x.b.tunErrLogged, "writing to the TUN device failed", err)
		}
	}
	x.nout, x.npart = 0, 0
}
