package udp

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// checkSegments checks the TCP segments cut from a super-packet of
// payload (IPv4 or IPv6, first sequence number seq, IPv4 ID id): at most
// mss bytes each, valid checksums, consecutive sequence numbers and IDs,
// PSH only on the last, and together exactly the payload.
func checkSegments(t *testing.T, segs [][]byte, payload []byte, mss int, seq uint32, id uint16) {
	t.Helper()
	if want := (len(payload) + mss - 1) / mss; len(segs) != want {
		t.Fatalf("%d segments, want %d", len(segs), want)
	}
	var got []byte
	for i, s := range segs {
		in, reason, ok := decode(s)
		if !ok {
			t.Fatalf("segment %d: %s", i, dropNames[reason])
		}
		tcp := s[in.hdrLen:]
		thl := int(tcp[12]>>4) * 4
		if in.version == 4 {
			if !ipv4Valid(s) || !tcpValid(s) {
				t.Fatalf("segment %d: bad checksum (ip %v, tcp %v)", i, ipv4Valid(s), tcpValid(s))
			}
			if got := binary.BigEndian.Uint16(s[4:]); got != id+uint16(i) {
				t.Errorf("segment %d: IPv4 ID %d, want %d", i, got, id+uint16(i))
			}
		} else if !tcp6Valid(s) {
			t.Fatalf("segment %d: bad TCP checksum", i)
		}
		if len(tcp)-thl > mss {
			t.Errorf("segment %d: %d bytes of payload, more than the MSS %d", i, len(tcp)-thl, mss)
		}
		if got := binary.BigEndian.Uint32(tcp[4:]); got != seq+uint32(i*mss) {
			t.Errorf("segment %d: seq %d, want %d", i, got, seq+uint32(i*mss))
		}
		if psh := tcp[13]&tcpPSH != 0; psh != (i == len(segs)-1) {
			t.Errorf("segment %d of %d: PSH %v", i, len(segs), psh)
		}
		got = append(got, tcp[thl:]...)
	}
	if !bytes.Equal(got, payload) {
		t.Error("the segments do not carry the super-packet's payload")
	}
}

// TestSendSuperPacket: a TSO super-packet from the TUN leaves as
// MTU-sized TCP segments: with GSO in as few messages as UDP allows (44
// segments of 1472 bytes fit in one), without it one datagram each.
func TestSendSuperPacket(t *testing.T) {
	for _, gso := range []bool{true, false} {
		payload := pattern(64000)
		h, super := tsoPacket(payload, 1420)
		l := newLoopTest(t, true)
		l.b.gso.Store(gso)
		l.startSender()
		l.tun.In <- withHdr(h, super)
		l.sendMarker()
		msgs := l.sent()
		segs := datagrams(t, msgs, peer12)
		checkSegments(t, segs, payload, 1420, 5000, 100)
		if gso {
			if len(msgs) != 2 || msgs[0].segSize != 1472 || msgs[1].segSize != 1472 || len(msgs[0].data) != 44*1472 {
				t.Errorf("GSO: %d messages (sizes %v), want 44 then 2 segments of 1472 bytes", len(msgs), msgSizes(msgs))
			}
		} else if len(msgs) != 46 || msgs[0].segSize != 0 {
			t.Errorf("no GSO: %d messages (sizes %v), want 46 plain datagrams", len(msgs), msgSizes(msgs))
		}
		l.stop()
		s := l.stats()
		if s.TxPackets != 46+1 || s.TxBytes != uint64(52*46+len(payload)+len(txMarker)) {
			t.Errorf("gso %v: tx_packets %d tx_bytes %d", gso, s.TxPackets, s.TxBytes)
		}
		l.wantDrops(nil)
	}
}

func msgSizes(msgs []datagram) [][2]int {
	var out [][2]int
	for _, m := range msgs {
		out = append(out, [2]int{len(m.data), m.segSize})
	}
	return out
}

