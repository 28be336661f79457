package udp

import (
	"encoding/binary"
	"net/netip"
)

// Real packets for the tests, built field by field as the kernel would and
// checked with a reference checksum written the textbook way (RFC 1071).

func refChecksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return ^uint16(s)
}

// ipv4Valid reports whether the IPv4 header checksum verifies.
func ipv4Valid(p []byte) bool {
	hl := int(p[0]&0x0f) * 4
	return refChecksum(p[:hl]) == 0
}

// tcpValid reports whether the TCP checksum of an IPv4 packet verifies.
func tcpValid(p []byte) bool {
	hl := int(p[0]&0x0f) * 4
	tcp := p[hl:]
	ph := make([]byte, 0, 12+len(tcp))
	ph = append(ph, p[12:20]...)
	ph = append(ph, 0, protoTCP, byte(len(tcp)>>8), byte(len(tcp)))
	ph = append(ph, tcp...)
	return refChecksum(ph) == 0
}

var (
	podA = netip.MustParseAddr("10.244.1.2")
	podB = netip.MustParseAddr("10.244.2.3")
)

// tcpTimestamps is the 12-byte option block Linux sends on every segment:
// NOP, NOP, timestamp (TSval, TSecr).
var tcpTimestamps = []byte{1, 1, 8, 10, 0, 0, 0x12, 0x34, 0, 0, 0x56, 0x78}

// tcp4 builds an IPv4 TCP packet with valid checksums (DF set, TTL 64,
// ports 40000 -> 5201, ack 1000, window 502) carrying payload.
func tcp4(src, dst netip.Addr, id uint16, seq uint32, flags uint8, payload []byte) []byte {
	thl := tcpHeaderLen + len(tcpTimestamps)
	p := make([]byte, ipv4HeaderLen+thl+len(payload))
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	binary.BigEndian.PutUint16(p[4:], id)
	p[6] = 0x40
	p[8], p[9] = 64, protoTCP
	s, d := src.As4(), dst.As4()
	copy(p[12:], s[:])
	copy(p[16:], d[:])
	binary.BigEndian.PutUint16(p[10:], refChecksum(p[:ipv4HeaderLen]))
	t := p[ipv4HeaderLen:]
	binary.BigEndian.PutUint16(t[0:], 40000)
	binary.BigEndian.PutUint16(t[2:], 5201)
	binary.BigEndian.PutUint32(t[4:], seq)
	binary.BigEndian.PutUint32(t[8:], 1000)
	t[12] = byte(thl/4) << 4
	t[13] = flags
	binary.BigEndian.PutUint16(t[14:], 502)
	copy(t[20:], tcpTimestamps)
	copy(t[thl:], payload)
	ph := append(append(append([]byte{}, p[12:20]...), 0, protoTCP, byte(len(t)>>8), byte(len(t))), t...)
	binary.BigEndian.PutUint16(t[16:], refChecksum(ph))
	return p
}

// tsoPacket is what a TUN with TSO hands over: a TCP super-packet whose
// checksum field holds only the pseudo-header sum, behind its virtio
// header.
func tsoPacket(payload []byte, mss int) (vnetHdr, []byte) {
	p := tcp4(podA, podB, 100, 5000, tcpACK|tcpPSH, payload)
	t := p[ipv4HeaderLen:]
	binary.BigEndian.PutUint16(t[16:], checksumFold(pseudoHeaderSum(p[12:16], p[16:20], protoTCP, len(t))))
	thl := tcpHeaderLen + len(tcpTimestamps)
	return vnetHdr{flags: vnetNeedsCsum, gsoType: gsoTCPv4, hdrLen: uint16(ipv4HeaderLen + thl), gsoSize: uint16(mss),
		csumStart: ipv4HeaderLen, csumOffset: 16}, p
}

