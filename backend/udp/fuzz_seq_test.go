package udp

import (
	"bytes"
	"encoding/binary"
	"io"
	"net/netip"
	"testing"
)

// Fuzz targets over whole packet loops: sequences of TCP segments through
// the receiver's coalescing, super-packets through the sender's splitting
// and back through a receiver, and packets without a lease through the
// sender's ICMP path. Run one for real with
//
//	go test ./backend/udp/ -run '^$' -fuzz FuzzCoalesceSequence -fuzztime 30s

// tcpSpec is one TCP segment, built field by field with valid checksums.
type tcpSpec struct {
	v6       bool
	src, dst netip.Addr
	id       uint16
	ttl      uint8
	sport    uint16
	seq, ack uint32
	flags    uint8
	window   uint16
	opts     []byte // a multiple of 4 bytes
	payload  []byte
}

func (s tcpSpec) ipHL() int {
	if s.v6 {
		return ipv6HeaderLen
	}
	return ipv4HeaderLen
}

func (s tcpSpec) build() []byte {
	ipHL, thl := s.ipHL(), tcpHeaderLen+len(s.opts)
	p := make([]byte, ipHL+thl+len(s.payload))
	if s.v6 {
		p[0] = 0x60
		binary.BigEndian.PutUint16(p[4:], uint16(thl+len(s.payload)))
		p[6], p[7] = protoTCP, s.ttl
		a, b := s.src.As16(), s.dst.As16()
		copy(p[8:], a[:])
		copy(p[24:], b[:])
	} else {
		p[0] = 0x45
		binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
		binary.BigEndian.PutUint16(p[4:], s.id)
		p[6], p[8], p[9] = 0x40, s.ttl, protoTCP
		a, b := s.src.As4(), s.dst.As4()
		copy(p[12:], a[:])
		copy(p[16:], b[:])
		binary.BigEndian.PutUint16(p[10:], refChecksum(p[:ipv4HeaderLen]))
	}
	t := p[ipHL:]
	binary.BigEndian.PutUint16(t[0:], s.sport)
	binary.BigEndian.PutUint16(t[2:], 5201)
	binary.BigEndian.PutUint32(t[4:], s.seq)
	binary.BigEndian.PutUint32(t[8:], s.ack)
	t[12], t[13] = byte(thl/4)<<4, s.flags
	binary.BigEndian.PutUint16(t[14:], s.window)
	copy(t[20:], s.opts)
	copy(t[thl:], s.payload)
	binary.BigEndian.PutUint16(t[16:], refChecksum(transportPseudo(p, ipHL)))
	return p
}

// transportPseudo is the pseudo-header of IP packet p (header length
// ipHL) followed by its transport part, for the reference checksum.
func transportPseudo(p []byte, ipHL int) []byte {
	if ipHL == ipv6HeaderLen {
		return pseudo6(p, p[ipHL:])
	}
	t := p[ipHL:]
	ph := append([]byte{}, p[12:20]...)
	ph = append(ph, 0, p[9], byte(len(t)>>8), byte(len(t)))
	return append(ph, t...)
}

// transportValid reports whether the IP header (IPv4) and transport
// checksums of p verify.
func transportValid(p []byte) bool {
	if p[0]>>4 == 6 {
		return refChecksum(transportPseudo(p, ipv6HeaderLen)) == 0
	}
	return ipv4Valid(p) && refChecksum(transportPseudo(p, int(p[0]&0x0f)*4)) == 0
}

// recordTUN is a tunIO that keeps what is written (header and packet).
type recordTUN struct{ out [][]byte }

func (r *recordTUN) Read([][]byte, []int, int) (int, error) { return 0, nil }
func (r *recordTUN) Write(pkts [][][]byte) (int, error) {
	for _, p := range pkts {
		r.out = append(r.out, bytes.Join(p, nil))
	}
	return len(pkts), nil
}
func (r *recordTUN) BatchSize() int { return readBatch }
func (r *recordTUN) Close() error   { return nil }

// recordConn is a udpIO that keeps what is sent.
type recordConn struct {
	batch int
	out   []datagram
}