// TestSendGSORefused: when the socket refuses a GSO message (the route's
// device cannot do UDP GSO), its segments go one datagram each, GSO is
// turned off once, with one log line, and later super-packets do not try
// it again.
func TestSendGSORefused(t *testing.T) {
	l := newLoopTest(t, true)
	tries := 0
	l.conn.sendErr = func(d datagram) error {
		if d.segSize > 0 {
			tries++
			return unix.EIO
		}
		return nil
	}
	l.startSender()
	payload := pattern(64000)
	h, super := tsoPacket(payload, 1420)
	l.tun.In <- withHdr(h, super)
	l.sendMarker()
	msgs := l.sent()
	checkSegments(t, datagrams(t, msgs, peer12), payload, 1420, 5000, 100)
	if len(msgs) != 46 || l.b.gso.Load() {
		t.Fatalf("%d datagrams, GSO still on: %v", len(msgs), l.b.gso.Load())
	}
	before := tries
	l.tun.In <- withHdr(h, super)
	l.sendMarker()
	if msgs := l.sent(); len(msgs) != 46 || tries != before {
		t.Errorf("second super-packet: %d datagrams, %d more GSO tries", len(msgs), tries-before)
	}
	l.stop()
	if s := l.stats(); s.TxPackets != 2*46+2 {
		t.Errorf("tx_packets %d", s.TxPackets)
	}
	l.wantDrops(nil)
	if n := strings.Count(l.logs.String(), "UDP GSO (UDP_SEGMENT) refused"); n != 1 {
		t.Errorf("the refusal is logged %d times, want once:\n%s", n, l.logs.String())
	}
}

// TestSendIPv6: IPv6 inner packets go to the peer's IPv4 address, plain
// ones as they are and TSO6 super-packets cut into segments.
func TestSendIPv6(t *testing.T) {
	l := newLoopTest(t, true)
	l.startSender()
	echo := icmp6Echo(pod6A, pod6B, 100)
	payload := pattern(5000)
	h, super := tso6Packet(pod6A, pod6B, payload, 1400)
	l.tun.In <- withHdr(vnetHdr{}, echo)
	l.tun.In <- withHdr(h, super)
	l.sendMarker()
	dgs := datagrams(t, l.sent(), peer12)
	if len(dgs) != 5 || !bytes.Equal(dgs[0], echo) {
		t.Fatalf("%d datagrams, want the echo and 4 segments", len(dgs))
	}
	checkSegments(t, dgs[1:], payload, 1400, 9000, 0)
	l.stop()
	l.wantDrops(nil)
}

// TestSendCompletesChecksum: a plain packet whose checksum the kernel left
// to us (NEEDS_CSUM) leaves with it filled in.
func TestSendCompletesChecksum(t *testing.T) {
	l := newLoopTest(t, true)
	l.startSender()
	h, pkt := tsoPacket(pattern(1000), 1420)
	h.gsoType, h.gsoSize = gsoNone, 0
	l.tun.In <- withHdr(h, pkt)
	l.sendMarker()
	dgs := datagrams(t, l.sent(), peer12)
	if len(dgs) != 1 || !tcpValid(dgs[0]) || !ipv4Valid(dgs[0]) {
		t.Fatalf("%d datagrams; checksums valid: %v", len(dgs), len(dgs) == 1 && tcpValid(dgs[0]))
	}
	l.stop()
	l.wantDrops(nil)
}

// TestSendICMPUnreachable: a packet to a Network address no lease covers
// is dropped (drop_no_route, a super-packet for all its segments) and
// answered through the TUN with an ICMP net unreachable, or its ICMPv6
// counterpart, from that address to the sender.
func TestSendICMPUnreachable(t *testing.T) {
	l := newLoopTest(t, true)
	l.startSender()
	nowhere, nowhere6 := netip.MustParseAddr("10.244.9.9"), netip.MustParseAddr("fd00:244:0:9::1")
	echo, echo6 := icmpEcho(podA, nowhere, 40), icmp6Echo(pod6A, nowhere6, 40)
	h, super := tsoPacket(pattern(3000), 1000)
	copy(super[16:20], nowhere.AsSlice())
	l.tun.In <- withHdr(vnetHdr{}, echo)
	l.tun.In <- withHdr(vnetHdr{}, echo6)
	l.tun.In <- withHdr(h, super)
	l.sendMarker()
	if dgs := l.sent(); len(dgs) != 0 {
		t.Errorf("%d datagrams sent for unreachable addresses", len(dgs))
	}
	l.stop()
	got := drain(l.tun.Out)
	if len(got) != 3 {
		t.Fatalf("%d packets written to the TUN, want 3 ICMP errors", len(got))
	}
	for i, b := range got {
		if !bytes.Equal(b[:vnetHdrLen], make([]byte, vnetHdrLen)) {
			t.Errorf("ICMP %d: virtio header % x, want empty", i, b[:vnetHdrLen])
		}
	}
	checkICMP4(t, got[0][vnetHdrLen:], nowhere, podA, echo)
	checkICMP4(t, got[2][vnetHdrLen:], nowhere, podA, super)
	m := got[1][vnetHdrLen:]
	in, _, ok := decode(m)
	if !ok || in.src != nowhere6 || in.dst != pod6A || in.proto != protoICMPv6 || m[40] != 1 || m[41] != 0 || !bytes.Equal(m[48:], echo6) {
		t.Errorf("ICMPv6: % x", m[:min(len(m), 48)])
	}
	if refChecksum(pseudo6(m, m[40:])) != 0 {
		t.Error("ICMPv6: bad checksum")
	}
	if s := l.stats(); s.ICMPSent != 3 || s.TxPackets != 1 {
		t.Errorf("icmp_unreachable %d tx_packets %d", s.ICMPSent, s.TxPackets)
	}
	l.wantDrops(map[string]uint64{"no_route": 2 + 3})
}

