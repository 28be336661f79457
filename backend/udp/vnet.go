package udp

import (
	"encoding/binary"
)

// The virtio_net_hdr that a TUN opened with IFF_VNET_HDR puts in front of
// every packet (include/uapi/linux/virtio_net.h). Its fields are in the
// host's byte order (the TUN is not switched to a fixed endianness).
const (
	vnetHdrLen = 10

	vnetNeedsCsum = 1 // VIRTIO_NET_HDR_F_NEEDS_CSUM: checksum from csumStart, store at csumStart+csumOffset
	vnetDataValid = 2 // VIRTIO_NET_HDR_F_DATA_VALID: checksums were verified (set only after segmentValid)

	gsoNone  = 0
	gsoTCPv4 = 1
	gsoTCPv6 = 4
	gsoECN   = 0x80
)

type vnetHdr struct {
	flags, gsoType                         uint8
	hdrLen, gsoSize, csumStart, csumOffset uint16
}

func (h *vnetHdr) decode(b []byte) {
	h.flags, h.gsoType = b[0], b[1]
	h.hdrLen = binary.NativeEndian.Uint16(b[2:])
	h.gsoSize = binary.NativeEndian.Uint16(b[4:])
	h.csumStart = binary.NativeEndian.Uint16(b[6:])
	h.csumOffset = binary.NativeEndian.Uint16(b[8:])
}

func (h vnetHdr) encode(b []byte) {
	b[0], b[1] = h.flags, h.gsoType
	binary.NativeEndian.PutUint16(b[2:], h.hdrLen)
	binary.NativeEndian.PutUint16(b[4:], h.gsoSize)
	binary.NativeEndian.PutUint16(b[6:], h.csumStart)
	binary.NativeEndian.PutUint16(b[8:], h.csumOffset)
}

// completeChecksum finishes the checksum the kernel left to us
// (NEEDS_CSUM): the field already holds the pseudo-header sum, so the sum
// from csumStart to the end, complemented, is the checksum.
func completeChecksum(pkt []byte, h vnetHdr) bool {
	if h.flags&vnetNeedsCsum == 0 {
		return true
	}
	cs, co := int(h.csumStart), int(h.csumStart)+int(h.csumOffset)
	if cs >= len(pkt) || co+2 > len(pkt) {
		return false
	}
	binary.BigEndian.PutUint16(pkt[co:], checksum(pkt[cs:], 0))
	return true
}

// tsoSplit describes a TCP super-packet cut into segments without moving
// its payload: segment i is header i (written by header) followed by
// payloadOf(i), at most mss bytes of the super-packet's payload. Every
// segment but the last is segLen bytes long, which is what UDP GSO needs.
type tsoSplit struct {
	ipHL, hdrLen, mss, count, payload int
	v6                                bool
	seq                               uint32
	id                                uint16
	flags                             uint8
	// The checksum sums of the parts of the headers that every segment
	// shares: the IPv4 header without its length, ID and checksum; the
	// pseudo-header without the length and the TCP header without its
	// sequence number, flags and checksum. header adds what differs.
	ipBase, tcpBase uint64
}

// segLen is the length of every segment but the last.
func (s *tsoSplit) segLen() int { return s.hdrLen + min(s.mss, s.payload) }

// payloadOf returns the payload of segment i.
func (s *tsoSplit) payloadOf(pkt []byte, i int) []byte {
	off := s.hdrLen + i*s.mss
	return pkt[off : off+min(s.mss, s.payload-i*s.mss)]
}

// splitTCP checks a TCP super-packet pkt handed over by the TUN (TSO:
// gsoType TCPv4/TCPv6, payload in gsoSize pieces) and returns how to cut
// it; ok is false when it does not parse.
func splitTCP(pkt []byte, h vnetHdr) (s tsoSplit, ok bool) {
	if len(pkt) < ipv4HeaderLen {
		return s, false
	}
	switch {
	case pkt[0]>>4 == 4 && h.gsoType&^gsoECN == gsoTCPv4:
		s.ipHL = int(pkt[0]&0x0f) * 4
		if s.ipHL < ipv4HeaderLen || pkt[9] != protoTCP {
			return s, false
		}
	case pkt[0]>>4 == 6 && h.gsoType&^gsoECN == gsoTCPv6:
		s.ipHL = int(h.csumStart) // past any extension headers
		s.v6 = true
		if s.ipHL < ipv6HeaderLen || len(pkt) < ipv6HeaderLen {
			return s, false
		}
	default:
		return s, false
	}
	if s.ipHL+tcpHeaderLen > len(pkt) {
		return s, false
	}
	tcpHL := int(pkt[s.ipHL+12]>>4) * 4
	s.hdrLen, s.mss = s.ipHL+tcpHL, int(h.gsoSize)
	if tcpHL < tcpHeaderLen || s.hdrLen > len(pkt) || s.mss == 0 {
		return s, false
	}
	s.payload = len(pkt) - s.hdrLen
	s.count = max((s.payload+s.mss-1)/s.mss, 1)
	s.seq = binary.BigEndian.Uint32(pkt[s.ipHL+4:])
	s.id = binary.BigEndian.Uint16(pkt[4:])
	s.flags = pkt[s.ipHL+13]
	s.baseSums(pkt)
	return s, true
}