func (r *recordConn) ReadBatch([]rxMsg) (int, error) { return 0, nil }
func (r *recordConn) WriteBatch(msgs []txMsg) (int, error) {
	for _, m := range msgs {
		r.out = append(r.out, datagram{addr: m.dst, data: bytes.Join(m.bufs, nil), segSize: m.segSize})
	}
	return len(msgs), nil
}
func (r *recordConn) BatchSize() int { return r.batch }
func (r *recordConn) Close() error   { return nil }

// expand checks one packet the receiver wrote to the TUN and returns the
// packets the kernel makes of it: a GSO super-packet cut into its
// segments, anything else as it is. Nothing may be marked valid that does
// not verify.
func expand(t *testing.T, w []byte) [][]byte {
	t.Helper()
	if len(w) > vnetHdrLen+maxCoalesced {
		t.Fatalf("%d bytes written", len(w))
	}
	var vh vnetHdr
	vh.decode(w)
	pkt := w[vnetHdrLen:]
	if vh.gsoType == gsoNone {
		if vh.flags&^vnetDataValid != 0 {
			t.Fatalf("single packet with header %+v", vh)
		}
		if vh.flags&vnetDataValid != 0 && !transportValid(pkt) {
			t.Fatalf("packet marked DATA_VALID does not verify: % x", pkt[:min(len(pkt), 60)])
		}
		return [][]byte{pkt}
	}
	thl := int(pkt[ipv4HeaderLen+12]>>4) * 4
	want := vnetHdr{flags: vnetNeedsCsum, gsoType: gsoTCPv4, hdrLen: uint16(ipv4HeaderLen + thl), gsoSize: vh.gsoSize, csumStart: ipv4HeaderLen, csumOffset: 16}
	if vh != want || !ipv4Valid(pkt) || int(binary.BigEndian.Uint16(pkt[2:])) != len(pkt) {
		t.Fatalf("super-packet header %+v, IPv4 header % x", vh, pkt[:20])
	}
	full := bytes.Clone(pkt)
	completeChecksum(full, vh) // what the kernel does with NEEDS_CSUM
	if !transportValid(full) {
		t.Fatal("the super-packet's checksum seed is wrong")
	}
	segs := segments(t, pkt, vh)
	if len(segs) < 2 || len(segs) > maxCoalescedSegs {
		t.Fatalf("a super-packet of %d segments", len(segs))
	}
	return segs
}

// sameSegment reports whether a segment the kernel cut from a super-packet
// is the one that arrived (its IPv4 ID and header checksum aside: the
// kernel numbers the segments of a super-packet itself).
func sameSegment(got, want []byte) bool {
	if len(got) != len(want) || got[0]>>4 == 6 {
		return bytes.Equal(got, want)
	}
	return bytes.Equal(got[:4], want[:4]) && bytes.Equal(got[6:10], want[6:10]) && bytes.Equal(got[12:], want[12:])
}

// fuzzFlags are the TCP flags a fuzzed segment may carry, ACK most often.
var fuzzFlags = [8]uint8{tcpACK, tcpACK, tcpACK | tcpPSH, tcpACK, tcpSYN | tcpACK, tcpFIN | tcpACK, tcpACK | tcpCWR, tcpACK | tcpURG}