// checkICMP4 checks an ICMP net unreachable from -> to quoting the start
// of orig.
func checkICMP4(t *testing.T, m []byte, from, to netip.Addr, orig []byte) {
	t.Helper()
	in, _, ok := decode(m)
	if !ok || in.src != from || in.dst != to || in.proto != protoICMP || !ipv4Valid(m) {
		t.Fatalf("ICMP: %+v ok=%v ip checksum %v", in, ok, ok && ipv4Valid(m))
	}
	ic := m[ipv4HeaderLen:]
	if ic[0] != 3 || ic[1] != 0 || refChecksum(ic) != 0 || !bytes.Equal(ic[8:], orig[:ipv4HeaderLen+8]) {
		t.Errorf("ICMP message % x", ic[:min(len(ic), 36)])
	}
}

// TestSendDrops: what the sender does not forward is counted by reason,
// and traffic behind it flows on.
func TestSendDrops(t *testing.T) {
	l := newLoopTest(t, true)
	l.conn.sendErr = func(d datagram) error {
		if d.addr == peer13 {
			return unix.EPERM
		}
		return nil
	}
	l.startSender()
	echo := icmpEcho(podA, podB, 56)
	badTSO := withHdr(vnetHdr{gsoType: gsoTCPv4, gsoSize: 1000}, echo) // not TCP
	badCsum := withHdr(vnetHdr{flags: vnetNeedsCsum, csumStart: 5000}, echo)
	h, super := tsoPacket(pattern(64000), 1420)
	copy(super[16:20], netip.MustParseAddr("10.244.3.9").AsSlice())
	for _, b := range [][]byte{
		withHdr(vnetHdr{}, nil),                                               // truncated: nothing after the header
		withHdr(vnetHdr{}, echo[:19]),                                         // truncated
		withHdr(vnetHdr{}, append(bytes.Clone(echo), 0)),                      // malformed: IP length
		withHdr(vnetHdr{}, []byte("zzz, not a packet")),                       // not_ip
		withHdr(vnetHdr{}, icmpEcho(podA, netip.MustParseAddr("8.8.8.8"), 8)), // outside_network
		badTSO, badCsum, // bad_offload
		withHdr(vnetHdr{}, icmpEcho(podA, netip.MustParseAddr("10.244.3.9"), 8)), // send_error
		withHdr(h, super), // send_error, 46 segments
	} {
		l.tun.In <- b
	}
	l.sendMarker()
	if dgs := l.sent(); len(dgs) != 0 {
		t.Errorf("%d datagrams sent", len(dgs))
	}
	l.stop()
	l.wantDrops(map[string]uint64{"truncated": 2, "malformed": 1, "not_ip": 1, "outside_network": 1, "bad_offload": 2, "send_error": 1 + 46})
	if s := l.stats(); s.TxPackets != 1 || s.ICMPSent != 0 {
		t.Errorf("tx_packets %d icmp %d, want the marker only", s.TxPackets, s.ICMPSent)
	}
	if n := strings.Count(l.logs.String(), "sending to a peer failed"); n != 1 {
		t.Errorf("send errors logged %d times, want once:\n%s", n, l.logs.String())
	}
}
