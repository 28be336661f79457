package firewall

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/coreos/go-iptables/iptables"
)

// iptFamily is one IP family's iptables binaries.
type iptFamily struct {
	name      string // IPv4 or IPv6
	ipt       *iptables.IPTables
	restore   string // path of the matching iptables-restore
	multicast netip.Prefix
	err       error // why the binaries are unusable
	alias     ruleAliases
}

func newIPTFamily(name, binary string, proto iptables.Protocol, multicast netip.Prefix) *iptFamily {
	fam := &iptFamily{name: name, multicast: multicast, alias: ruleAliases{}}
	path, err := exec.LookPath(binary)
	if err == nil {
		fam.ipt, err = iptables.New(iptables.IPFamily(proto), iptables.Path(path))
	}
	if err == nil {
		fam.restore, err = exec.LookPath(binary + "-restore")
	}
	if err != nil {
		fam.err = fmt.Errorf("%s: %w", binary, err)
	}
	return fam
}

// read lists spec's chain and hook: iptables -t TABLE -S CHAIN, -S HOOK.
func (fam *iptFamily) read(spec chainSpec) (chainState, error) {
	var st chainState
	exists, err := fam.ipt.ChainExists(spec.table, spec.chain)
	if err != nil {
		return st, fmt.Errorf("checking chain %s: %w", spec.chain, err)
	}
	if exists {
		lines, err := fam.ipt.List(spec.table, spec.chain)
		if err != nil {
			return st, fmt.Errorf("listing chain %s: %w", spec.chain, err)
		}
		st.exists, st.rules = true, listedKeys(lines, spec.chain)
	}
	lines, err := fam.ipt.List(spec.table, spec.hook)
	if err != nil {
		return st, fmt.Errorf("listing chain %s: %w", spec.hook, err)
	}
	st.hook = listedKeys(lines, spec.hook)
	return st, nil
}

// restoreLineRE finds the line iptables-restore choked on: "line 3 failed"
// (nft) or "Error occurred at line: 3" (legacy, parse errors).
var restoreLineRE = regexp.MustCompile(`line:? (\d+)`)

// apply runs cmds on table in one transaction:
// iptables-restore --noflush -w <<< "*TABLE\n$cmds\nCOMMIT".
func (fam *iptFamily) apply(table string, cmds []string) error {
	lines := slices.Concat([]string{"*" + table}, cmds, []string{"COMMIT"})
	cmd := exec.Command(fam.restore, "--noflush", "-w")
	cmd.Stdin = strings.NewReader(strings.Join(lines, "\n") + "\n")
	out, err := cmd.CombinedOutput()
	if err == nil {
		return nil
	}
	msg := strings.Join(strings.Fields(string(out)), " ")
	if m := restoreLineRE.FindStringSubmatch(msg); m != nil {
		if n, _ := strconv.Atoi(m[1]); n >= 1 && n <= len(lines) {
			msg += fmt.Sprintf(" (line %d: %s)", n, lines[n-1])
		}
	}
	return fmt.Errorf("%s --noflush: %w: %s", fam.restore, err, msg)
}

// iptMode programs the rules with iptables-restore, one chain at a time
// (see the design notes).
type iptMode struct {
	log    *slog.Logger
	v4, v6 *iptFamily
}

// newIPTMode finds the binaries v4 and v6 (iptables, ip6tables, or the
// -legacy ones in tests); only v4 missing is an error here.
func newIPTMode(log *slog.Logger, v4, v6 string) (*iptMode, error) {
	m := &iptMode{
		log: log,
		v4:  newIPTFamily("IPv4", v4, iptables.ProtocolIPv4, multicastV4),
		v6:  newIPTFamily("IPv6", v6, iptables.ProtocolIPv6, multicastV6),
	}
	if m.v4.err != nil {
		return nil, m.v4.err
	}
	return m, nil
}

func (m *iptMode) hint() string {
	return "that iptables, ip6tables and their -restore commands work (iptables -t nat -S) and whether another tool deletes FLANNEL-* chains"
}

func (m *iptMode) ensure(cfg RuleConfig) ([]string, error) {
	var (
		repairs []string
		errs    []error
	)
	for _, p := range []struct {
		fam             *iptFamily
		network, subnet netip.Prefix
	}{{m.v4, cfg.Network, cfg.Subnet}, {m.v6, cfg.IPv6Network, cfg.IPv6Subnet}} {
		if !p.network.IsValid() {
			continue
		}
		if p.fam.err != nil {
			errs = append(errs, fmt.Errorf("%s rules: %w", p.fam.name, p.fam.err))
			continue
		}
		specs := []chainSpec{
			masqSpec(p.network, p.subnet, p.fam.multicast, p.fam.ipt.HasRandomFully() && !cfg.FullyRandomDisable, cfg.Masquerade),
			forwardSpec(p.network, cfg.Forward),
		}
		for _, spec := range specs {
			why, err := m.reconcile(p.fam, spec)
			if len(why) > 0 {
				repairs = append(repairs, fmt.Sprintf("%s %s/%s: %s", p.fam.name, spec.table, spec.chain, strings.Join(why, ", ")))
			}
			if err != nil {
				errs = append(errs, err)
			}
		}
	}
	return repairs, errors.Join(errs...)
}

// reconcile reads spec's chains, applies the plan if there is one and checks
// the result. It returns why it changed something.
func (m *iptMode) reconcile(fam *iptFamily, spec chainSpec) ([]string, error) {
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
		m.log.Warn("iptables prints our rules differently than expected, comparing with its form from now on",
			"family", fam.name, "table", spec.table, "chain", spec.chain, "aliases", strings.Join(learned, "; "))
	}
	if cmds, again := planChain(spec, st, fam.alias); len(cmds) > 0 {
		return why, wrap(fmt.Errorf("rules still differ right after writing them (%s): is another tool rewriting %s?",
			strings.Join(again, ", "), spec.hook))
	}
	return why, nil
}

// remove deletes our chains and their jumps in both families.
func (m *iptMode) remove() ([]string, error) {
	var (
		removed []string
		errs    []error
	)
	for _, fam := range []*iptFamily{m.v4, m.v6} {
		if fam.err != nil {
			continue // nothing of ours can be there without the binaries
		}
		for _, spec := range []chainSpec{masqSpec(netip.Prefix{}, netip.Prefix{}, fam.multicast, false, false), forwardSpec(netip.Prefix{}, false)} {
			why, err := m.reconcile(fam, spec)
			if err != nil {
				errs = append(errs, err)
			} else if len(why) > 0 {
				removed = append(removed, fmt.Sprintf("iptables chain %s %s/%s and its jump from %s", fam.name, spec.table, spec.chain, spec.hook))
			}
		}
	}
	return removed, errors.Join(errs...)
}

// newFirewall is New(log, IPTables) with the binaries chosen (tests use
// iptables-legacy, or a missing ip6tables).
func newFirewall(log *slog.Logger, v4, v6 string) (*Firewall, error) {
	if log == nil {
		log = slog.Default()
	}
	m, err := newIPTMode(log, v4, v6)
	if err != nil {
		return nil, fmt.Errorf("firewall: %w", err)
	}
	return newWithMode(log, IPTables, m), nil
}