// segmentsFrom turns fuzz input into TCP segments from peer12's pods to
// ours, 4 bytes each: control bits (family, flags, corruption, options,
// spoofed source), what the sequence number does (in order, gap,
// retransmission, another flow, another TTL, another ack; bit 7 joins
// the datagram to the previous one's UDP_GRO message), and the length.
// It returns the datagrams, grouped into messages, and for each datagram
// the drop reason expected (-1: delivered).
func segmentsFrom(data []byte) (msgs []datagram, pkts [][]byte, reasons []int) {
	seq := uint32(1 << 31)
	var segSize int
	for len(data) >= 4 && len(pkts) < maxCoalescedSegs {
		ctl, how, n := data[0], data[1], int(binary.BigEndian.Uint16(data[2:]))
		data = data[4:]
		s := tcpSpec{v6: ctl&1 != 0, src: podB, dst: podA, ttl: 64, sport: 40000, ack: 1000, window: 502,
			flags: fuzzFlags[ctl>>1&7], opts: tcpTimestamps, id: uint16(len(pkts))}
		if s.v6 {
			s.src, s.dst = pod6B, pod6A
		}
		if ctl&0x20 != 0 {
			s.opts = []byte{1, 1, 8, 10, 0, 0, 0x12, 0x35, 0, 0, 0x56, 0x78} // another TSval
		}
		if ctl&0x40 != 0 {
			s.opts = nil
		}
		spoofed := ctl&0x80 != 0
		if spoofed {
			s.src = netip.MustParseAddr("10.244.3.9")
			if s.v6 {
				s.src = netip.MustParseAddr("fd00:244:0:3::9")
			}
		}
		switch how & 7 {
		case 4:
			seq += 1000
		case 5:
			seq -= uint32(n % 1461)
		case 6:
			s.sport++
		case 7:
			s.ttl = 63
		}
		if n >= 0x8000 {
			n = 1400 // a full segment, so that runs form
		}
		n %= 1461
		s.seq = seq
		s.payload = make([]byte, n)
		for i := range s.payload {
			s.payload[i] = byte(len(pkts)*31 + i*7)
		}
		seq += uint32(n)
		p := s.build()
		coalescible := !s.v6 && s.flags&^tcpPSH == tcpACK && n > 0
		reason := -1
		switch {
		case spoofed:
			reason = dropSpoofedSource
		case ctl&0x10 != 0 && coalescible:
			reason = dropBadChecksum
		}
		if ctl&0x10 != 0 { // corrupt, after the checksum: the payload, or the checksum itself
			if n > 0 {
				p[len(p)-1-int(how)%n] ^= 0x10
			} else {
				p[s.ipHL()+16] ^= 0x10
			}
		}
		pkts, reasons = append(pkts, p), append(reasons, reason)
		// UDP_GRO: datagrams of one size, the last one maybe shorter.
		if last := len(msgs) - 1; how&0x80 != 0 && last >= 0 && segSize > 0 && len(p) <= segSize && len(msgs[last].data)+len(p) <= maxPacket {
			msgs[last].data = append(msgs[last].data, p...)
			if len(p) < segSize {
				segSize = 0 // closed
			}
			continue
		}
		msgs = append(msgs, datagram{addr: peer12, data: bytes.Clone(p), segSize: len(p)})
		segSize = len(p)
	}
	return msgs, pkts, reasons
}

// FuzzCoalesceSequence: whatever sequence of TCP segments a peer sends
// (both families, any flags, lengths, options, sequence numbers, UDP_GRO
// grouping, corrupt or spoofed ones among them), the receiver delivers
// exactly the acceptable ones, in order and unchanged once the kernel
// segments the super-packets again; corrupt segments it would coalesce
// are dropped, every super-packet is within bounds and has a correct
// checksum seed, and nothing unverified is marked valid.
func FuzzCoalesceSequence(f *testing.F) {
	full := []byte{0, 0, 0x80, 0}
	f.Add(bytes.Repeat(full, 10))
	f.Add(append(bytes.Repeat([]byte{0, 0x80, 0x80, 0}, 5), 0, 0x80, 0x01, 0x00))
	f.Add(bytes.Join([][]byte{full, full, {0x10, 0, 0x80, 0}, full, {0x80, 0, 0x80, 0}, full, {1, 0, 2, 0}, {4, 0x80, 0, 0}, full}, nil))
	f.Add(bytes.Join([][]byte{full, {0, 4, 0x80, 0}, {0, 5, 0x80, 0}, {0, 6, 0x80, 0}, {0, 7, 0x80, 0}, {0x20, 0, 0x80, 0}, {0x40, 0, 0x80, 0}}, nil))
	f.Add(bytes.Join([][]byte{full, {0x11, 0x80, 0x80, 0}, {0xc3, 0x80, 1, 0}, {0x0a, 0, 0, 0}, {0x0c, 0, 0, 9}}, nil))
	tun := &recordTUN{}
	x := newReceiver(testBackend(io.Discard), tun, &recordConn{batch: maxCoalescedSegs}, &counters{}, true)
	f.Fuzz(func(t *testing.T, data []byte) {
		msgs, pkts, reasons := segmentsFrom(data)
		if len(msgs) == 0 {
			return
		}
		x.c, tun.out = &counters{}, tun.out[:0]
		for i, m := range msgs {
			x.msgs[i].n = copy(x.msgs[i].buf, m.data)
			x.msgs[i].src, x.msgs[i].segSize = m.addr, m.segSize
		}
		x.deliver(len(msgs))
		var want [][]byte
		drops := map[string]uint64{}
		for i, r := range reasons {
			if r < 0 {
				want = append(want, pkts[i])
			} else {
				drops[dropNames[r]]++
			}
		}
		var got [][]byte
		for _, w := range tun.out {
			got = append(got, expand(t, w)...)
		}
		if len(got) != len(want) {
			t.Fatalf("%d packets delivered, want %d", len(got), len(want))
		}
		for i := range got {
			if !sameSegment(got[i], want[i]) {
				t.Fatalf("packet %d delivered as\n% x\nwant\n% x", i, got[i][:min(len(got[i]), 64)], want[i][:min(len(want[i]), 64)])
			}
		}
		s := Stats{Drops: map[string]uint64{}}
		x.c.addTo(&s)
		for _, n := range dropNames {
			if s.Drops[n] != drops[n] {
				t.Fatalf("drop_%s = %d, want %d", n, s.Drops[n], drops[n])
			}
		}
		if s.RxPackets != uint64(len(want)) {
			t.Fatalf("rx_packets %d, want %d", s.RxPackets, len(want))
		}
	})
}

