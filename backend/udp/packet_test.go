package udp

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"testing"
)

func TestChecksumMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for n := range 300 {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.IntN(256))
		}
		if got, want := checksum(b, 0), refChecksum(b); got != want {
			t.Fatalf("len %d: checksum %#04x, reference %#04x", n, got, want)
		}
	}
	ff := bytes.Repeat([]byte{0xff}, 70000) // carries on every add
	if got, want := checksum(ff, 0), refChecksum(ff); got != want {
		t.Fatalf("all ones: %#04x, want %#04x", got, want)
	}
}

func TestDecode(t *testing.T) {
	echo := icmpEcho(podA, podB, 56)
	v6 := make([]byte, 48)
	v6[0] = 0x60
	binary.BigEndian.PutUint16(v6[4:], 8)
	v6[6] = 58
	copy(v6[8:], netip.MustParseAddr("fd00:244:0:2::5").AsSlice())
	copy(v6[24:], netip.MustParseAddr("fd00:244:0:1::7").AsSlice())
	long := append(append([]byte{}, echo...), 0)
	badHL := append([]byte{}, echo...)
	badHL[0] = 0x44
	for _, c := range []struct {
		name   string
		b      []byte
		reason int
	}{
		{"echo", echo, -1},
		{"ipv6", v6, -1},
		{"empty", nil, dropTruncated},
		{"short ipv4 header", echo[:19], dropTruncated},
		{"cut payload", echo[:40], dropTruncated},
		{"trailing bytes", long, dropMalformed},
		{"header length 16", badHL, dropMalformed},
		{"not ip", []byte("zzz, not a packet"), dropNotIP},
		{"short ipv6", v6[:39], dropTruncated},
	} {
		in, reason, ok := decode(c.b)
		if c.reason < 0 {
			if !ok {
				t.Errorf("%s: dropped as %s", c.name, dropNames[reason])
			}
			continue
		}
		if ok || reason != c.reason {
			t.Errorf("%s: ok=%v reason %d (%+v), want %s", c.name, ok, reason, in, dropNames[c.reason])
		}
	}
	in, _, _ := decode(v6)
	if in.version != 6 || in.dst != netip.MustParseAddr("fd00:244:0:1::7") {
		t.Errorf("ipv6 decoded as %+v", in)
	}
}

// TestAcceptFromWire: a datagram is accepted only from a peer's PublicIP
// and port, for our lease, from an address in that peer's subnets (either
// family); every other one has its reason.
func TestAcceptFromWire(t *testing.T) {
	tb := testTable()
	wrongPort := netip.AddrPortFrom(peer12.Addr(), 40000)
	toUs := icmpEcho(podB, podA, 10)
	for _, c := range []struct {
		name   string
		src    netip.AddrPort
		b      []byte
		reason int
	}{
		{"peer to our pod", peer12, toUs, -1},
		{"peer, IPv6 to our pod", peer12, icmp6Echo(pod6B, pod6A, 10), -1},
		{"peer, from its host address in its subnet", peer12, icmpEcho(netip.MustParseAddr("10.244.2.0"), podA, 10), -1},
		{"stranger", stranger, toUs, dropNotPeer},
		{"stranger from a peer's port", netip.AddrPortFrom(netip.MustParseAddr("192.168.50.200"), DefaultPort), toUs, dropNotPeer},
		{"peer's address, another port", wrongPort, toUs, dropWrongPort},
		{"peer's address, port 0", netip.AddrPortFrom(peer12.Addr(), 0), toUs, dropWrongPort},
		{"peer to another subnet", peer12, icmpEcho(podB, netip.MustParseAddr("10.244.3.9"), 10), dropNotOurSubnet},
		{"peer with another peer's pod as source", peer12, icmpEcho(netip.MustParseAddr("10.244.3.9"), podA, 10), dropSpoofedSource},
		{"peer with our own pod as source", peer12, icmpEcho(netip.MustParseAddr("10.244.1.7"), podA, 10), dropSpoofedSource},
		{"peer with a source outside the Network", peer12, icmpEcho(netip.MustParseAddr("8.8.8.8"), podA, 10), dropSpoofedSource},
		{"peer13 with peer12's pod as source", peer13, toUs, dropSpoofedSource},
		{"peer, IPv6 from another subnet", peer12, icmp6Echo(netip.MustParseAddr("fd00:244:0:3::5"), pod6A, 10), dropSpoofedSource},
		{"peer, IPv6 from its IPv4 subnet mapped", peer12, icmp6Echo(netip.MustParseAddr("::ffff:10.244.2.3"), pod6A, 10), dropSpoofedSource},
		{"peer junk", peer12, []byte{0x45, 0, 0}, dropTruncated},
		{"junk from a wrong port", wrongPort, []byte{0x45, 0, 0}, dropWrongPort},
	} {
		_, reason, ok := acceptFromWire(tb, c.src, c.b)
		if (c.reason < 0) != ok || (!ok && reason != c.reason) {
			t.Errorf("%s: ok=%v reason=%s", c.name, ok, dropNames[reason])
		}
	}
}

