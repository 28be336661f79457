package firewall

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"
)

// Run calls Ensure now and every resync period until ctx is done, then
// returns nil, leaving the rules in place. It logs one line per event: the
// first installation, each restoration of rules someone changed, the start
// of a failure (or a change of error) and the recovery. It returns an error
// only for an invalid cfg or resync.
func (f *Firewall) Run(ctx context.Context, cfg RuleConfig, resync time.Duration) error {
	return f.run(ctx, cfg, resync, nil)
}

// run is Run; installed (may be nil) is closed once cfg's rules were in
// place after a pass, so a caller can wait for this configuration's rules
// rather than for the first configuration's (Ready).
func (f *Firewall) run(ctx context.Context, cfg RuleConfig, resync time.Duration, installed chan<- struct{}) error {
	if err := cfg.validate(); err != nil {
		return err
	}
	if resync <= 0 {
		return fmt.Errorf("firewall: resync period must be positive, got %v", resync)
	}
	tick := time.NewTicker(resync)
	defer tick.Stop()
	var (
		inPlace bool   // the rules were in place after a pass
		failing string // the error logged last, "" when rules are in place
	)
	for {
		repairs, err := f.ensure(cfg)
		f.resyncs.Add(1)
		switch {
		case len(repairs) > 0 && inPlace:
			f.repairs.Add(1)
			f.log.Warn("firewall rules restored", "repairs", strings.Join(repairs, "; "))
		case len(repairs) > 0:
			f.log.Info("firewall rules installed", "repairs", strings.Join(repairs, "; "))
		}
		switch {
		case err != nil && err.Error() != failing:
			f.log.Error("firewall rules not in place, retrying every resync period", "mode", f.mode, "err", err, "resync", resync,
				"check", f.impl.hint())
		case err == nil && len(repairs) == 0 && failing != "":
			f.log.Info("firewall rules in place again")
		case err == nil && len(repairs) == 0 && !inPlace:
			f.log.Info("firewall rules already in place")
		}
		if err != nil {
			failing = err.Error()
		} else {
			if installed != nil {
				close(installed)
				installed = nil
			}
			failing, inPlace = "", true
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// Runner keeps the rules of the current lease in place, restarting the
// resync loop (Firewall.Run) when the lease changes. Apply and Stop are
// called from one goroutine; Status and Counts from any.
type Runner struct {
	fw     *Firewall
	resync time.Duration
	cancel context.CancelFunc
	done   chan struct{}
}

// NewRunner finds what mode needs (see New). A resync period that is not
// positive means 5 seconds.
func NewRunner(log *slog.Logger, resync time.Duration, mode Mode) (*Runner, error) {
	fw, err := New(log, mode)
	if err != nil {
		return nil, err
	}
	if resync <= 0 {
		resync = 5 * time.Second
	}
	return &Runner{fw: fw, resync: resync}, nil
}

// Apply (re)starts the resync loop for rc and waits until rc's rules were
// in place once, so readiness is only signalled with the rules installed,
// and a new lease's subnet.env is written only once its rules are (not
// merely the first lease's).
func (r *Runner) Apply(ctx context.Context, rc RuleConfig) error {
	r.Stop()
	rctx, cancel := context.WithCancel(ctx)
	r.cancel, r.done = cancel, make(chan struct{})
	errc := make(chan error, 1)
	installed := make(chan struct{})
	go func() {
		defer close(r.done)
		errc <- r.fw.run(rctx, rc, r.resync, installed)
	}()
	select {
	case <-installed:
		return nil
	case err := <-errc:
		return fmt.Errorf("%s rules: %w", r.fw.mode, err)
	case <-time.After(30 * time.Second):
		return fmt.Errorf("%s rules not in place after 30s: %w", r.fw.mode, r.fw.Status())
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

// Mode says how the rules are programmed.
func (r *Runner) Mode() Mode { return r.fw.mode }

// Status is the firewall's Status: nil when the last resync put all rules
// in place (for /readyz).
func (r *Runner) Status() error { return r.fw.Status() }

// Counts is the firewall's Counts: resync passes made, and those that had
// to restore rules (for metrics).
func (r *Runner) Counts() (resyncs, repairs uint64) { return r.fw.Counts() }
