// Package backoff spaces out the retries of an operation that failed: the
// wait starts at a first delay and doubles after each retry up to a
// ceiling, can be randomised so that many hosts retrying at the same
// moment spread out, and ends early when the context does.
//
// Every retry loop of the daemon uses it (dialling etcd, waiting for the
// net-conf, acquiring a lease, re-listing after a broken watch, losing an
// acquisition race), so they all honour cancellation the same way.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff is the delay between the retries of one loop. Each loop owns its
// own; it is not safe for concurrent use. Make one with New.
type Backoff struct {
	first, max time.Duration
	step       time.Duration // > 0: the delay grows by step, not doubling
	jitter     float64
	cur        time.Duration
}

// New returns a Backoff whose first wait is first, doubling after each
// wait up to ceiling. A ceiling below first means every wait is first: a
// fixed retry period.
func New(first, ceiling time.Duration) *Backoff {
	return &Backoff{first: first, max: max(first, ceiling), cur: first}
}

// Linear returns a Backoff whose delay grows by step after each wait (step,
// 2·step, 3·step, ...) up to ceiling: for contention that clears in a few
// rounds, where doubling would keep the last racers waiting longest.
func Linear(step, ceiling time.Duration) *Backoff {
	return &Backoff{first: step, max: max(step, ceiling), step: step, cur: step}
}

// WithJitter randomises each wait: for a current delay d it is drawn
// uniformly from [d - f·d, d + f·d]. f is clamped to [0, 1]; 1 means
// anywhere from no wait to twice the delay. It returns b.
func (b *Backoff) WithJitter(f float64) *Backoff {
	b.jitter = min(max(f, 0), 1)
	return b
}

// Next returns the next wait and doubles the delay (or adds the step of a
// Linear one), up to the ceiling, for the one after.
func (b *Backoff) Next() time.Duration {
	d := b.cur
	if b.step > 0 {
		b.cur = min(b.cur+b.step, b.max)
	} else {
		b.cur = min(b.cur*2, b.max)
	}
	if b.jitter == 0 {
		return d
	}
	spread := time.Duration(float64(d) * b.jitter)
	return d - spread + time.Duration(rand.Int64N(int64(2*spread)+1))
}

// Reset makes the next wait the first one again, after a success.
func (b *Backoff) Reset() { b.cur = b.first }

// Wait sleeps for the next wait (see Next). It returns ctx.Err() as soon as
// ctx is done, nil once the wait is over.
func (b *Backoff) Wait(ctx context.Context) error {
	t := time.NewTimer(b.Next())
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
