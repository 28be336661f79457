package udp

import (
	"encoding/binary"
	"net/netip"
	"testing"
)

// The fuzz targets run their seeds in every go test; run one for real with
//
//	go test ./backend/udp/ -run '^$' -fuzz FuzzAcceptFromWire -fuzztime 30s

// seeds are real packets as the kernel and peers produce them.
func seeds() [][]byte {
	_, super := tsoPacket(pattern(3000), 1000)
	return [][]byte{
		icmpEcho(podB, podA, 56),
		icmpEcho(podB, podA, 1400),
		tcp4(podB, podA, 1, 1, tcpACK, pattern(1400)),
		tcp4(podB, podA, 1, 1, tcpSYN, nil),
		super,
		[]byte("zzz, not a packet"),
		{0x45, 0, 0},
	}
}

// FuzzAcceptFromWire: the receive decision never panics, and what it
// accepts is one whole IP packet for our lease, from a peer's PublicIP and
// port, with an inner source in that peer's subnets.
func FuzzAcceptFromWire(f *testing.F) {
	for _, s := range seeds() {
		f.Add(s, uint8(0))
	}
	f.Add(icmpEcho(netip.MustParseAddr("10.244.3.9"), podA, 20), uint8(0))
	f.Add(icmp6Echo(pod6B, pod6A, 20), uint8(0))
	f.Add(icmpEcho(podB, podA, 20), uint8(2))
	tb := testTable()
	froms := []netip.AddrPort{peer12, peer13, netip.AddrPortFrom(peer12.Addr(), 40000), stranger}
	f.Fuzz(func(t *testing.T, b []byte, from uint8) {
		src := froms[int(from)%len(froms)]
		in, reason, ok := acceptFromWire(tb, src, b)
		if !ok {
			if reason < 0 || reason >= numDrops {
				t.Fatalf("reason %d", reason)
			}
			return
		}
		o, _ := tb.origin(src)
		if o == nil || !tb.ours(in.dst) || !o.owns(in.src) {
			t.Fatalf("accepted %+v from %s", in, src)
		}
		switch in.version {
		case 4:
			if int(binary.BigEndian.Uint16(b[2:])) != len(b) || in.hdrLen < 20 || in.hdrLen > len(b) {
				t.Fatalf("accepted bad IPv4 lengths: % x", b)
			}
		case 6:
			if 40+int(binary.BigEndian.Uint16(b[4:])) != len(b) {
				t.Fatalf("accepted bad IPv6 length: % x", b)
			}
		default:
			t.Fatalf("version %d", in.version)
		}
		// Whatever is accepted and verifies may go through the coalescer.
		if coalescible(b, in) && segmentValid(b) {
			co := newCoalescer()
			co.start(b)
			co.add(b)
			co.finish()
		}
	})
}

// FuzzRouteFromTun: the send decision and the ICMP reply never panic, a
// peer is only chosen for a destination inside its lease, and every ICMP
// message is a valid IPv4 packet back to the sender.
func FuzzRouteFromTun(f *testing.F) {
	for _, s := range seeds() {
		f.Add(s)
	}
	f.Add(icmpEcho(podA, netip.MustParseAddr("10.244.77.1"), 30))
	tb := testTable()
	out := make([]byte, 128)
	f.Fuzz(func(t *testing.T, b []byte) {
		p, in, reason := routeFromTun(tb, b)
		if p != nil {
			if !p.subnet.Contains(in.dst) {
				t.Fatalf("%s sent to the peer of %s", in.dst, p.subnet)
			}
			return
		}
		if reason != dropNoRoute {
			return
		}
		n := icmpUnreachable(out, in.dst, b, in)
		if n == 0 {
			return
		}
		rin, _, ok := decode(out[:n])
		if !ok || rin.dst != in.src || !ipv4Valid(out[:n]) || refChecksum(out[20:n]) != 0 {
			t.Fatalf("bad ICMP reply % x", out[:n])
		}
	})
}

// FuzzSplitTCP: any virtio header and packet from the TUN either is
// refused or cuts into segments whose headers decode and whose payloads
// add up to the super-packet's.
func FuzzSplitTCP(f *testing.F) {
	h, super := tsoPacket(pattern(5000), 1400)
	f.Add(super, h.gsoType, h.gsoSize, h.csumStart)
	f.Add(super, uint8(gsoTCPv4), uint16(1), uint16(20))
	f.Add(icmpEcho(podA, podB, 100), uint8(gsoTCPv4), uint16(50), uint16(20))
	hdr := make([]byte, 1<<16)
	f.Fuzz(func(t *testing.T, pkt []byte, gsoType uint8, gsoSize, csumStart uint16) {
		if len(pkt) > maxPacket {
			return
		}
		h := vnetHdr{flags: vnetNeedsCsum, gsoType: gsoType, gsoSize: gsoSize, csumStart: csumStart, csumOffset: 16}
		s, ok := splitTCP(pkt, h)
		if !ok {
			completeChecksum(pkt, h) // must not panic either
			return
		}
		total := 0
		for i := range min(s.count, 200) {
			s.header(pkt, i, hdr[:s.hdrLen])
			if !s.v6 && !ipv4Valid(hdr[:s.hdrLen]) {
				t.Fatalf("segment %d: bad IPv4 checksum", i)
			}
			total += len(s.payloadOf(pkt, i))
		}
		if s.count <= 200 && total != s.payload {
			t.Fatalf("payloads add up to %d, want %d", total, s.payload)
		}
	})
}
