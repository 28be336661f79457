package firewall

// Firewall rules for ip-masq and forwarding, the way upstream flannel lays
// them out, so operators and other tools recognise them.
//
// Design notes.
//
// Two chains of ours, each hooked by a single jump placed first in a built-in
// chain, per IP family (iptables for IPv4, ip6tables for IPv6):
//
//	nat    POSTROUTING -> FLANNEL-POSTRTG  comment "flanneld masq"     (ip-masq)
//	filter FORWARD     -> FLANNEL-FWD      comment "flanneld forward"  (forward rules)
//
// The state is declarative: masqSpec and forwardSpec turn a RuleConfig into
// the exact rule lists, Ensure reads the kernel (iptables -S), and planChain computes the
// difference as iptables-restore commands. A chain whose content differs in
// any way (a rule deleted by hand, a rule of an old Network or subnet, wrong
// order) is rewritten as a whole; a missing, misplaced or duplicated jump is
// replaced by one jump at position 1. All commands of one table go to one
// `iptables-restore --noflush` run, which the kernel applies as a single
// transaction: there is no moment when the chain is empty or unhooked, so no
// connection is set up with the wrong NAT while we repair. A feature that is
// off has its jumps and chain removed in the same way.
//
// iptables -S prints rules in its own normal form (-s 10.0.0.1/32, quoted
// comments, counters with -v in nft mode). ruleKey renders both our rules and
// listed ones in that form. After each write Ensure re-reads the chain; should
// an iptables binary still print a rule differently, its printed form is
// remembered as an alias of ours (with a warning) instead of rewriting the
// chain on every resync.
//
// Rules are left in place when the daemon stops, so a restart does not
// interrupt pod traffic; Remove deletes them when a host is decommissioned.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coreos/go-iptables/iptables"
)

const (
	masqChain   = "FLANNEL-POSTRTG"
	fwdChain    = "FLANNEL-FWD"
	masqComment = "flanneld masq"
	fwdComment  = "flanneld forward"

	// kubeProxyMark marks packets that kube-proxy masquerades itself;
	// masquerading them twice breaks on some kernels.
	kubeProxyMark = "0x4000/0x4000"
)

var (
	multicastV4 = netip.MustParsePrefix("224.0.0.0/4")
	multicastV6 = netip.MustParsePrefix("ff00::/8")
)

// RuleConfig is the whole desired firewall state of a host.
type RuleConfig struct {
	// Network is the cluster's IPv4 network, Subnet this host's lease in it.
	Network, Subnet netip.Prefix
	// IPv6Network and IPv6Subnet are the IPv6 pair, both zero when IPv6 is
	// off (ip6tables is then left alone).
	IPv6Network, IPv6Subnet netip.Prefix
	// Masquerade turns on ip-masq (nat FLANNEL-POSTRTG).
	Masquerade bool
	// Forward turns on the ACCEPT rules for the Network (filter FLANNEL-FWD).
	Forward bool
}

func (c RuleConfig) validate() error {
	if err := checkPair("IPv4", c.Network, c.Subnet, true); err != nil {
		return err
	}
	if !c.IPv6Network.IsValid() && !c.IPv6Subnet.IsValid() {
		return nil
	}
	return checkPair("IPv6", c.IPv6Network, c.IPv6Subnet, false)
}

func checkPair(fam string, network, subnet netip.Prefix, v4 bool) error {
	for _, p := range []netip.Prefix{network, subnet} {
		if !p.IsValid() || p.Addr().Is4() != v4 || p.Addr().Is4In6() {
			return fmt.Errorf("firewall config: %s network %v and subnet %v must both be valid %s prefixes", fam, network, subnet, fam)
		}
	}
	if subnet.Bits() < network.Bits() || !network.Contains(subnet.Addr()) {
		return fmt.Errorf("firewall config: %s subnet %v is not inside network %v", fam, subnet, network)
	}
	return nil
}

