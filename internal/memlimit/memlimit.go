// Package memlimit keeps the Go runtime's soft memory limit just above
// what the daemon needs, so that its resident memory follows its live
// heap more closely than GOGC alone makes it.
//
// With GOGC=100 the heap grows to twice what the last collection found
// live before the next one, and the runtime keeps what it mapped for
// minutes: at 10,000 vxlan peers, 28 MiB live was 58 MiB of heap and
// 78 MiB resident. A soft limit makes the collector run, and the
// scavenger return memory, as the total nears it. Here the limit is the larger of a floor and the memory
// outside the heap plus the live heap plus half of it again, set again
// after every collection:
//
//   - below the floor the pacer of GOGC decides as before (a small
//     cluster never meets the limit, and a start, whose live heap grows
//     from nothing, meets it only at its end);
//   - above it, the collector always has at least half the live heap of
//     room, so a bigger cluster costs at most the collections GOGC=50
//     would, never the continuous collection of a limit below the live
//     heap.
//
// An operator's GOMEMLIMIT wins: the daemon does not start the tuner then.
package memlimit

import (
	"math"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
)

// Floor is the daemon's default: its Go memory at 10,000 vxlan peers is
// about 29 MiB (22 MiB live, 7 MiB of stacks and runtime metadata), so
// 40 MiB leaves the collector 11-13 MiB of room there (in-process, a
// start of 10,000 vxlan peers took 3-9% more CPU with this limit).
const Floor = 40 << 20

// Room is the least room above the live heap, as a fraction of it.
const Room = 0.5

// Start keeps the limit at max(floor, other + live × (1 + room)) until
// stop is called, which lifts it.
func Start(floor uint64, room float64) (stop func()) {
	t := &tuner{floor: floor, room: room, samples: []metrics.Sample{
		{Name: "/gc/heap/live:bytes"},
		{Name: "/memory/classes/total:bytes"},
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/memory/classes/heap/unused:bytes"},
		{Name: "/memory/classes/heap/free:bytes"},
		{Name: "/memory/classes/heap/released:bytes"},
	}}
	t.update()
	t.arm()
	return func() {
		t.mu.Lock()
		defer t.mu.Unlock()
		t.stopped = true
		debug.SetMemoryLimit(math.MaxInt64)
	}
}

type tuner struct {
	floor   uint64
	room    float64
	mu      sync.Mutex // update against stop
	samples []metrics.Sample
	stopped bool
}

// sentinel is collected by every collection after the one it was made
// in; its cleanup sets the limit again and makes the next one. It holds
// a pointer so that it is never batched with other tiny objects.
type sentinel struct{ _ *byte }

func (t *tuner) arm() {
	runtime.AddCleanup(new(sentinel), func(t *tuner) {
		if t.update() {
			t.arm()
		}
	}, t)
}

// update sets the limit from the last collection's figures; it reports
// false once stopped.
func (t *tuner) update() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped {
		return false
	}
	metrics.Read(t.samples)
	var v [6]uint64
	for i, s := range t.samples {
		if s.Value.Kind() == metrics.KindUint64 {
			v[i] = s.Value.Uint64()
		}
	}
	live, total, heap := v[0], v[1], v[2]+v[3]+v[4]+v[5]
	var other uint64 // stacks, the collector's metadata, the runtime's own
	if total > heap {
		other = total - heap
	}
	debug.SetMemoryLimit(int64(limit(t.floor, t.room, live, other)))
	return true
}

// limit is max(floor, other + live × (1 + room)).
func limit(floor uint64, room float64, live, other uint64) uint64 {
	return max(floor, other+live+uint64(float64(live)*room))
}