func TestRouteFromTun(t *testing.T) {
	tb := testTable()
	p, _, reason := routeFromTun(tb, icmpEcho(podA, podB, 10))
	if p == nil || p.addr.String() != "192.168.50.12:8285" {
		t.Fatalf("to podB: peer %v reason %d", p, reason)
	}
	if _, _, reason := routeFromTun(tb, icmpEcho(podA, netip.MustParseAddr("10.244.9.1"), 10)); reason != dropNoRoute {
		t.Errorf("no lease: reason %s", dropNames[reason])
	}
	if _, _, reason := routeFromTun(tb, icmpEcho(podA, netip.MustParseAddr("8.8.8.8"), 10)); reason != dropOutsideNetwork {
		t.Errorf("outside: reason %s", dropNames[reason])
	}
	if p := tb.lookup(netip.MustParseAddr("fd00:244:0:2::9")); p == nil || p.addr.Addr() != netip.MustParseAddr("192.168.50.12") {
		t.Errorf("ipv6 lookup: %v", p)
	}
	if p := tb.lookup(netip.MustParseAddr("fd00:244:0:9::9")); p != nil {
		t.Errorf("ipv6 lookup of an unknown subnet: %v", p)
	}
}

func TestICMPUnreachable(t *testing.T) {
	from := netip.MustParseAddr("10.244.1.0")
	pkt := icmpEcho(podA, netip.MustParseAddr("10.244.9.1"), 56)
	in, _, _ := decode(pkt)
	out := make([]byte, 128)
	n := icmpUnreachable(out, from, pkt, in)
	if n != 20+8+28 {
		t.Fatalf("length %d", n)
	}
	m := out[:n]
	rin, _, ok := decode(m)
	if !ok || rin.src != from || rin.dst != podA || rin.proto != protoICMP || !ipv4Valid(m) {
		t.Fatalf("reply header %+v ok=%v", rin, ok)
	}
	ic := m[20:]
	if ic[0] != 3 || ic[1] != 0 || refChecksum(ic) != 0 || !bytes.Equal(ic[8:], pkt[:28]) {
		t.Fatalf("icmp % x", ic)
	}
	// No error about an error.
	if n := icmpUnreachable(out, from, m, rin); n != 0 {
		t.Errorf("answered an ICMP error")
	}
}

func TestStatsString(t *testing.T) {
	var c counters
	c.drop(dropNotPeer)
	c.drop(dropNotPeer)
	c.txPackets.Add(3)
	s := Stats{Drops: map[string]uint64{}}
	c.addTo(&s)
	if got := s.String(); got != "tx_packets=3 tx_bytes=0 rx_packets=0 rx_bytes=0 icmp_unreachable=0 drop_not_peer=2" {
		t.Errorf("%q", got)
	}
}

