package udp

import "testing"

func BenchmarkChecksum64K(b *testing.B) {
	buf := pattern(65536)
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		checksum(buf, 0)
	}
}

func BenchmarkSplitTCP(b *testing.B) {
	h, super := tsoPacket(pattern(65000), 1420)
	hdr := make([]byte, 128)
	b.SetBytes(int64(len(super)))
	for b.Loop() {
		s, _ := splitTCP(super, h)
		for i := range s.count {
			s.header(super, i, hdr)
		}
	}
}

func BenchmarkCoalesce(b *testing.B) {
	h, super := tsoPacket(pattern(65000), 1420)
	segs := segments(b, super, h)
	co := newCoalescer()
	b.SetBytes(int64(len(super)))
	for b.Loop() {
		co.start(segs[0])
		for _, s := range segs[1:] {
			co.add(s)
		}
		co.finish()
	}
}