// chainSpec is one chain of ours and the jump that hooks it into a built-in
// chain. With on false both are to be removed and rules is unused.
type chainSpec struct {
	table, hook, chain string
	jump               []string
	rules              [][]string
	on                 bool
}

// masqSpec is ip-masq for the pair network, subnet: nat FLANNEL-POSTRTG.
func masqSpec(network, subnet, multicast netip.Prefix, randomFully, on bool) chainSpec {
	comment := []string{"-m", "comment", "--comment", masqComment}
	ret := []string{"-j", "RETURN"}
	masq := []string{"-j", "MASQUERADE"}
	if randomFully {
		masq = append(masq, "--random-fully")
	}
	spec := chainSpec{
		table: "nat", hook: "POSTROUTING", chain: masqChain, on: on,
		jump: slices.Concat(comment, []string{"-j", masqChain}),
	}
	if !on {
		return spec
	}
	n, s, m := network.Masked().String(), subnet.Masked().String(), multicast.String()
	spec.rules = [][]string{
		// kube-proxy masquerades what it marked.
		slices.Concat([]string{"-m", "mark", "--mark", kubeProxyMark}, comment, ret),
		// Pod to pod keeps the pod's address, both ways.
		slices.Concat([]string{"-s", s, "-d", n}, comment, ret),
		slices.Concat([]string{"-s", n, "-d", s}, comment, ret),
		// Outside traffic for a local pod keeps its source.
		slices.Concat([]string{"!", "-s", n, "-d", s}, comment, ret),
		// Pod to the outside world, multicast excepted.
		slices.Concat([]string{"-s", n, "!", "-d", m}, comment, masq),
		// Host or outside to a remote pod.
		slices.Concat([]string{"!", "-s", n, "-d", n}, comment, masq),
	}
	return spec
}

// forwardSpec accepts forwarded traffic from and to network: filter FLANNEL-FWD.
func forwardSpec(network netip.Prefix, on bool) chainSpec {
	comment := []string{"-m", "comment", "--comment", fwdComment}
	spec := chainSpec{
		table: "filter", hook: "FORWARD", chain: fwdChain, on: on,
		jump: slices.Concat(comment, []string{"-j", fwdChain}),
	}
	if !on {
		return spec
	}
	n := network.Masked().String()
	spec.rules = [][]string{
		slices.Concat([]string{"-s", n}, comment, []string{"-j", "ACCEPT"}),
		slices.Concat([]string{"-d", n}, comment, []string{"-j", "ACCEPT"}),
	}
	return spec
}

// ruleKey renders a rule spec (the arguments after "-A CHAIN") the way
// iptables -S prints it: addresses as masked prefixes, arguments with spaces
// in double quotes, no counters. The result is also valid iptables-restore
// syntax.
func ruleKey(args []string) string {
	out := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "-c" && i+3 == len(args) { // counters, iptables -v -S in nft mode
			break
		}
		if flag, ok := addrFlags[a]; ok && i+1 < len(args) {
			i++
			out = append(out, flag, canonAddr(args[i]))
			continue
		}
		out = append(out, quoteArg(a))
	}
	return strings.Join(out, " ")
}

var addrFlags = map[string]string{
	"-s": "-s", "--source": "-s", "--src": "-s",
	"-d": "-d", "--destination": "-d", "--dst": "-d",
}

func canonAddr(s string) string {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked().String()
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.PrefixFrom(a, a.BitLen()).String()
	}
	return s
}

func quoteArg(a string) string {
	if a != "" && !strings.ContainsAny(a, " \t\"\\'") {
		return a
	}
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(a) + `"`
}

