package firewall

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/coreos/go-iptables/iptables"
)

// Firewall keeps the ip-masq and forwarding rules of this host in place.
type Firewall struct {
	log    *slog.Logger
	mu     sync.Mutex // serialises Ensure and Remove
	v4, v6 *iptFamily

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

// NewFirewall finds iptables and iptables-restore (an error when missing),
// and ip6tables and ip6tables-restore (an error later, from Ensure, only when
// IPv6 is configured).
func NewFirewall(log *slog.Logger) (*Firewall, error) {
	return newFirewall(log, "iptables", "ip6tables")
}

// newFirewall lets tests choose the binaries (iptables-legacy, ...).
func newFirewall(log *slog.Logger, v4, v6 string) (*Firewall, error) {
	if log == nil {
		log = slog.Default()
	}
	f := &Firewall{
		log:    log,
		v4:     newIPTFamily("IPv4", v4, iptables.ProtocolIPv4, multicastV4),
		v6:     newIPTFamily("IPv6", v6, iptables.ProtocolIPv6, multicastV6),
		ready:  make(chan struct{}),
		status: errNotEnsured,
	}
	if f.v4.err != nil {
		return nil, fmt.Errorf("firewall: %w", f.v4.err)
	}
	return f, nil
}

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
// entry per chain.
func (f *Firewall) ensure(cfg RuleConfig) ([]string, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var (
		repairs []string
		errs    []error
	)
	for _, p := range []struct {
		fam             *iptFamily
		network, subnet netip.Prefix
	}{{f.v4, cfg.Network, cfg.Subnet}, {f.v6, cfg.IPv6Network, cfg.IPv6Subnet}} {
		if !p.network.IsValid() {
			continue
		}
		if p.fam.err != nil {
			errs = append(errs, fmt.Errorf("%s rules: %w", p.fam.name, p.fam.err))
			continue
		}
		specs := []chainSpec{
			masqSpec(p.network, p.subnet, p.fam.multicast, p.fam.ipt.HasRandomFully() && !cfg.NoRandomFully, cfg.Masquerade),
			forwardSpec(p.network, cfg.Forward),
		}
		for _, spec := range specs {
			why, err := f.reconcile(p.fam, spec)
			if len(why) > 0 {
				repairs = append(repairs, fmt.Sprintf("%s %s/%s: %s", p.fam.name, spec.table, spec.chain, strings.Join(why, ", ")))
			}
			if err != nil {
				errs = append(errs, err)
			}
		}
	}
	err := errors.Join(errs...)
	f.setStatus(err)
	return repairs, err
}

// reconcile reads spec's chains, applies the plan if there is one and checks
// the result. It returns why it changed something.
func (f *Firewall) reconcile(fam *iptFamily, spec chainSpec) ([]string, error) {
	wrap := func(err error) error {
		return fmt.Errorf("%s %s/%s: %w", fam.name, spec.table, spec.chain, err)
	}
	st, err := fam.read(spec)
	if err != nil {
		return nil, wrap(err)
	}
	cmds, why := planChain(spec, st, fam.alias)
	if len(cmds) == 0 {
		return nil, nil
	}
	if err := fam.apply(spec.table, cmds); err != nil {
		return nil, wrap(err)
	}
	if st, err = fam.read(spec); err != nil {
		return why, wrap(err)
	}
	if learned := learnAliases(spec, st, fam.alias); len(learned) > 0 {
		f.log.Warn("iptables prints our rules differently than expected, comparing with its form from now on",
			"family", fam.name, "table", spec.table, "chain", spec.chain, "aliases", strings.Join(learned, "; "))
	}
	if cmds, again := planChain(spec, st, fam.alias); len(cmds) > 0 {
		return why, wrap(fmt.Errorf("rules still differ right after writing them (%s): is another tool rewriting %s?",
			strings.Join(again, ", "), spec.hook))
	}
	return why, nil
}

// Remove deletes our chains and their jumps in both families (for
// decommissioning a host). Rules that are already gone are no error.
func (f *Firewall) Remove() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	var errs []error
	for _, fam := range []*iptFamily{f.v4, f.v6} {
		if fam.err != nil {
			continue // nothing of ours can be there without the binaries
		}
		for _, spec := range []chainSpec{masqSpec(netip.Prefix{}, netip.Prefix{}, fam.multicast, false, false), forwardSpec(netip.Prefix{}, false)} {
			why, err := f.reconcile(fam, spec)
			if err != nil {
				errs = append(errs, err)
			} else if len(why) > 0 {
				f.log.Info("firewall chain removed", "family", fam.name, "table", spec.table, "chain", spec.chain)
			}
		}
	}
	err := errors.Join(errs...)
	if err == nil {
		err = errors.New("firewall rules removed")
	}
	f.setStatus(err)
	return errors.Join(errs...)
}
