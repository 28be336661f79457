package udp

import (
	"encoding/binary"
	"net/netip"
)

// IP header facts the packet path needs. The decoder is family-neutral: it
// dispatches on the version nibble, and addresses are netip.Addr.
const (
	ipv4HeaderLen = 20
	ipv6HeaderLen = 40
	protoTCP      = 6
	protoICMP     = 1
	protoICMPv6   = 58
	// icmp6Quote bounds how much of the refused packet an ICMPv6 error
	// quotes (RFC 4443 asks for as much as fits in 1280 bytes; the start,
	// headers included, is what the sender needs).
	icmp6Quote   = 256
	tcpHeaderLen = 20
)

// inner is a decoded inner IP packet.
type inner struct {
	version  int
	hdrLen   int // IPv4 header length; 40 for IPv6
	proto    uint8
	src, dst netip.Addr
}

// decode validates the IP header of b, which must be exactly one packet,
// and returns its addresses. On failure it returns a drop reason.
func decode(b []byte) (inner, int, bool) {
	if len(b) < 1 {
		return inner{}, dropTruncated, false
	}
	switch b[0] >> 4 {
	case 4:
		if len(b) < ipv4HeaderLen {
			return inner{}, dropTruncated, false
		}
		hl := int(b[0]&0x0f) * 4
		tl := int(binary.BigEndian.Uint16(b[2:4]))
		if hl < ipv4HeaderLen || tl < hl {
			return inner{}, dropMalformed, false
		}
		if tl > len(b) || hl > len(b) {
			return inner{}, dropTruncated, false
		}
		if tl != len(b) {
			return inner{}, dropMalformed, false
		}
		return inner{version: 4, hdrLen: hl, proto: b[9],
			src: netip.AddrFrom4([4]byte(b[12:16])), dst: netip.AddrFrom4([4]byte(b[16:20]))}, 0, true
	case 6:
		if len(b) < ipv6HeaderLen {
			return inner{}, dropTruncated, false
		}
		pl := int(binary.BigEndian.Uint16(b[4:6]))
		if ipv6HeaderLen+pl > len(b) {
			return inner{}, dropTruncated, false
		}
		if ipv6HeaderLen+pl != len(b) {
			return inner{}, dropMalformed, false
		}
		return inner{version: 6, hdrLen: ipv6HeaderLen, proto: b[6],
			src: netip.AddrFrom16([16]byte(b[8:24])), dst: netip.AddrFrom16([16]byte(b[24:40]))}, 0, true
	}
	return inner{}, dropNotIP, false
}

// acceptFromWire is the receive decision for one datagram payload from
// src: forward it to the TUN (ok) or drop it for the returned reason.
func acceptFromWire(t *table, src netip.AddrPort, b []byte) (inner, int, bool) {
	o, reason := t.origin(src)
	if o == nil {
		return inner{}, reason, false
	}
	return acceptInner(t, o, b)
}

// acceptInner is acceptFromWire once the datagram's origin is known (the
// receive path looks it up once per GRO run): the inner packet must be
// one whole IP packet for our lease, from an address in the subnets of
// the peer that sent it. The destination is checked first: a packet for
// another host is misrouted, whatever its source.
func acceptInner(t *table, o *origin, b []byte) (inner, int, bool) {
	in, reason, ok := decode(b)
	if !ok {
		return in, reason, false
	}
	if !t.ours(in.dst) {
		return in, dropNotOurSubnet, false
	}
	if !o.owns(in.src) {
		return in, dropSpoofedSource, false
	}
	return in, 0, true
}

// routeFromTun is the send decision for one packet read from the TUN: the
// peer to send it to, or a drop reason (dropNoRoute means: answer with an
// ICMP destination unreachable).
func routeFromTun(t *table, b []byte) (*peer, inner, int) {
	in, reason, ok := decode(b)
	if !ok {
		return nil, in, reason
	}
	if p := t.lookup(in.dst); p != nil {
		return p, in, 0
	}
	if t.inNetwork(in.dst) {
		return nil, in, dropNoRoute
	}
	return nil, in, dropOutsideNetwork
}

// icmpUnreachable writes into out an ICMPv4 destination unreachable (net
// unreachable, code 0) from the address from to the sender of pkt,
// quoting pkt's IP header and first 8 bytes of payload (RFC 792), and
// returns its length; 0 when no message may be sent (RFC 1122: not for
// ICMP errors, fragments other than the first, or broadcast sources).
func icmpUnreachable(out []byte, from netip.Addr, pkt []byte, in inner) int {
	if in.version != 4 || !from.Is4() || !in.src.IsGlobalUnicast() {
		return 0
	}
	if binary.BigEndian.Uint16(pkt[6:8])&0x1fff != 0 {
		return 0
	}
	if in.proto == protoICMP && len(pkt) > in.hdrLen {
		switch pkt[in.hdrLen] { // only echo request/reply and other queries get errors
		case 3, 4, 5, 11, 12:
			return 0
		}
	}
	quote := min(len(pkt), in.hdrLen+8)
	n := ipv4HeaderLen + 8 + quote
	if len(out) < n {
		return 0
	}
	h := out[:n]
	clear(h[:ipv4HeaderLen+8])
	h[0] = 0x45
	binary.BigEndian.PutUint16(h[2:4], uint16(n))
	h[8] = 64
	h[9] = protoICMP
	f := from.As4()
	copy(h[12:16], f[:])
	copy(h[16:20], pkt[12:16])
	binary.BigEndian.PutUint16(h[10:12], checksum(h[:ipv4HeaderLen], 0))
	icmp := h[ipv4HeaderLen:]
	icmp[0] = 3 // destination unreachable
	icmp[1] = 0 // net unreachable
	copy(icmp[8:], pkt[:quote])
	binary.BigEndian.PutUint16(icmp[2:4], checksum(icmp, 0))
	return n
}

// icmp6Unreachable is icmpUnreachable for IPv6: an ICMPv6 destination
// unreachable (type 1, code 0 "no route") from the address from to the
// sender of pkt, quoting up to icmp6Quote bytes of it. 0 when no message
// may be sent (RFC 4443 2.4: not for ICMPv6 errors, nor to multicast or
// unspecified sources).
func icmp6Unreachable(out []byte, from netip.Addr, pkt []byte, in inner) int {
	if in.version != 6 || !from.Is6() || !in.src.IsGlobalUnicast() || in.dst.IsMulticast() {
		return 0
	}
	if in.proto == protoICMPv6 && len(pkt) > in.hdrLen && pkt[in.hdrLen] < 128 {
		return 0 // an error message (types 0..127) never gets an error back
	}
	quote := min(len(pkt), icmp6Quote)
	plen := 8 + quote
	n := ipv6HeaderLen + plen
	if len(out) < n {
		return 0
	}
	h := out[:n]
	clear(h[:ipv6HeaderLen+8])
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:6], uint16(plen))
	h[6] = protoICMPv6
	h[7] = 64
	f := from.As16()
	copy(h[8:24], f[:])
	copy(h[24:40], pkt[8:24]) // to the refused packet's source
	icmp := h[ipv6HeaderLen:]
	icmp[0] = 1 // destination unreachable
	icmp[1] = 0 // no route to destination
	copy(icmp[8:], pkt[:quote])
	binary.BigEndian.PutUint16(icmp[2:4], checksum(icmp, pseudoHeaderSum(h[8:24], h[24:40], protoICMPv6, plen)))
	return n
}