// splitArgs splits an iptables -S line into arguments, honouring double
// quotes and backslash escapes inside them.
func splitArgs(line string) []string {
	var (
		args   []string
		cur    strings.Builder
		inArg  bool
		quoted bool
	)
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case quoted && c == '\\' && i+1 < len(line):
			i++
			cur.WriteByte(line[i])
		case c == '"':
			quoted, inArg = !quoted, true
		case !quoted && (c == ' ' || c == '\t'):
			if inArg {
				args = append(args, cur.String())
				cur.Reset()
				inArg = false
			}
		default:
			cur.WriteByte(c)
			inArg = true
		}
	}
	if inArg {
		args = append(args, cur.String())
	}
	return args
}

// listedKeys returns the keys of the "-A chain ..." lines of iptables -S
// output, in order; -N and -P lines are skipped.
func listedKeys(lines []string, chain string) []string {
	var keys []string
	for _, l := range lines {
		args := splitArgs(l)
		if len(args) >= 2 && args[0] == "-A" && args[1] == chain {
			keys = append(keys, ruleKey(args[2:]))
		}
	}
	return keys
}

// chainState is what the kernel holds for one chainSpec, as rule keys.
type chainState struct {
	exists bool
	rules  []string // our chain, in order
	hook   []string // the built-in chain, in order
}

// ruleAliases maps the key of one of our rules to the form some iptables binary
// prints it in, when the two differ (see the design notes).
type ruleAliases map[string]string

func (al ruleAliases) same(want, got string) bool {
	return got == want || (al[want] != "" && al[want] == got)
}

// jumpsTo returns the positions of the rules of hook that jump to chain.
func jumpsTo(hook []string, chain string) []int {
	var idx []int
	for i, r := range hook {
		if strings.Contains(" "+r+" ", " -j "+chain+" ") {
			idx = append(idx, i)
		}
	}
	return idx
}

// planChain returns the iptables-restore commands (without the table header and
// COMMIT) that turn st into spec, and why they are needed; both are empty
// when st already matches spec.
func planChain(spec chainSpec, st chainState, al ruleAliases) (cmds, why []string) {
	jump := ruleKey(spec.jump)
	jumps := jumpsTo(st.hook, spec.chain)
	if !spec.on {
		for _, i := range jumps {
			cmds = append(cmds, "-D "+spec.hook+" "+st.hook[i])
		}
		if st.exists {
			cmds = append(cmds, ":"+spec.chain+" - [0:0]", "-X "+spec.chain)
		}
		if len(cmds) > 0 {
			why = append(why, "feature off: removing chain and jump")
		}
		return cmds, why
	}

	switch {
	case !st.exists:
		why = append(why, "chain missing")
	case !sameRules(spec.rules, st.rules, al):
		why = append(why, fmt.Sprintf("chain holds %d rules that differ from the %d desired", len(st.rules), len(spec.rules)))
	}
	if len(why) > 0 {
		cmds = append(cmds, ":"+spec.chain+" - [0:0]")
		for _, r := range spec.rules {
			cmds = append(cmds, "-A "+spec.chain+" "+ruleKey(r))
		}
	}

	switch {
	case len(jumps) == 0:
		why = append(why, "jump from "+spec.hook+" missing")
	case jumps[0] != 0:
		why = append(why, "jump not first in "+spec.hook)
	case len(jumps) > 1:
		why = append(why, fmt.Sprintf("%d jumps in %s", len(jumps), spec.hook))
	case !al.same(jump, st.hook[0]):
		why = append(why, "jump differs: "+st.hook[0])
	default:
		return cmds, why
	}
	for _, i := range jumps {
		cmds = append(cmds, "-D "+spec.hook+" "+st.hook[i])
	}
	cmds = append(cmds, "-I "+spec.hook+" 1 "+jump)
	return cmds, why
}

func sameRules(want [][]string, got []string, al ruleAliases) bool {
	if len(want) != len(got) {
		return false
	}
	for i, w := range want {
		if !al.same(ruleKey(w), got[i]) {
			return false
		}
	}
	return true
}

