//go:build !purego

package udp

import "golang.org/x/sys/cpu"

// haveVectorSum reports whether sumAVX2 may be used.
var haveVectorSum = cpu.X86.HasAVX2

// sumAVX2 returns the sum of b's 32-bit little-endian words (len(b) a
// multiple of 16, below 2^33), in checksum_amd64.s.
//
//go:noescape
func sumAVX2(b []byte) uint64