func TestParseOptions(t *testing.T) {
	o, err := parseOptions([]byte(`{"Type":"udp"}`))
	if err != nil || o.(Options).Port != DefaultPort {
		t.Fatalf("%v %v", o, err)
	}
	if o, err := parseOptions([]byte(`{"Type":"udp","port":9000}`)); err != nil || o.(Options).Port != 9000 {
		t.Fatalf("%v %v", o, err)
	}
	// Unknown keys are ignored, as upstream ignores them (Type.OptionWarnings reports them).
	if o, err := parseOptions([]byte(`{"Type":"udp","VNI":1}`)); err != nil || o.(Options).Port != DefaultPort {
		t.Fatalf("unknown key: %v %v", o, err)
	}
	for _, bad := range []string{`{"Type":"udp","Port":70000}`, `{"Type":"udp","Port":"x"}`} {
		if _, err := parseOptions([]byte(bad)); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

func TestNoAllocations(t *testing.T) {
	tb := testTable()
	h, super := tsoPacket(pattern(30000), 1420)
	hdr := make([]byte, 128)
	echo := icmpEcho(podB, podA, 56)
	segs := segments(t, super, h)
	co := newCoalescer()
	src := peer12
	c := &counters{}
	allocs := testing.AllocsPerRun(100, func() {
		s, _ := splitTCP(super, h)
		for i := range s.count {
			s.header(super, i, hdr)
		}
		routeFromTun(tb, echo)
		acceptFromWire(tb, src, echo)
		acceptFromWire(tb, netip.AddrPortFrom(src.Addr(), 40000), echo)
		if _, reason, _ := acceptFromWire(tb, peer13, echo); reason == dropSpoofedSource {
			c.dropFrom(reason, 1, peer13, podB, netip.Prefix{})
		}
		segmentValid(segs[1])
		co.start(segs[0])
		for _, s := range segs[1:] {
			co.add(s)
		}
		co.finish()
	})
	if allocs != 0 {
		t.Errorf("%v allocations per packet batch", allocs)
	}
}

func icmp6Echo(src, dst netip.Addr, payload int) []byte {
	p := make([]byte, 40+8+payload)
	p[0] = 0x60
	binary.BigEndian.PutUint16(p[4:6], uint16(8+payload))
	p[6], p[7] = protoICMPv6, 64
	s, d := src.As16(), dst.As16()
	copy(p[8:24], s[:])
	copy(p[24:40], d[:])
	p[40] = 128 // echo request
	binary.BigEndian.PutUint16(p[42:44], checksum(p[40:], pseudoHeaderSum(p[8:24], p[24:40], protoICMPv6, 8+payload)))
	return p
}

func TestICMP6Unreachable(t *testing.T) {
	from := netip.MustParseAddr("fd00:244:0:9::1")
	src := netip.MustParseAddr("fd00:244:0:1::2")
	pkt := icmp6Echo(src, from, 400)
	in, _, ok := decode(pkt)
	if !ok {
		t.Fatal("echo does not decode")
	}
	out := make([]byte, 40+8+icmp6Quote)
	n := icmp6Unreachable(out, from, pkt, in)
	if n != 40+8+icmp6Quote {
		t.Fatalf("length %d", n)
	}
	m := out[:n]
	rin, _, ok := decode(m)
	if !ok || rin.src != from || rin.dst != src || rin.proto != protoICMPv6 {
		t.Fatalf("reply header %+v ok=%v", rin, ok)
	}
	ic := m[40:]
	if ic[0] != 1 || ic[1] != 0 || !bytes.Equal(ic[8:], pkt[:icmp6Quote]) {
		t.Fatalf("icmp6 % x", ic[:16])
	}
	if checksumFold(checksumSum(ic, pseudoHeaderSum(m[8:24], m[24:40], protoICMPv6, len(ic)))) != 0xffff {
		t.Error("bad ICMPv6 checksum")
	}
	if n := icmp6Unreachable(out, from, m, rin); n != 0 {
		t.Error("answered an ICMPv6 error")
	}
}