// peerTable is peer12's view of us: its own lease, and us
// (192.168.50.11:8285) as the peer sending from 10.244.1.0/24 and
// fd00:244:0:1::/64.
func peerTable() *table {
	us := netip.MustParseAddrPort("192.168.50.11:8285")
	return newTable(netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("fd00:244::/56"),
		netip.MustParsePrefix("10.244.2.0/24"), netip.MustParsePrefix("fd00:244:0:2::/64"),
		[]peer{{addr: us, subnet: netip.MustParsePrefix("10.244.1.0/24")}, {addr: us, subnet: netip.MustParsePrefix("fd00:244:0:1::/64")}})
}

// FuzzSplitRoundTrip: a TSO super-packet from the TUN (either family, any
// length, segment size, TCP options and the flags the kernel puts on
// one) leaves as segments no longer than the segment size, each with valid
// checksums, consecutive sequence numbers and the flags of its place (FIN
// and PSH last, CWR first), to peer12; peer12's receiver, given them as
// one UDP_GRO message per sent message or one datagram each, delivers the
// same payload in order and drops nothing.
func FuzzSplitRoundTrip(f *testing.F) {
	f.Add(uint16(64000), uint16(1400), uint8(tcpPSH), uint8(3), false, uint32(5000), true, true)
	f.Add(uint16(64000), uint16(1400), uint8(tcpPSH|tcpFIN), uint8(3), true, uint32(1<<32-100), true, false)
	f.Add(uint16(3000), uint16(100), uint8(tcpCWR|tcpECE), uint8(0), false, uint32(0), false, false)
	f.Add(uint16(1), uint16(1), uint8(0), uint8(10), true, uint32(7), false, true)
	snd, rcv := &recordConn{batch: recvBatch}, &recordConn{batch: 64}
	x := newSender(testBackend(io.Discard), &recordTUN{}, snd, &counters{})
	peerB := testBackend(io.Discard)
	peerB.table.Store(peerTable())
	tun := &recordTUN{}
	y := newReceiver(peerB, tun, rcv, &counters{}, true)
	us := netip.MustParseAddrPort("192.168.50.11:8285")
	f.Fuzz(func(t *testing.T, plen, mss uint16, flags, nopts uint8, v6 bool, seq uint32, gso, gro bool) {
		s := tcpSpec{v6: v6, src: podA, dst: podB, ttl: 64, sport: 40000, seq: seq, ack: 1, window: 502,
			flags: tcpACK | flags&(tcpPSH|tcpFIN|tcpCWR|tcpECE), opts: bytes.Repeat([]byte{1}, 4*int(nopts%11))}
		if v6 {
			s.src, s.dst = pod6A, pod6B
		}
		hdrLen := s.ipHL() + tcpHeaderLen + len(s.opts)
		s.payload = pattern(max(int(plen)%(maxPacket-hdrLen), 1))
		seg := 64 + int(mss)%1400
		super := s.build()
		src, dst := super[12:16], super[16:20]
		if v6 {
			src, dst = super[8:24], super[24:40]
		}
		// As TSO hands it over: only the pseudo-header sum in the field.
		binary.BigEndian.PutUint16(super[s.ipHL()+16:], checksumFold(pseudoHeaderSum(src, dst, protoTCP, len(super)-s.ipHL())))
		h := vnetHdr{flags: vnetNeedsCsum, gsoType: gsoTCPv4, hdrLen: uint16(hdrLen), gsoSize: uint16(seg), csumStart: uint16(s.ipHL()), csumOffset: 16}
		if v6 {
			h.gsoType = gsoTCPv6
		}
		snd.out, tun.out, x.c, y.c = snd.out[:0], tun.out[:0], &counters{}, &counters{}
		x.b.gso.Store(gso)
		x.sizes[0] = copy(x.bufs[0], withHdr(h, super)) - vnetHdrLen
		x.forward(1)
		wire := datagrams(t, snd.out, peer12)
		checkWire(t, wire, s, seg)
		if gro {
			feed(y, us, snd.out)
		} else {
			var each []datagram
			for _, d := range wire {
				each = append(each, datagram{data: d})
			}
			feed(y, us, each)
		}
		var got []byte
		for _, w := range tun.out {
			for _, p := range expand(t, w) {
				if !transportValid(p) {
					t.Fatal("a delivered segment does not verify")
				}
				got = append(got, p[hdrLen:]...)
			}
		}
		st := Stats{Drops: map[string]uint64{}}
		y.c.addTo(&st)
		if !bytes.Equal(got, s.payload) || st.RxPackets != uint64(len(wire)) {
			t.Fatalf("%d of %d payload bytes back, rx_packets %d of %d, drops %v", len(got), len(s.payload), st.RxPackets, len(wire), st.Drops)
		}
	})
}

