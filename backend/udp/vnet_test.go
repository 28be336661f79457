package udp

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// segments cuts a super-packet as the sender does and returns the packets
// as they go on the wire.
func segments(t testing.TB, super []byte, h vnetHdr) [][]byte {
	s, ok := splitTCP(super, h)
	if !ok {
		t.Fatalf("splitTCP refused the packet")
	}
	var segs [][]byte
	for i := range s.count {
		hdr := make([]byte, s.hdrLen)
		s.header(super, i, hdr)
		seg := append(hdr, s.payloadOf(super, i)...)
		if i < s.count-1 && len(seg) != s.segLen() {
			t.Fatalf("segment %d: %d bytes, segLen %d", i, len(seg), s.segLen())
		}
		segs = append(segs, seg)
	}
	return segs
}

// joined is a coalesced super-packet as the TUN gets it from writev.
func joined(parts [][]byte) []byte { return bytes.Join(parts, nil) }

// clones copies packets, since the coalescer rewrites the first one.
func clones(ps [][]byte) [][]byte {
	out := make([][]byte, len(ps))
	for i, p := range ps {
		out[i] = bytes.Clone(p)
	}
	return out
}

func TestSegmentTCP(t *testing.T) {
	payload := pattern(64000)
	h, super := tsoPacket(payload, 1420)
	segs := segments(t, super, h)
	if len(segs) != 46 {
		t.Fatalf("%d segments, want 46", len(segs))
	}
	var got []byte
	for i, s := range segs {
		in, reason, ok := decode(s)
		if !ok {
			t.Fatalf("segment %d: %s", i, dropNames[reason])
		}
		if !ipv4Valid(s) || !tcpValid(s) {
			t.Fatalf("segment %d: bad checksum (ip %v tcp %v)", i, ipv4Valid(s), tcpValid(s))
		}
		tcp := s[in.hdrLen:]
		if seq := binary.BigEndian.Uint32(tcp[4:]); seq != 5000+uint32(i*1420) {
			t.Fatalf("segment %d: seq %d", i, seq)
		}
		if id := binary.BigEndian.Uint16(s[4:]); id != 100+uint16(i) {
			t.Fatalf("segment %d: id %d", i, id)
		}
		wantFlags := uint8(tcpACK)
		if i == len(segs)-1 {
			wantFlags |= tcpPSH
		}
		if tcp[13] != wantFlags {
			t.Fatalf("segment %d: flags %#x", i, tcp[13])
		}
		if !bytes.Equal(tcp[20:32], tcpTimestamps) {
			t.Fatalf("segment %d: options % x", i, tcp[20:32])
		}
		if i < len(segs)-1 && len(s) != 20+32+1420 {
			t.Fatalf("segment %d: length %d", i, len(s))
		}
		got = append(got, tcp[32:]...)
	}
	if !bytes.Equal(got, payload) {
		t.Fatal("payload differs after segmentation")
	}
}

func TestSplitTCPRefuses(t *testing.T) {
	h, super := tsoPacket(pattern(5000), 1000)
	bad := h
	bad.gsoSize = 0
	if _, ok := splitTCP(super, bad); ok {
		t.Error("gso size 0 accepted")
	}
	bad = h
	bad.gsoType = gsoTCPv6
	if _, ok := splitTCP(super, bad); ok {
		t.Error("TCPv6 type on an IPv4 packet accepted")
	}
	if _, ok := splitTCP(super[:30], h); ok {
		t.Error("cut TCP header accepted")
	}
	udp := icmpEcho(podA, podB, 100)
	udp[9] = 17
	if _, ok := splitTCP(udp, h); ok {
		t.Error("a UDP packet with TCP GSO accepted")
	}
}

func TestCompleteChecksum(t *testing.T) {
	want := tcp4(podA, podB, 1, 77, tcpACK, pattern(300))
	p := append([]byte{}, want...)
	tcp := p[20:]
	binary.BigEndian.PutUint16(tcp[16:], checksumFold(pseudoHeaderSum(p[12:16], p[16:20], protoTCP, len(tcp))))
	if !completeChecksum(p, vnetHdr{flags: vnetNeedsCsum, csumStart: 20, csumOffset: 16}) {
		t.Fatal("refused")
	}
	if !bytes.Equal(p, want) {
		t.Fatal("checksum differs from the reference")
	}
	if completeChecksum(p, vnetHdr{flags: vnetNeedsCsum, csumStart: 20, csumOffset: 2000}) {
		t.Fatal("offset past the end accepted")
	}
}

