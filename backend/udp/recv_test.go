package udp

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// flow returns n consecutive in-order segments of one TCP flow from
// peer12's pod to ours, mss bytes of payload each but the last (which
// carries PSH and half as much), as the peer's kernel sends them.
func flow(n, mss int) (segs [][]byte, payload []byte) { return flowAt(n, mss, 3000) }

// flowAt is flow with the first sequence number seq.
func flowAt(n, mss int, seq uint32) (segs [][]byte, payload []byte) {
	payload = pattern((n-1)*mss + mss/2)
	for i := range n {
		flags := uint8(tcpACK)
		if i == n-1 {
			flags |= tcpPSH
		}
		pl := payload[i*mss : min((i+1)*mss, len(payload))]
		segs = append(segs, tcp4(podB, podA, uint16(7+i), seq+uint32(i*mss), flags, pl))
	}
	return segs, payload
}

// TestReceiveCoalesces: consecutive segments of a TCP flow, whether the
// kernel hands them over as one UDP_GRO message or as separate datagrams
// of one batch, reach the TUN as one super-packet with a GSO virtio
// header, in one Write with what follows them; the kernel's segmentation
// of it gives back exactly the segments that were sent.
func TestReceiveCoalesces(t *testing.T) {
	for _, gro := range []bool{true, false} {
		segs, payload := flow(10, 1400)
		l := newLoopTest(t, true)
		if gro {
			l.conn.In <- datagram{addr: peer12, data: bytes.Join(segs, nil), segSize: len(segs[0])}
		} else {
			for _, s := range segs {
				l.conn.In <- datagram{addr: peer12, data: s}
			}
		}
		l.recvMarker()
		l.startReceiver(true) // after queueing: all of it is one batch
		got := l.written()
		if len(got) != 1 {
			t.Fatalf("gro %v: %d packets written, want one super-packet", gro, len(got))
		}
		var vh vnetHdr
		vh.decode(got[0])
		pkt := got[0][vnetHdrLen:]
		if vh != (vnetHdr{flags: vnetNeedsCsum, gsoType: gsoTCPv4, hdrLen: 52, gsoSize: 1400, csumStart: 20, csumOffset: 16}) {
			t.Errorf("gro %v: virtio header %+v", gro, vh)
		}
		if !ipv4Valid(pkt) || int(pkt[2])<<8|int(pkt[3]) != len(pkt) || len(pkt) != 52+len(payload) {
			t.Errorf("gro %v: super-packet IPv4 header: length %d, %d bytes", gro, int(pkt[2])<<8|int(pkt[3]), len(pkt))
		}
		full := bytes.Clone(pkt)
		completeChecksum(full, vh) // what the kernel does with NEEDS_CSUM
		if !tcpValid(full) {
			t.Errorf("gro %v: the TCP checksum seed is wrong", gro)
		}
		again := segments(t, pkt, vh)
		if len(again) != len(segs) {
			t.Fatalf("gro %v: re-segmented into %d, want %d", gro, len(again), len(segs))
		}
		for i := range segs {
			if !bytes.Equal(again[i], segs[i]) {
				t.Errorf("gro %v: segment %d differs after the round trip", gro, i)
			}
		}
		l.stop()
		if l.tun.writes != 1 {
			t.Errorf("gro %v: %d TUN writes for one batch, want 1", gro, l.tun.writes)
		}
		if s := l.stats(); s.RxPackets != 11 || s.RxBytes != uint64(52*10+len(payload)+len(rxMarker)) {
			t.Errorf("gro %v: rx_packets %d rx_bytes %d", gro, s.RxPackets, s.RxBytes)
		}
		l.wantDrops(nil)
	}
}

// TestReceiveTwoSuperPackets: two runs in one batch become two
// super-packets, each with its own virtio header.
func TestReceiveTwoSuperPackets(t *testing.T) {
	a, _ := flowAt(4, 1400, 3000)
	b, _ := flowAt(3, 1000, 900000)
	l := newLoopTest(t, true)
	l.conn.In <- datagram{addr: peer12, data: bytes.Join(a, nil), segSize: len(a[0])}
	l.conn.In <- datagram{addr: peer12, data: bytes.Join(b, nil), segSize: len(b[0])}
	l.recvMarker()
	l.startReceiver(true)
	got := l.written()
	if len(got) != 2 {
		t.Fatalf("%d packets written, want 2", len(got))
	}
	for i, want := range [][][]byte{a, b} {
		var vh vnetHdr
		vh.decode(got[i])
		again := segments(t, got[i][vnetHdrLen:], vh)
		if len(again) != len(want) || !bytes.Equal(bytes.Join(again, nil), bytes.Join(want, nil)) {
			t.Errorf("super-packet %d (header %+v) does not give back its %d segments", i, vh, len(want))
		}
	}
	l.stop()
	l.wantDrops(nil)
}

