package firewall

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"strings"
	"time"

	"sigs.k8s.io/knftables"
)

// nftTimeout bounds one nft run.
const nftTimeout = 30 * time.Second

// nftMode programs the rules as two nftables tables, replaced whole in one
// transaction when anything in them differs (see the design notes).
type nftMode struct {
	log         *slog.Logger
	nft         knftables.Interface // without a default table: objects name theirs
	read        func(ctx context.Context, family knftables.Family, table string) (nftTableState, error)
	randomFully bool
	warnedRF    bool // the lack of randomFully was logged
	alias       ruleAliases
}

// errNoNFT is returned when nft is missing or unusable.
var errNoNFT = errors.New("install the nftables package (it provides nft), or leave EnableNFTables false to use iptables")

func newNFTMode(log *slog.Logger) (*nftMode, error) {
	path, err := exec.LookPath("nft")
	if err != nil {
		return nil, fmt.Errorf("nftables mode: %w: %w", err, errNoNFT)
	}
	nft, err := knftables.New("", "")
	if err != nil {
		return nil, fmt.Errorf("nftables mode: %s does not work (%v): %w", path, err, errNoNFT)
	}
	m := &nftMode{log: log, nft: nft, alias: ruleAliases{}, read: nftReader(path)}
	m.randomFully = m.checkRandomFully()
	return m, nil
}

// newFakeNFTMode runs on knftables' Fake (for tests).
func newFakeNFTMode(log *slog.Logger, fake *knftables.Fake) *nftMode {
	return &nftMode{log: log, nft: fake, alias: ruleAliases{}, randomFully: true,
		read: func(_ context.Context, family knftables.Family, table string) (nftTableState, error) {
			return fakeTableState(fake, family, table), nil
		}}
}

// checkRandomFully asks nft --check whether a fully random masquerade rule
// would be accepted (nothing is written).
func (m *nftMode) checkRandomFully() bool {
	ctx, cancel := context.WithTimeout(context.Background(), nftTimeout)
	defer cancel()
	probe := nftTable{family: knftables.IPv4Family, name: nftTableV4, on: true, chains: []nftChain{{
		name: nftMasqChain, typ: knftables.NATType, hook: knftables.PostroutingHook, priority: knftables.SNATPriority,
		rules: []nftRule{{rule: "ip saddr 10.0.0.0/8 masquerade fully-random"}},
	}}}
	tx := m.nft.NewTransaction()
	nftWrite(tx, probe)
	return m.nft.Check(ctx, tx) == nil
}

// nftReader lists one table with `nft -j list table FAMILY NAME`; a table
// that does not exist is no error.
func nftReader(path string) func(context.Context, knftables.Family, string) (nftTableState, error) {
	return func(ctx context.Context, family knftables.Family, table string) (nftTableState, error) {
		var stdout, stderr bytes.Buffer
		cmd := exec.CommandContext(ctx, path, "-j", "list", "table", string(family), table)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			msg := strings.TrimSpace(stderr.String())
			if strings.Contains(msg, "No such file or directory") {
				return nftTableState{}, nil
			}
			return nftTableState{}, fmt.Errorf("nft -j list table %s %s: %w: %s", family, table, err, strings.Join(strings.Fields(msg), " "))
		}
		return parseNFTList(stdout.Bytes(), table)
	}
}

func (m *nftMode) hint() string {
	return "that nft works (nft list ruleset) and whether another tool deletes the flannel-ipv4 / flannel-ipv6 tables"
}

func (m *nftMode) ensure(cfg RuleConfig) ([]string, error) {
	if !m.randomFully && !m.warnedRF && cfg.Masquerade && !cfg.FullyRandomDisable {
		m.warnedRF = true
		m.log.Warn("nft or the kernel lacks masquerade fully-random; masquerading without it")
	}
	return m.sync(nftTables(cfg, m.randomFully))
}

func (m *nftMode) remove() ([]string, error) {
	why, err := m.sync(nftTables(RuleConfig{}, false)) // no family: every table off
	removed := make([]string, 0, len(why))
	for _, w := range why {
		removed = append(removed, "nftables table "+strings.TrimSuffix(w, ": "+nftNotWanted))
	}
	return removed, err
}

// sync reads the tables, rewrites those that differ from tables in one
// transaction and checks the result. It returns why it changed something,
// one "family table: why" entry per table.
func (m *nftMode) sync(tables []nftTable) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), nftTimeout)
	defer cancel()
	states, err := m.readAll(ctx, tables)
	if err != nil {
		return nil, err
	}
	tx := m.nft.NewTransaction()
	var why, names []string
	for i, t := range tables {
		if reasons := nftDiff(t, states[i], m.alias); len(reasons) > 0 {
			nftWrite(tx, t)
			why = append(why, fmt.Sprintf("%s %s: %s", t.family, t.name, strings.Join(reasons, ", ")))
			names = append(names, string(t.family)+" "+t.name)
		}
	}
	if len(why) == 0 {
		return nil, nil
	}
	if err := m.nft.Run(ctx, tx); err != nil {
		return nil, fmt.Errorf("nft -f (one transaction replacing %s): %w", strings.Join(names, ", "), err)
	}
	if states, err = m.readAll(ctx, tables); err != nil {
		return why, err
	}
	var again []string
	for i, t := range tables {
		if learned := learnNFTAliases(t, states[i], m.alias); len(learned) > 0 {
			m.log.Warn("nft lists our rules differently than expected, comparing with its form from now on",
				"family", t.family, "table", t.name, "aliases", strings.Join(learned, "; "))
		}
		if reasons := nftDiff(t, states[i], m.alias); len(reasons) > 0 {
			again = append(again, fmt.Sprintf("%s %s: %s", t.family, t.name, strings.Join(reasons, ", ")))
		}
	}
	if len(again) > 0 {
		return why, fmt.Errorf("tables still differ right after writing them (%s): is another tool rewriting them?", strings.Join(again, "; "))
	}
	return why, nil
}

func (m *nftMode) readAll(ctx context.Context, tables []nftTable) ([]nftTableState, error) {
	states := make([]nftTableState, len(tables))
	for i, t := range tables {
		st, err := m.read(ctx, t.family, t.name)
		if err != nil {
			return nil, err
		}
		states[i] = st
	}
	return states, nil
}
