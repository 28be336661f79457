package memlimit

import (
	"math"
	"runtime"
	"runtime/debug"
	"testing"
	"time"
)

func TestLimit(t *testing.T) {
	const mib = 1 << 20
	for _, c := range []struct{ live, other, want uint64 }{
		{4 * mib, 3 * mib, 40 * mib},  // a small cluster: the floor
		{21 * mib, 7 * mib, 40 * mib}, // 10,000 vxlan peers: still the floor
		{30 * mib, 8 * mib, 53 * mib}, // above it: half the live heap of room
		{100 * mib, 10 * mib, 160 * mib},
	} {
		if got := limit(40*mib, 0.5, c.live, c.other); got != c.want {
			t.Errorf("limit(live %d MiB, other %d MiB) = %d MiB, want %d", c.live/mib, c.other/mib, got/mib, c.want/mib)
		}
	}
}

// The limit follows the live heap after each collection, and stop lifts
// it.
func TestStart(t *testing.T) {
	const floor = 32 << 20
	stop := Start(floor, Room)
	if got := debug.SetMemoryLimit(-1); got != floor {
		t.Errorf("limit at start %d, want the floor %d", got, floor)
	}
	ballast := make([][]byte, 0, 48)
	for range 48 {
		ballast = append(ballast, make([]byte, 1<<20))
	}
	want := int64(48<<20) * 3 / 2
	deadline := time.Now().Add(5 * time.Second)
	for debug.SetMemoryLimit(-1) < want && time.Now().Before(deadline) {
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	if got := debug.SetMemoryLimit(-1); got < want {
		t.Errorf("limit with 48 MiB live %d, want at least %d", got, want)
	}
	runtime.KeepAlive(ballast)
	stop()
	if got := debug.SetMemoryLimit(-1); got != math.MaxInt64 {
		t.Errorf("limit after stop %d", got)
	}
	runtime.GC()
	time.Sleep(20 * time.Millisecond)
	if got := debug.SetMemoryLimit(-1); got != math.MaxInt64 {
		t.Errorf("limit set again after stop: %d", got)
	}
}