// TestReceiveWithoutVnet: a TUN without IFF_VNET_HDR takes no GSO
// packets, so the segments are written one by one, unchanged, with no
// header.
func TestReceiveWithoutVnet(t *testing.T) {
	segs, _ := flow(5, 1400)
	l := newLoopTest(t, false)
	l.startReceiver(false)
	l.conn.In <- datagram{addr: peer12, data: bytes.Join(segs, nil), segSize: len(segs[0])}
	l.recvMarker()
	got := l.written()
	if len(got) != len(segs) {
		t.Fatalf("%d packets written, want %d", len(got), len(segs))
	}
	for i := range segs {
		if !bytes.Equal(got[i][vnetHdrLen:], segs[i]) {
			t.Errorf("segment %d changed", i)
		}
	}
	l.stop()
	if l.tun.badHeader != 0 {
		t.Errorf("%d packets with a non-empty virtio header written to a TUN without one", l.tun.badHeader)
	}
}

// TestReceiveIPv6: IPv6 inner packets from the IPv4 underlay reach the
// TUN unchanged behind an empty header (they are never coalesced).
func TestReceiveIPv6(t *testing.T) {
	l := newLoopTest(t, true)
	l.startReceiver(true)
	echo := icmp6Echo(pod6B, pod6A, 64)
	var tcp [][]byte
	for i := range 3 {
		tcp = append(tcp, tcp6(pod6B, pod6A, 100+uint32(i*1000), tcpACK, pattern(1000)))
	}
	l.conn.In <- datagram{addr: peer12, data: echo}
	l.conn.In <- datagram{addr: peer12, data: bytes.Join(tcp, nil), segSize: len(tcp[0])}
	l.recvMarker()
	got := l.written()
	want := append([][]byte{echo}, tcp...)
	if len(got) != len(want) {
		t.Fatalf("%d packets written, want %d", len(got), len(want))
	}
	for i := range want {
		if !bytes.Equal(got[i], withHdr(vnetHdr{}, want[i])) {
			t.Errorf("packet %d: % x", i, got[i][:min(len(got[i]), 24)])
		}
	}
	l.stop()
	l.wantDrops(nil)
}

// TestReceiveDrops: what the receiver does not deliver is counted by
// reason, a failed TUN write is logged once, and traffic behind it flows
// on.
func TestReceiveDrops(t *testing.T) {
	l := newLoopTest(t, true)
	refused := icmpEcho(podB, podA, 123)
	l.tun.writeErr = func(pkt []byte) error {
		if bytes.Equal(pkt, refused) {
			return unix.EIO
		}
		return nil
	}
	l.startReceiver(true)
	echo := icmpEcho(podB, podA, 56)
	three := bytes.Repeat(echo, 3)
	for _, d := range []datagram{
		{addr: stranger, data: three, segSize: len(echo)},                                 // not_peer, 3 datagrams
		{addr: stranger, data: echo},                                                      // not_peer
		{addr: peer12, data: nil},                                                         // truncated: empty
		{addr: peer12, data: echo[:19]},                                                   // truncated
		{addr: peer12, data: append(bytes.Clone(echo), 0)},                                // malformed: IP length
		{addr: peer12, data: []byte("zzz, not a packet")},                                 // not_ip
		{addr: peer12, data: icmpEcho(podB, netip.MustParseAddr("10.244.3.9"), 8)},        // not_our_subnet
		{addr: peer12, data: append(bytes.Clone(echo), echo[:30]...), segSize: len(echo)}, // one good, one truncated
		{addr: peer12, data: refused},                                                     // tun_write_error
		{addr: peer12, data: refused},                                                     // tun_write_error
	} {
		l.conn.In <- d
	}
	l.recvMarker()
	got := l.written()
	if len(got) != 1 || !bytes.Equal(got[0][vnetHdrLen:], echo) {
		t.Errorf("%d packets written, want only the good half of the GRO message", len(got))
	}
	l.stop()
	l.wantDrops(map[string]uint64{"not_peer": 4, "truncated": 3, "malformed": 1, "not_ip": 1, "not_our_subnet": 1, "tun_write_error": 2})
	if s := l.stats(); s.RxPackets != 4 {
		t.Errorf("rx_packets %d, want 4 (the good one, the two refused by the TUN, the marker)", s.RxPackets)
	}
	if n := strings.Count(l.logs.String(), "writing to the TUN device failed"); n != 1 {
		t.Errorf("TUN write errors logged %d times, want once:\n%s", n, l.logs.String())
	}
}