// icmpEcho builds an IPv4 ICMP echo request with valid checksums.
func icmpEcho(src, dst netip.Addr, size int) []byte {
	p := make([]byte, ipv4HeaderLen+8+size)
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	p[6] = 0x40
	p[8], p[9] = 64, protoICMP
	s, d := src.As4(), dst.As4()
	copy(p[12:], s[:])
	copy(p[16:], d[:])
	binary.BigEndian.PutUint16(p[10:], refChecksum(p[:ipv4HeaderLen]))
	ic := p[ipv4HeaderLen:]
	ic[0] = 8
	binary.BigEndian.PutUint16(ic[4:], 0x77)
	binary.BigEndian.PutUint16(ic[6:], 1)
	for i := range size {
		ic[8+i] = byte(i)
	}
	binary.BigEndian.PutUint16(ic[2:], refChecksum(ic))
	return p
}

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>8)
	}
	return b
}

func testTable() *table {
	mk := func(sn, ip string) peer {
		ap := netip.AddrPortFrom(netip.MustParseAddr(ip), DefaultPort)
		return peer{addr: ap, subnet: netip.MustParsePrefix(sn)}
	}
	return newTable(netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("fd00:244::/56"),
		netip.MustParsePrefix("10.244.1.0/24"), netip.MustParsePrefix("fd00:244:0:1::/64"),
		[]peer{mk("10.244.2.0/24", "192.168.50.12"), mk("10.244.3.0/24", "192.168.50.13"), mk("fd00:244:0:2::/64", "192.168.50.12")})
}

// tcp6 builds an IPv6 TCP packet with a valid checksum (hop limit 64,
// ports 40000 -> 5201, ack 1000, window 502, the timestamp option).
func tcp6(src, dst netip.Addr, seq uint32, flags uint8, payload []byte) []byte {
	thl := tcpHeaderLen + len(tcpTimestamps)
	p := make([]byte, ipv6HeaderLen+thl+len(payload))
	p[0] = 0x60
	binary.BigEndian.PutUint16(p[4:], uint16(thl+len(payload)))
	p[6], p[7] = protoTCP, 64
	s, d := src.As16(), dst.As16()
	copy(p[8:], s[:])
	copy(p[24:], d[:])
	t := p[ipv6HeaderLen:]
	binary.BigEndian.PutUint16(t[0:], 40000)
	binary.BigEndian.PutUint16(t[2:], 5201)
	binary.BigEndian.PutUint32(t[4:], seq)
	binary.BigEndian.PutUint32(t[8:], 1000)
	t[12] = byte(thl/4) << 4
	t[13] = flags
	binary.BigEndian.PutUint16(t[14:], 502)
	copy(t[20:], tcpTimestamps)
	copy(t[thl:], payload)
	binary.BigEndian.PutUint16(t[16:], refChecksum(pseudo6(p, t)))
	return p
}

// pseudo6 is the IPv6 pseudo-header of p followed by its transport part t.
func pseudo6(p, t []byte) []byte {
	ph := append([]byte{}, p[8:40]...)
	ph = append(ph, byte(len(t)>>24), byte(len(t)>>16), byte(len(t)>>8), byte(len(t)), 0, 0, 0, p[6])
	return append(ph, t...)
}

// tcp6Valid reports whether the TCP checksum of an IPv6 packet (no
// extension headers) verifies.
func tcp6Valid(p []byte) bool { return refChecksum(pseudo6(p, p[ipv6HeaderLen:])) == 0 }

// tso6Packet is tsoPacket for IPv6 (gsoType TCPv6, csumStart past the
// IPv6 header).
func tso6Packet(src, dst netip.Addr, payload []byte, mss int) (vnetHdr, []byte) {
	p := tcp6(src, dst, 9000, tcpACK|tcpPSH, payload)
	t := p[ipv6HeaderLen:]
	binary.BigEndian.PutUint16(t[16:], checksumFold(pseudoHeaderSum(p[8:24], p[24:40], protoTCP, len(t))))
	thl := tcpHeaderLen + len(tcpTimestamps)
	return vnetHdr{flags: vnetNeedsCsum, gsoType: gsoTCPv6, hdrLen: uint16(ipv6HeaderLen + thl), gsoSize: uint16(mss),
		csumStart: ipv6HeaderLen, csumOffset: 16}, p
}

// withHdr is a packet as the TUN hands it over: its virtio header, then
// the packet.
func withHdr(h vnetHdr, pkt []byte) []byte {
	b := make([]byte, vnetHdrLen+len(pkt))
	h.encode(b)
	copy(b[vnetHdrLen:], pkt)
	return b
}