// feed hands the messages to the receiver from from, as many per wake-up
// as it takes.
func feed(x *receiver, from netip.AddrPort, msgs []datagram) {
	for len(msgs) > 0 {
		n := min(len(msgs), len(x.msgs))
		for i, m := range msgs[:n] {
			x.msgs[i].n = copy(x.msgs[i].buf, m.data)
			x.msgs[i].src, x.msgs[i].segSize = from, m.segSize
		}
		x.deliver(n)
		msgs = msgs[n:]
	}
}

// checkWire checks the segments the sender cut from the super-packet of s
// with segment size seg.
func checkWire(t *testing.T, wire [][]byte, s tcpSpec, seg int) {
	t.Helper()
	var payload []byte
	hdrLen := s.ipHL() + tcpHeaderLen + len(s.opts)
	for i, p := range wire {
		in, reason, ok := decode(p)
		if !ok || in.src != s.src || in.dst != s.dst || len(p) > hdrLen+seg || len(p) <= hdrLen {
			t.Fatalf("segment %d: %d bytes (%s), %+v", i, len(p), dropNames[reason], in)
		}
		if !transportValid(p) {
			t.Fatalf("segment %d: a checksum does not verify", i)
		}
		tcp := p[s.ipHL():]
		if got, want := binary.BigEndian.Uint32(tcp[4:]), s.seq+uint32(len(payload)); got != want {
			t.Fatalf("segment %d: seq %d, want %d", i, got, want)
		}
		f := s.flags
		if i < len(wire)-1 {
			f &^= tcpFIN | tcpPSH
		}
		if i > 0 {
			f &^= tcpCWR
		}
		if tcp[13] != f {
			t.Fatalf("segment %d of %d: flags %#x, want %#x", i, len(wire), tcp[13], f)
		}
		payload = append(payload, p[hdrLen:]...)
	}
	if !bytes.Equal(payload, s.payload) {
		t.Fatalf("the segments carry %d bytes, the super-packet %d", len(payload), len(s.payload))
	}
}

