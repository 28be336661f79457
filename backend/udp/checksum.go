package udp

import (
	"encoding/binary"
	"math/bits"
)

// checksumSum adds b to the running one's-complement sum acc (a sum of
// big-endian 16-bit words; an odd trailing byte is padded with zero on the
// right). It is the hot loop of both directions (every segment's TCP
// checksum is computed on send and verified on receive), so it reads 64
// bits at a time in the machine's byte order: the one's-complement sum is
// independent of byte order up to a swap of its two bytes (RFC 1071,
// 2.(B)), done once at the end, and 2^16 ≡ 1 modulo 2^16-1 lets the wide
// sum with end-around carry fold to the same 16-bit result as the textbook
// loop over 16-bit words. On amd64 with AVX2 the bulk goes through a
// vector loop (checksum_amd64.s, about three times faster); elsewhere
// sixteen additions per iteration keep the carry in the flags.
func checksumSum(b []byte, acc uint64) uint64 {
	var s, c uint64
	if haveVectorSum && len(b) >= vectorMin && len(b) < 1<<32 {
		n := len(b) &^ 15
		s = sumAVX2(b[:n])
		b = b[n:]
	}
	for len(b) >= 128 {
		s, c = bits.Add64(s, binary.NativeEndian.Uint64(b[0:8]), c)
		s, c = bits.Add64(s, binary.NativeEndian.Uint64(b[8:16]), c)
		s, c = bits.Add64(s, binary.NativeEndian.Uint64(b[16:24]), c)
		s, c = bits.Add64(s, binary.NativeEndian.Uint64(b[24:32]), c)
		s, c = bits.Add64(s, binary.NativeEndian.Uint64(b[32:40]), c)
		s, c = bits.Add64(s, binary.NativeEndian.Uint64(b[40:48]), c)
		s, c = bits.Add64(s, binary.NativeEndian.Uint64(b[48:56]), c)
		s, c = bits.Add64(s, binary.NativeEndian.Uint64(b[56:64]), c)
		s, c = bits.Add64(s, binary.NativeEndian.Uint64(b[64:72]), c)
		s, c = bits.Add64(s, binary.NativeEndian.Uint64(b[72:80]), c)
		s, c = bits.Add64(s, binary.NativeEndian.Uint64(b[80:88]), c)
		s, c = bits.Add64(s, binary.NativeEndian.Uint64(b[88:96]), c)
		s, c = bits.Add64(s, binary.NativeEndian.Uint64(b[96:104]), c)
		s, c = bits.Add64(s, binary.NativeEndian.Uint64(b[104:112]), c)
		s, c = bits.Add64(s, binary.NativeEndian.Uint64(b[112:120]), c)
		s, c = bits.Add64(s, binary.NativeEndian.Uint64(b[120:128]), c)
		b = b[128:]
	}
	for len(b) >= 8 {
		s, c = bits.Add64(s, binary.NativeEndian.Uint64(b[0:8]), c)
		b = b[8:]
	}
	s, c = bits.Add64(s, c, 0)
	s += c // cannot carry again: s is at most 2^64-2 after a carry
	// The tail, at most 7 bytes from an even offset: each word keeps its
	// byte order, a lone last byte is the low byte of its word.
	if len(b) >= 4 {
		s, c = bits.Add64(s, uint64(binary.NativeEndian.Uint32(b)), 0)
		s += c
		b = b[4:]
	}
	if len(b) >= 2 {
		s, c = bits.Add64(s, uint64(binary.NativeEndian.Uint16(b)), 0)
		s += c
		b = b[2:]
	}
	if len(b) == 1 {
		s, c = bits.Add64(s, uint64(b[0])<<lastByteShift, 0)
		s += c
	}
	if !bigEndian {
		// Swapping the bytes of every 16-bit word is a multiplication by
		// 2^8 modulo 2^16-1, and so, on the wide sum, a rotation by 8.
		s = bits.RotateLeft64(s, 8)
	}
	acc, c = bits.Add64(acc, s, 0)
	return acc + c
}

// vectorMin is the shortest buffer summed with the vector loop; below it
// the call does not pay off.
const vectorMin = 64

// bigEndian reports whether the machine's byte order is network order;
// lastByteShift places a trailing odd byte in the high half of its word
// (network order) in the machine's order.
var (
	bigEndian     = binary.NativeEndian.Uint16([]byte{1, 0}) == 0x0100
	lastByteShift = func() uint {
		if bigEndian {
			return 8
		}
		return 0
	}()
)

// checksumFold folds a wide sum to 16 bits (not complemented).
func checksumFold(acc uint64) uint16 {
	s := (acc >> 32) + (acc & 0xffffffff)
	s = (s >> 32) + (s & 0xffffffff)
	s = (s >> 16) + (s & 0xffff)
	s = (s >> 16) + (s & 0xffff)
	s = (s >> 16) + (s & 0xffff)
	return uint16(s)
}

// checksum is the Internet checksum of b (RFC 1071), ready to store.
func checksum(b []byte, acc uint64) uint16 { return ^checksumFold(checksumSum(b, acc)) }

// pseudoHeaderSum is the sum of the TCP/UDP pseudo-header for the given
// addresses (4 or 16 bytes each), protocol and transport length.
func pseudoHeaderSum(src, dst []byte, proto uint8, length int) uint64 {
	acc := checksumSum(src, 0)
	acc = checksumSum(dst, acc)
	return acc + uint64(proto) + uint64(length)
}
