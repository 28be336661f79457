package udp

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// TestChecksumOffsets runs the vector and scalar paths over every
// alignment and the lengths around their boundaries, against the textbook
// sum; the purego build tag runs the scalar path alone.
func TestChecksumOffsets(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	buf := make([]byte, 4096)
	for i := range buf {
		buf[i] = byte(r.IntN(256))
	}
	for off := range 16 {
		for _, n := range []int{0, 1, 15, 16, 17, 63, 64, 65, 127, 128, 129, 255, 1419, 1420, 1448, 4000} {
			b := buf[off : off+n]
			if got, want := checksum(b, 0), refChecksum(b); got != want {
				t.Fatalf("offset %d len %d: checksum %#04x, reference %#04x", off, n, got, want)
			}
		}
	}
}

// TestChecksumSplitSums: the sum of a buffer is the sum of the sums of its
// parts cut at even offsets, which the segment headers rely on.
func TestChecksumSplitSums(t *testing.T) {
	b := bytes.Repeat([]byte{0xfe, 0xff, 0x01, 0x80, 0x7f}, 700)
	for _, k := range []int{0, 2, 20, 64, 1000, 2498} {
		whole := checksumFold(checksumSum(b, 0))
		parts := checksumFold(checksumSum(b[k:], checksumSum(b[:k], 0)))
		if whole != parts {
			t.Fatalf("cut at %d: %#04x, whole %#04x", k, parts, whole)
		}
	}
}

func FuzzChecksum(f *testing.F) {
	f.Add([]byte{}, uint8(0))
	f.Add([]byte{0xff}, uint8(1))
	f.Add(bytes.Repeat([]byte{0xff}, 300), uint8(3))
	f.Add(bytes.Repeat([]byte{0x12, 0x34, 0x56}, 500), uint8(2))
	f.Fuzz(func(t *testing.T, b []byte, cut uint8) {
		if got, want := checksum(b, 0), refChecksum(b); got != want {
			t.Fatalf("len %d: checksum %#04x, reference %#04x", len(b), got, want)
		}
		if k := int(cut) &^ 1; k <= len(b) {
			if got, want := checksumFold(checksumSum(b[k:], checksumSum(b[:k], 0))), checksumFold(checksumSum(b, 0)); got != want {
				t.Fatalf("cut at %d: %#04x, whole %#04x", k, got, want)
			}
		}
	})
}
