package firewall

import (
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"sync"
	"sync/atomic"
)

// Mode is how the rules are programmed: iptables (the default) or
// nftables (EnableNFTables in the net-conf).
type Mode string

const (
	IPTables Mode = "iptables"
	NFTables Mode = "nftables"
)

// ruleMode is one way of programming the rules. Firewall serialises calls.
type ruleMode interface {
	// ensure makes the kernel hold exactly cfg's rules and returns why it
	// changed something, one "what: why" entry per chain or table.
	ensure(cfg RuleConfig) ([]string, error)
	// remove deletes every rule of ours this mode programs and returns what
	// it removed, one entry per chain or table. Rules already gone are no
	// error.
	remove() ([]string, error)
	// hint says what the operator should check when ensure fails.
	hint() string
}

// Firewall keeps the ip-masq and forwarding rules of this host in place, in
// one Mode.
type Firewall struct {
	log  *slog.Logger
	mu   sync.Mutex // serialises ensure and remove
	mode Mode
	impl ruleMode

	ready     chan struct{}
	readyOnce sync.Once
	statusMu  sync.Mutex
	status    error

	resyncs, repairs atomic.Uint64 // for metrics
}

// Counts returns how many resync passes Run made and how many of them had
// to restore rules that were in place before (the first installation is
// not a repair).
func (f *Firewall) Counts() (resyncs, repairs uint64) { return f.resyncs.Load(), f.repairs.Load() }

var errNotEnsured = errors.New("firewall rules not ensured yet")

// NewFirewall is New(log, IPTables).
func NewFirewall(log *slog.Logger) (*Firewall, error) { return New(log, IPTables) }

// New finds what mode needs: for iptables, iptables and iptables-restore
// (an error when missing) and ip6tables and ip6tables-restore (an error
// later, from Ensure, only when IPv6 is configured); for nftables, a
// working nft. The error says what to install or which mode to choose.
func New(log *slog.Logger, mode Mode) (*Firewall, error) {
	if log == nil {
		log = slog.Default()
	}
	var (
		impl ruleMode
		err  error
	)
	switch mode {
	case IPTables:
		impl, err = newIPTMode(log, "iptables", "ip6tables")
		if errors.Is(err, exec.ErrNotFound) {
			err = fmt.Errorf("%w; install iptables, or set \"EnableNFTables\": true in the net-conf to program the rules with nftables", err)
		}
	case NFTables:
		impl, err = newNFTMode(log)
	default:
		err = fmt.Errorf("unknown mode %q", mode)
	}
	if err != nil {
		return nil, fmt.Errorf("firewall: %w", err)
	}
	return newWithMode(log, mode, impl), nil
}

func newWithMode(log *slog.Logger, mode Mode, impl ruleMode) *Firewall {
	return &Firewall{log: log, mode: mode, impl: impl, ready: make(chan struct{}), status: errNotEnsured}
}

// Mode says how this firewall programs the rules.
func (f *Firewall) Mode() Mode { return f.mode }

// Ready is closed once Ensure has put all rules in place for the first time.
func (f *Firewall) Ready() <-chan struct{} { return f.ready }

// Status returns nil when the last Ensure put all rules in place, else why
// not (for /readyz).
func (f *Firewall) Status() error {
	f.statusMu.Lock()
	defer f.statusMu.Unlock()
	return f.status
}

func (f *Firewall) setStatus(err error) {
	f.statusMu.Lock()
	f.status = err
	f.statusMu.Unlock()
	if err == nil {
		f.readyOnce.Do(func() { close(f.ready) })
	}
}

// Ensure makes the kernel's rules equal the desired set for cfg (see the
// design notes). It changes nothing when everything is in place, and
// reports whether it changed something. IPv6 rules are managed only when cfg
// has an IPv6 pair.
func (f *Firewall) Ensure(cfg RuleConfig) (changed bool, err error) {
	repairs, err := f.ensure(cfg)
	return len(repairs) > 0, err
}

// ensure is Ensure that says what it repaired, one "family table/chain: why"
// entry per chain (per table in nftables mode).
func (f *Firewall) ensure(cfg RuleConfig) ([]string, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	repairs, err := f.impl.ensure(cfg)
	f.setStatus(err)
	return repairs, err
}

// Remove deletes our rules of this mode in both families (for
// decommissioning a host, or when both features are off), logging one line
// per chain or table removed, and returns what it removed. Rules that are
// already gone are no error.
func (f *Firewall) Remove() ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	removed, err := f.impl.remove()
	for _, what := range removed {
		f.log.Info("firewall rules removed", "removed", what)
	}
	if err == nil {
		f.setStatus(errors.New("firewall rules removed"))
	} else {
		f.setStatus(err)
	}
	return removed, err
}