// learnAliases records in al how iptables printed the rules we just wrote, where
// that differs from our keys, and returns the new aliases as "ours => printed".
func learnAliases(spec chainSpec, st chainState, al ruleAliases) []string {
	if !spec.on {
		return nil
	}
	var learned []string
	add := func(want, got string) {
		if got != want && al[want] != got {
			al[want] = got
			learned = append(learned, want+" => "+got)
		}
	}
	if len(st.rules) == len(spec.rules) {
		for i, r := range spec.rules {
			add(ruleKey(r), st.rules[i])
		}
	}
	if j := jumpsTo(st.hook, spec.chain); len(j) == 1 && j[0] == 0 {
		add(ruleKey(spec.jump), st.hook[0])
	}
	return learned
}

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
			masqSpec(p.network, p.subnet, p.fam.multicast, p.fam.ipt.HasRandomFully(), cfg.Masquerade),
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

// Run calls Ensure now and every resync period until ctx is done, then
// returns nil, leaving the rules in place. It logs one line per event: the
// first installation, each restoration of rules someone changed, the start
// of a failure (or a change of error) and the recovery. It returns an error
// only for an invalid cfg or resync.
func (f *Firewall) Run(ctx context.Context, cfg RuleConfig, resync time.Duration) error {
	if err := cfg.validate(); err != nil {
		return err
	}
	if resync <= 0 {
		return fmt.Errorf("firewall: resync period must be positive, got %v", resync)
	}
	tick := time.NewTicker(resync)
	defer tick.Stop()
	var (
		installed bool
		failing   string // the error logged last, "" when rules are in place
	)
	for {
		repairs, err := f.ensure(cfg)
		f.resyncs.Add(1)
		switch {
		case len(repairs) > 0 && installed:
			f.repairs.Add(1)
			f.log.Warn("firewall rules restored", "repairs", strings.Join(repairs, "; "))
		case len(repairs) > 0:
			f.log.Info("firewall rules installed", "repairs", strings.Join(repairs, "; "))
		}
		switch {
		case err != nil && err.Error() != failing:
			f.log.Error("firewall rules not in place, retrying every resync period", "err", err, "resync", resync,
				"check", "that iptables, ip6tables and their -restore commands work (iptables -t nat -S) and whether another tool deletes FLANNEL-* chains")
		case err == nil && len(repairs) == 0 && failing != "":
			f.log.Info("firewall rules in place again")
		case err == nil && len(repairs) == 0 && !installed:
			f.log.Info("firewall rules already in place")
		}
		if err != nil {
			failing = err.Error()
		} else {
			failing, installed = "", true
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// procSys is where sysctls live; tests in a private namespace use it as is.
const procSys = "/proc/sys"

// EnableForwarding sets net.ipv4.ip_forward=1, and
// net.ipv6.conf.all.forwarding=1 when v6 is set (sysctl -w KEY=1), logging
// only values it changed.
func EnableForwarding(log *slog.Logger, v6 bool) error {
	if log == nil {
		log = slog.Default()
	}
	keys := []string{"net/ipv4/ip_forward"}
	if v6 {
		keys = append(keys, "net/ipv6/conf/all/forwarding")
	}
	var errs []error
	for _, key := range keys {
		errs = append(errs, enableSysctl(log, key))
	}
	return errors.Join(errs...)
}

func enableSysctl(log *slog.Logger, key string) error {
	name := strings.ReplaceAll(key, "/", ".")
	path := filepath.Join(procSys, key)
	old, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading sysctl %s: %w", name, err)
	}
	if strings.TrimSpace(string(old)) == "1" {
		return nil
	}
	if err := os.WriteFile(path, []byte("1\n"), 0o644); err != nil {
		return fmt.Errorf("setting sysctl %s=1 (is /proc/sys writable, e.g. a privileged container?): %w", name, err)
	}
	log.Info("enabled forwarding", "sysctl", name, "was", strings.TrimSpace(string(old)))
	return nil
}