// baseSums sums the header parts that all segments share, once per
// super-packet.
func (s *tsoSplit) baseSums(pkt []byte) {
	tcp := pkt[s.ipHL:s.hdrLen]
	if s.v6 {
		s.tcpBase = checksumSum(pkt[8:40], 0)
	} else {
		s.ipBase = checksumSum(pkt[0:2], checksumSum(pkt[6:10], checksumSum(pkt[12:s.ipHL], 0)))
		s.tcpBase = checksumSum(pkt[12:20], 0)
	}
	// Ports, ack; window, urgent pointer; options: all but bytes 4-7
	// (sequence), 12-13 (offset and flags) and 16-17 (checksum).
	acc := checksumSum(tcp[0:4], s.tcpBase+protoTCP)
	acc = checksumSum(tcp[8:12], acc)
	acc = checksumSum(tcp[14:16], acc)
	// Folded, so that adding the per-segment parts cannot overflow.
	s.tcpBase = uint64(checksumFold(checksumSum(tcp[18:], acc)))
	s.ipBase = uint64(checksumFold(s.ipBase))
}

// header writes into hdr (hdrLen bytes) the IP and TCP header of segment
// i: its own IP length (IPv4 ID and checksum), TCP sequence number, flags
// (FIN and PSH only on the last segment, CWR only on the first) and TCP
// checksum over the header and the payload, which stays where it is.
func (s *tsoSplit) header(pkt []byte, i int, hdr []byte) {
	payload := s.payloadOf(pkt, i)
	copy(hdr, pkt[:s.hdrLen])
	total := s.hdrLen + len(payload)
	if s.v6 {
		binary.BigEndian.PutUint16(hdr[4:], uint16(total-ipv6HeaderLen))
	} else {
		id := s.id + uint16(i)
		binary.BigEndian.PutUint16(hdr[2:], uint16(total))
		binary.BigEndian.PutUint16(hdr[4:], id)
		binary.BigEndian.PutUint16(hdr[10:], ^checksumFold(s.ipBase+uint64(total)+uint64(id)))
	}
	tcp := hdr[s.ipHL:]
	seq := s.seq + uint32(i*s.mss)
	binary.BigEndian.PutUint32(tcp[4:], seq)
	f := s.flags
	if i != s.count-1 {
		f &^= tcpFIN | tcpPSH
	}
	if i != 0 {
		f &^= tcpCWR
	}
	tcp[13] = f
	// The shared sums, then what is this segment's: its length, sequence
	// number and flags, and its payload, which stays where it is (the
	// headers are a multiple of 4 bytes: the sums simply add).
	acc := s.tcpBase + uint64(total-s.ipHL) + uint64(seq>>16) + uint64(seq&0xffff) + uint64(tcp[12])<<8 + uint64(f)
	acc = checksumSum(payload, acc)
	binary.BigEndian.PutUint16(tcp[16:], ^checksumFold(acc))
}

// TCP flags.
const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpPSH = 0x08
	tcpACK = 0x10
	tcpURG = 0x20
	tcpECE = 0x40
	tcpCWR = 0x80
)

// coalescer merges consecutive in-order segments of one IPv4 TCP flow, as
// they arrive from the wire, back into one super-packet that the kernel
// accepts from the TUN as GSO (the reverse of splitTCP; what GRO does in a
// NIC driver). Only the simple, common case is merged: 20-byte IPv4
// header, no fragments, ACK with optional PSH on the last segment, same
// addresses, ports, ack, window and TCP options, every segment but the last
// exactly mss long. Anything else is written on its own.
//
// Nothing is copied: the super-packet is a list of parts (virtio header,
// first segment, then the payloads of the others) for one writev, and the
// first segment's headers are rewritten in place in the receive buffer.
//
// Every segment given to start or add must have passed segmentValid: the
// kernel takes a super-packet's partial checksum (NEEDS_CSUM) on trust, so
// a corrupt segment merged into one would reach the pod unnoticed.
type coalescer struct {
	hdr     [vnetHdrLen]byte
	parts   [][]byte // hdr, first segment, payloads; nil: nothing open
	n       int      // IP length so far
	tcpHL   int
	mss     int
	nextSeq uint32
	closed  bool // a short or PSH segment ended the run
}

const (
	maxCoalesced     = 65535 // IPv4 total length limit
	maxCoalescedSegs = 64
)

func newCoalescer() *coalescer { return &coalescer{parts: make([][]byte, 0, maxCoalescedSegs+1)} }