// TestReceiveForged: datagrams from a peer's address but another port,
// with an inner source outside the sending peer's subnets, or with a TCP
// checksum that does not verify never reach the TUN; each is counted by
// its reason, the offender is recorded for the warning, and the traffic
// of the same peer around them flows on (the bad segment in the middle of
// a flow splits it into two super-packets).
func TestReceiveForged(t *testing.T) {
	l := newLoopTest(t, true)
	l.startReceiver(true)
	echo := icmpEcho(podB, podA, 56)
	wrongPort := netip.AddrPortFrom(peer12.Addr(), 40000)
	spoofed := icmpEcho(netip.MustParseAddr("10.244.3.9"), podA, 56) // peer13's pod, from peer12
	segs, payload := flow(6, 1400)
	segs[2] = bytes.Clone(segs[2])
	segs[2][len(segs[2])-1] ^= 0x55 // payload corrupted after the checksum was computed
	badIP := bytes.Clone(segs[0])
	badIP[8]-- // TTL changed without the IPv4 header checksum
	for _, d := range []datagram{
		{addr: wrongPort, data: bytes.Repeat(echo, 3), segSize: len(echo)},                // wrong_port, 3 datagrams
		{addr: peer12, data: spoofed},                                                     // spoofed_source
		{addr: peer13, data: echo},                                                        // spoofed_source: peer12's pod, from peer13
		{addr: peer12, data: icmp6Echo(netip.MustParseAddr("fd00:244:0:3::9"), pod6A, 8)}, // spoofed_source
		{addr: peer12, data: badIP},                                                       // bad_checksum
		{addr: peer12, data: bytes.Join(segs, nil), segSize: len(segs[0])},                // 5 good, 1 bad_checksum
		{addr: peer12, data: echo},                                                        // accepted
	} {
		l.conn.In <- d
	}
	l.recvMarker()
	got := l.written()
	if len(got) != 3 {
		t.Fatalf("%d packets written, want 3 (two super-packets around the bad segment, the echo)", len(got))
	}
	var rx []byte
	for i, want := range [][][]byte{segs[:2], segs[3:]} {
		var vh vnetHdr
		vh.decode(got[i])
		again := segments(t, got[i][vnetHdrLen:], vh)
		if !bytes.Equal(bytes.Join(again, nil), bytes.Join(want, nil)) {
			t.Errorf("super-packet %d does not carry its %d segments", i, len(want))
		}
		for _, s := range again {
			rx = append(rx, s[ipv4HeaderLen+tcpHeaderLen+len(tcpTimestamps):]...)
		}
	}
	if bad := payload[2*1400 : 3*1400]; !bytes.Equal(rx, bytes.Join([][]byte{payload[:2*1400], payload[3*1400:]}, nil)) || bytes.Contains(rx, bad) {
		t.Error("the payload delivered is not the flow's without the corrupt segment")
	}
	if !bytes.Equal(got[2][vnetHdrLen:], echo) {
		t.Error("the good echo after the forged datagrams is not delivered")
	}
	l.stop()
	l.wantDrops(map[string]uint64{"wrong_port": 3, "spoofed_source": 3, "bad_checksum": 2})
	if o := &l.c.last[dropWrongPort]; o.from != wrongPort {
		t.Errorf("wrong_port offender %s, want %s", o.from, wrongPort)
	}
	// The last spoofed datagram: IPv6, from peer12, whose first subnet is its IPv4 one.
	if o := &l.c.last[dropSpoofedSource]; o.from != peer12 || o.src != netip.MustParseAddr("fd00:244:0:3::9") || o.subnet != netip.MustParsePrefix("10.244.2.0/24") {
		t.Errorf("spoofed_source offender %+v", o)
	}
	if o := &l.c.last[dropBadChecksum]; o.from != peer12 || o.src != podB {
		t.Errorf("bad_checksum offender %s %s", o.from, o.src)
	}
}

// TestReceiveMarksOnlyVerified: a lone TCP segment (not merged with
// another) goes out as it came; it is marked DATA_VALID only because it
// was verified. Packets that are not coalesced (IPv6, ICMP, SYN) carry
// no flag: the kernel checks them.
func TestReceiveMarksOnlyVerified(t *testing.T) {
	l := newLoopTest(t, true)
	l.startReceiver(true)
	lone := tcp4(podB, podA, 1, 5000, tcpACK|tcpPSH, pattern(300))
	syn := tcp4(podB, podA, 2, 9000, tcpSYN, nil)
	v6 := tcp6(pod6B, pod6A, 100, tcpACK, pattern(300))
	for _, p := range [][]byte{lone, syn, v6} {
		l.conn.In <- datagram{addr: peer12, data: p}
	}
	l.recvMarker()
	got := l.written()
	if len(got) != 3 {
		t.Fatalf("%d packets written, want 3", len(got))
	}
	for i, c := range []struct {
		pkt   []byte
		flags uint8
	}{{lone, vnetDataValid}, {syn, 0}, {v6, 0}} {
		if !bytes.Equal(got[i], withHdr(vnetHdr{flags: c.flags}, c.pkt)) {
			var vh vnetHdr
			vh.decode(got[i])
			t.Errorf("packet %d: header %+v, want flags %d and the packet unchanged", i, vh, c.flags)
		}
	}
	l.stop()
	l.wantDrops(nil)
}
