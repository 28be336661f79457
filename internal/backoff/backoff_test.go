package backoff

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"
)

func TestNextDoublesUpToTheCeiling(t *testing.T) {
	b := New(time.Second, 10*time.Second)
	want := []time.Duration{1, 2, 4, 8, 10, 10}
	for i, w := range want {
		if got := b.Next(); got != w*time.Second {
			t.Fatalf("wait %d = %v, want %v", i, got, w*time.Second)
		}
	}
	b.Reset()
	if got := b.Next(); got != time.Second {
		t.Errorf("after Reset: %v, want 1s", got)
	}
}

func TestFixedPeriod(t *testing.T) {
	for _, b := range []*Backoff{New(time.Second, time.Second), New(time.Second, 0)} {
		for i := 0; i < 3; i++ {
			if got := b.Next(); got != time.Second {
				t.Fatalf("wait %d = %v, want 1s every time", i, got)
			}
		}
	}
}

func TestJitterStaysAroundTheDelay(t *testing.T) {
	for _, tc := range []struct {
		f      float64
		lo, hi float64 // bounds as fractions of the delay
	}{
		{0.25, 0.75, 1.25},
		{1, 0, 2},
		{5, 0, 2}, // clamped to 1
	} {
		b := New(100*time.Millisecond, 400*time.Millisecond).WithJitter(tc.f)
		for _, d := range []time.Duration{100, 200, 400, 400} {
			d *= time.Millisecond
			seen := map[time.Duration]bool{}
			for i := 0; i < 200; i++ {
				save := b.cur
				got := b.Next()
				b.cur = save // sample the same step again
				if got < time.Duration(tc.lo*float64(d)) || got > time.Duration(tc.hi*float64(d)) {
					t.Fatalf("jitter %v, delay %v: wait %v outside [%v, %v]", tc.f, d, got, tc.lo*float64(d), tc.hi*float64(d))
				}
				seen[got] = true
			}
			if len(seen) < 10 {
				t.Errorf("jitter %v, delay %v: only %d distinct waits in 200", tc.f, d, len(seen))
			}
			b.Next()
		}
	}
}

func TestWaitHonoursTheContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	if err := New(time.Hour, time.Hour).Wait(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Wait on a cancelled context = %v, want context.Canceled", err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := New(time.Hour, time.Hour).Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Wait past the deadline = %v, want context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Wait did not return when the context ended (%v)", d)
	}
}

func TestWaitSleeps(t *testing.T) {
	b := New(30*time.Millisecond, time.Second)
	start := time.Now()
	if err := b.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 30*time.Millisecond {
		t.Errorf("waited %v, want at least 30ms", d)
	}
	if got := b.Next(); got != 60*time.Millisecond {
		t.Errorf("after one Wait the next wait is %v, want 60ms", got)
	}
}

func TestLinearGrowsByTheStep(t *testing.T) {
	b := Linear(10*time.Millisecond, 35*time.Millisecond)
	var got []time.Duration
	for range 5 {
		got = append(got, b.Next())
	}
	want := []time.Duration{10 * time.Millisecond, 20 * time.Millisecond, 30 * time.Millisecond, 35 * time.Millisecond, 35 * time.Millisecond}
	if !slices.Equal(got, want) {
		t.Errorf("waits %v, want %v", got, want)
	}
	b.Reset()
	if d := b.Next(); d != 10*time.Millisecond {
		t.Errorf("after Reset: %v, want the first step", d)
	}
}
