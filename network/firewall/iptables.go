package firewall

import (
	"fmt"
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