// coalescible reports whether pkt (a decoded IPv4 packet) may open or join
// a super-packet.
func coalescible(pkt []byte, in inner) bool {
	if in.version != 4 || in.proto != protoTCP || in.hdrLen != ipv4HeaderLen || len(pkt) < ipv4HeaderLen+tcpHeaderLen {
		return false
	}
	if binary.BigEndian.Uint16(pkt[6:8])&0x3fff != 0 { // MF or a fragment offset
		return false
	}
	tcp := pkt[ipv4HeaderLen:]
	thl := int(tcp[12]>>4) * 4
	if thl < tcpHeaderLen || ipv4HeaderLen+thl >= len(pkt) { // needs payload
		return false
	}
	return tcp[13]&^tcpPSH == tcpACK
}

// segmentValid reports whether the IPv4 header checksum and the TCP
// checksum of a coalescible segment (20-byte IPv4 header) verify. It is
// one pass over the segment, in cache since recvmmsg just wrote it.
func segmentValid(pkt []byte) bool {
	addrs := uint64(checksumFold(checksumSum(pkt[12:20], 0))) // in both sums
	if checksum(pkt[:12], addrs) != 0 {
		return false
	}
	tcp := pkt[ipv4HeaderLen:]
	return checksum(tcp, addrs+protoTCP+uint64(len(tcp))) == 0
}

// add appends pkt to the open super-packet if it continues it; false means
// the caller must flush and then start a new one (or write pkt alone). pkt
// must stay untouched until finish.
func (c *coalescer) add(pkt []byte) bool {
	if len(c.parts) == 0 || c.closed || len(c.parts) == cap(c.parts) {
		return false
	}
	first := c.parts[1]
	tcp, ftcp := pkt[ipv4HeaderLen:], first[ipv4HeaderLen:]
	thl := int(tcp[12]>>4) * 4
	plen := len(pkt) - ipv4HeaderLen - thl
	if thl != c.tcpHL || plen > c.mss || c.n+plen > maxCoalesced {
		return false
	}
	if pkt[1] != first[1] || pkt[8] != first[8] || pkt[6]&0x40 != first[6]&0x40 ||
		string(pkt[12:20]) != string(first[12:20]) ||
		string(tcp[0:4]) != string(ftcp[0:4]) || // ports
		binary.BigEndian.Uint32(tcp[4:]) != c.nextSeq ||
		string(tcp[8:12]) != string(ftcp[8:12]) || // ack
		tcp[12] != ftcp[12] || tcp[13]&^tcpPSH != ftcp[13]&^tcpPSH ||
		string(tcp[14:16]) != string(ftcp[14:16]) || // window
		string(tcp[20:thl]) != string(ftcp[20:thl]) { // options
		return false
	}
	c.parts = append(c.parts, pkt[ipv4HeaderLen+thl:])
	c.n += plen
	c.nextSeq += uint32(plen)
	if plen < c.mss || tcp[13]&tcpPSH != 0 {
		ftcp[13] |= tcp[13] & tcpPSH // the super-packet ends with this segment
		c.closed = true
	}
	return true
}

// start opens a super-packet with pkt (which must be coalescible).
func (c *coalescer) start(pkt []byte) {
	tcp := pkt[ipv4HeaderLen:]
	c.parts = append(c.parts[:0], c.hdr[:], pkt)
	c.n = len(pkt)
	c.tcpHL = int(tcp[12]>>4) * 4
	c.mss = len(pkt) - ipv4HeaderLen - c.tcpHL
	c.nextSeq = binary.BigEndian.Uint32(tcp[4:]) + uint32(c.mss)
	c.closed = tcp[13]&tcpPSH != 0
}

// finish closes the open super-packet and returns its parts, to be
// written to the TUN as one packet, and the number of segments merged. A
// single segment goes out unchanged (checksums as received, marked valid:
// segmentValid verified them); a merged one gets a new IP length and
// checksum, the PSH flag of its last segment, and a TCP checksum left to
// the kernel (NEEDS_CSUM with the pseudo-header sum in the field, as TSO
// expects), which then carries exactly the verified segments' bytes.
func (c *coalescer) finish() ([][]byte, int) {
	if len(c.parts) == 0 {
		return nil, 0
	}
	parts := c.parts
	segs := len(parts) - 1
	c.parts, c.closed = c.parts[:0], false
	if segs == 1 {
		vnetHdr{flags: vnetDataValid}.encode(c.hdr[:])
		return parts, 1
	}
	pkt := parts[1]
	binary.BigEndian.PutUint16(pkt[2:], uint16(c.n))
	pkt[10], pkt[11] = 0, 0
	binary.BigEndian.PutUint16(pkt[10:], checksum(pkt[:ipv4HeaderLen], 0))
	tcpLen := c.n - ipv4HeaderLen
	binary.BigEndian.PutUint16(pkt[ipv4HeaderLen+16:], checksumFold(pseudoHeaderSum(pkt[12:16], pkt[16:20], protoTCP, tcpLen)))
	vnetHdr{
		flags: vnetNeedsCsum, gsoType: gsoTCPv4,
		hdrLen: uint16(ipv4HeaderLen + c.tcpHL), gsoSize: uint16(c.mss),
		csumStart: ipv4HeaderLen, csumOffset: 16,
	}.encode(c.hdr[:])
	return parts, segs
}