// FuzzICMPUnreachable: a packet from the TUN (either family) for a
// Network address no lease covers is answered, through the sender's own
// path, with at most one ICMP or ICMPv6 destination unreachable: from that
// address to the packet's source, quoting the packet's start, within the
// minimum MTU, with valid checksums, and never about an ICMP error, a
// later fragment or to a source that is not a global unicast address.
func FuzzICMPUnreachable(f *testing.F) {
	noLease4, noLease6 := netip.MustParseAddr("10.244.77.1"), netip.MustParseAddr("fd00:244:0:77::1")
	f.Add(icmpEcho(podA, noLease4, 30))
	f.Add(icmp6Echo(pod6A, noLease6, 30))
	f.Add(icmp6Echo(pod6A, noLease6, 1400))
	f.Add(icmp6Echo(netip.MustParseAddr("fe80::1"), noLease6, 8))
	f.Add(tcpSpec{v6: true, src: pod6A, dst: noLease6, ttl: 64, flags: tcpSYN}.build())
	f.Add(tcpSpec{src: podA, dst: noLease4, ttl: 64, flags: tcpSYN}.build())
	unreach := icmp6Echo(pod6A, noLease6, 60)
	unreach[40] = 1 // an ICMPv6 error itself
	f.Add(unreach)
	tun := &recordTUN{}
	x := newSender(testBackend(io.Discard), tun, &recordConn{batch: recvBatch}, &counters{})
	f.Fuzz(func(t *testing.T, pkt []byte) {
		if len(pkt) > maxPacket {
			return
		}
		tun.out, x.c = tun.out[:0], &counters{}
		x.sizes[0] = copy(x.bufs[0], withHdr(vnetHdr{}, pkt)) - vnetHdrLen
		x.forward(1)
		_, in, reason := routeFromTun(x.b.table.Load(), pkt)
		if len(tun.out) == 0 {
			if reason == dropNoRoute && mayAnswer(pkt, in) {
				t.Fatalf("no ICMP error for % x", pkt[:min(len(pkt), 48)])
			}
			return
		}
		if len(tun.out) > 1 || reason != dropNoRoute || x.c.icmp.Load() != 1 {
			t.Fatalf("%d messages for one packet (reason %s)", len(tun.out), dropNames[reason])
		}
		checkUnreachable(t, tun.out[0], pkt, in)
	})
}

// mayAnswer reports whether pkt, for an address without a lease, is one an
// ICMP error must answer (RFC 1122 3.2.2, RFC 4443 2.4).
func mayAnswer(pkt []byte, in inner) bool {
	if !in.src.IsGlobalUnicast() {
		return false
	}
	if in.version == 6 {
		return !in.dst.IsMulticast() && !(in.proto == protoICMPv6 && len(pkt) > in.hdrLen && pkt[in.hdrLen] < 128)
	}
	isErr := in.proto == protoICMP && len(pkt) > in.hdrLen && bytes.IndexByte([]byte{3, 4, 5, 11, 12}, pkt[in.hdrLen]) >= 0
	return binary.BigEndian.Uint16(pkt[6:8])&0x1fff == 0 && !isErr
}

// checkUnreachable checks the ICMP error w (virtio header, packet) sent
// back for pkt.
func checkUnreachable(t *testing.T, w, pkt []byte, in inner) {
	t.Helper()
	if !bytes.Equal(w[:vnetHdrLen], make([]byte, vnetHdrLen)) {
		t.Fatal("ICMP error with a virtio header")
	}
	m := w[vnetHdrLen:]
	rin, _, ok := decode(m)
	if !ok || rin.version != in.version || rin.src != in.dst || rin.dst != in.src || !in.src.IsGlobalUnicast() {
		t.Fatalf("reply %+v to %+v", rin, in)
	}
	msg := m[rin.hdrLen:]
	quote, typ, limit := min(len(pkt), in.hdrLen+8), uint8(3), 576
	if in.version == 6 {
		quote, typ, limit = min(len(pkt), icmp6Quote), 1, 1280
	}
	if len(m) > limit || len(msg) != 8+quote || !bytes.Equal(msg[8:], pkt[:quote]) || msg[0] != typ || msg[1] != 0 {
		t.Fatalf("reply of %d bytes, type %d code %d, quoting % x", len(m), msg[0], msg[1], msg[8:min(len(msg), 24)])
	}
	if !mayAnswer(pkt, in) {
		t.Fatalf("answered a packet that must not be: % x", pkt[:min(len(pkt), 48)])
	}
	if in.version == 4 && (!ipv4Valid(m) || refChecksum(msg) != 0 || rin.proto != protoICMP) {
		t.Fatal("bad ICMP checksums")
	}
	if in.version == 6 && (rin.proto != protoICMPv6 || refChecksum(transportPseudo(m, ipv6HeaderLen)) != 0) {
		t.Fatal("bad ICMPv6 checksum")
	}
}
