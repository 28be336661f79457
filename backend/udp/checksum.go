package udp

import (
	"encoding/binary"
	"math/bits"
)

// checksumSum adds b to the running one's-complement sum acc. It reads 64
// bits at a time with an end-around carry; because 2^16 ≡ 1 modulo 2^16-1
// the wide sum folds to the same 16-bit result as the textbook loop over
// 16-bit words. An odd trailing byte is padded with zero on the right.
func checksumSum(b []byte, acc uint64) uint64 {
	var c uint64
	for len(b) >= 32 {
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b[0:8]), c)
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b[8:16]), c)
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b[16:24]), c)
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b[24:32]), c)
		b = b[32:]
	}
	for len(b) >= 8 {
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b[0:8]), c)
		b = b[8:]
	}
	acc, c = bits.Add64(acc, c, 0)
	acc += c // cannot carry again: acc is at most 2^64-2 after a carry
	if len(b) >= 4 {
		acc, c = bits.Add64(acc, uint64(binary.BigEndian.Uint32(b)), 0)
		acc += c
		b = b[4:]
	}
	if len(b) >= 2 {
		acc, c = bits.Add64(acc, uint64(binary.BigEndian.Uint16(b)), 0)
		acc += c
		b = b[2:]
	}
	if len(b) == 1 {
		acc, c = bits.Add64(acc, uint64(b[0])<<8, 0)
		acc += c
	}
	return acc
}

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
