package firewall

import (
	"context"
	"fmt"
	"log/slog"
	"time"
)

// Runner keeps the rules of the current lease in place, restarting the
// resync loop (Firewall.Run) when the lease changes. Apply and Stop are
// called from one goroutine; Status and Counts from any.
type Runner struct {
	fw     *Firewall
	resync time.Duration
	cancel context.CancelFunc
	done   chan struct{}
}

// NewRunner finds the iptables binaries (see NewFirewall). A resync period
// that is not positive means 5 seconds.
func NewRunner(log *slog.Logger, resync time.Duration) (*Runner, error) {
	fw, err := NewFirewall(log)
	if err != nil {
		return nil, err
	}
	if resync <= 0 {
		resync = 5 * time.Second
	}
	return &Runner{fw: fw, resync: resync}, nil
}

// Apply (re)starts the resync loop for rc and waits until the rules were
// in place once, so readiness is only signalled with the rules installed.
func (r *Runner) Apply(ctx context.Context, rc RuleConfig) error {
	r.Stop()
	rctx, cancel := context.WithCancel(ctx)
	r.cancel, r.done = cancel, make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		defer close(r.done)
		errc <- r.fw.Run(rctx, rc, r.resync)
	}()
	select {
	case <-r.fw.Ready():
		return nil
	case err := <-errc:
		return fmt.Errorf("iptables rules: %w", err)
	case <-time.After(30 * time.Second):
		return fmt.Errorf("iptables rules not in place after 30s: %w", r.fw.Status())
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Stop ends the resync loop and waits for it, leaving the rules in place.
// It does nothing when no loop runs.
func (r *Runner) Stop() {
	if r.cancel != nil {
		r.cancel()
		<-r.done
		r.cancel = nil
	}
}

// Status is the firewall's Status: nil when the last resync put all rules
// in place (for /readyz).
func (r *Runner) Status() error { return r.fw.Status() }

// Counts is the firewall's Counts: resync passes made, and those that had
// to restore rules (for metrics).
func (r *Runner) Counts() (resyncs, repairs uint64) { return r.fw.Counts() }