func TestVnetHdrRoundTrip(t *testing.T) {
	h := vnetHdr{flags: 1, gsoType: 4, hdrLen: 74, gsoSize: 1408, csumStart: 40, csumOffset: 16}
	b := make([]byte, vnetHdrLen)
	h.encode(b)
	var g vnetHdr
	g.decode(b)
	if g != h {
		t.Fatalf("%+v != %+v", g, h)
	}
}

// TestCoalesceRoundTrip: segments from the wire are merged into one
// super-packet whose virtio header, once the kernel (here: segmentTCP)
// segments it again, gives back exactly the same packets.
func TestCoalesceRoundTrip(t *testing.T) {
	h, super := tsoPacket(pattern(40000), 1420)
	segs := segments(t, super, h)
	co := newCoalescer()
	in := clones(segs)
	co.start(in[0])
	for i, s := range in[1:] {
		if !co.add(s) {
			t.Fatalf("segment %d not coalesced", i+1)
		}
	}
	parts, n := co.finish()
	out := joined(parts)
	if n != len(segs) {
		t.Fatalf("%d segments merged, want %d", n, len(segs))
	}
	var vh vnetHdr
	vh.decode(out)
	pkt := out[vnetHdrLen:]
	if vh.gsoType != gsoTCPv4 || vh.gsoSize != 1420 || vh.flags != vnetNeedsCsum || vh.csumStart != 20 || vh.csumOffset != 16 || vh.hdrLen != 52 {
		t.Fatalf("virtio header %+v", vh)
	}
	if !ipv4Valid(pkt) || int(binary.BigEndian.Uint16(pkt[2:])) != len(pkt) {
		t.Fatal("bad IPv4 header on the super-packet")
	}
	if pkt[33]&tcpPSH == 0 {
		t.Fatal("PSH of the last segment lost")
	}
	// What the kernel does with NEEDS_CSUM gives the reference checksum.
	full := append([]byte{}, pkt...)
	completeChecksum(full, vh)
	if !tcpValid(full) {
		t.Fatal("TCP checksum seed is wrong")
	}
	again := segments(t, pkt, vh)
	if len(again) != len(segs) {
		t.Fatalf("resegmented into %d, want %d", len(again), len(segs))
	}
	for i := range segs {
		if !bytes.Equal(again[i], segs[i]) {
			t.Fatalf("segment %d differs after the round trip", i)
		}
	}
}

func TestCoalesceBoundaries(t *testing.T) {
	p := func(seq uint32, flags uint8, n int) []byte { return tcp4(podA, podB, 1, seq, flags, pattern(n)) }
	co := newCoalescer()
	co.start(p(0, tcpACK, 1000))
	if co.add(p(2000, tcpACK, 1000)) {
		t.Error("gap in sequence numbers coalesced")
	}
	other := tcp4(podB, podA, 1, 1000, tcpACK, pattern(1000))
	if co.add(other) {
		t.Error("another flow coalesced")
	}
	if co.add(p(1000, tcpACK, 1001)) {
		t.Error("segment longer than the first coalesced")
	}
	if !co.add(p(1000, tcpACK, 500)) {
		t.Error("short last segment not coalesced")
	}
	if co.add(p(1500, tcpACK, 1000)) {
		t.Error("segment after a short one coalesced")
	}
	if _, n := co.finish(); n != 2 {
		t.Errorf("%d segments", n)
	}
	co.start(p(0, tcpACK|tcpPSH, 1000))
	if co.add(p(1000, tcpACK, 1000)) {
		t.Error("segment after PSH coalesced")
	}
	parts, n := co.finish()
	out := joined(parts)
	var vh vnetHdr
	vh.decode(out)
	if n != 1 || vh.gsoType != gsoNone || !bytes.Equal(out[vnetHdrLen:], p(0, tcpACK|tcpPSH, 1000)) {
		t.Errorf("a lone segment must go out unchanged: n=%d hdr=%+v", n, vh)
	}
	for _, c := range []struct {
		name string
		pkt  []byte
	}{
		{"SYN", p(0, tcpSYN|tcpACK, 10)},
		{"FIN", p(0, tcpFIN|tcpACK, 10)},
		{"pure ACK", p(0, tcpACK, 0)},
		{"ICMP", icmpEcho(podA, podB, 100)},
	} {
		in, _, _ := decode(c.pkt)
		if coalescible(c.pkt, in) {
			t.Errorf("%s is coalescible", c.name)
		}
	}
}
