package network

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/flanneld-go/flannel/backend/registry"
	"github.com/flanneld-go/flannel/backend/wireguard"
	"github.com/flanneld-go/flannel/subnet"
	"github.com/flanneld-go/flannel/subnet/etcd"
)

// CheckConfig validates a net-conf, backend options included, and returns
// the effective config (defaults filled in) as indented JSON.
func CheckConfig(data []byte) ([]byte, []string, error) {
	cfg, opts, warnings, err := parseNetConf(data)
	if err != nil {
		return nil, warnings, err
	}
	out, err := cfg.Effective(opts)
	return out, warnings, err
}

// parseNetConf is the whole validation of a net-conf, the daemon's and
// config check's: the document, the backend type and its options. The
// warnings are those of the document, then those of the options.
func parseNetConf(data []byte) (*subnet.Config, any, []string, error) {
	cfg, warnings, err := subnet.ParseConfig(data)
	if err != nil {
		return nil, nil, warnings, err
	}
	bt, err := registry.Lookup(cfg.BackendType)
	if err != nil {
		return nil, nil, warnings, err
	}
	warnings = append(warnings, bt.OptionWarnings(cfg.Backend)...)
	opts, err := bt.ParseOptions(cfg.Backend)
	if err != nil {
		return nil, nil, warnings, err
	}
	return cfg, opts, warnings, nil
}

// storedCompareTimeout bounds config check's look at etcd: it is an aside
// of a check that works offline, so an etcd that is down costs seconds,
// not a wait.
const storedCompareTimeout = 10 * time.Second

// CompareStoredConfig tells how data, a valid net-conf, differs from the
// one stored in etcd: each field that differs, and whether running hosts
// apply the change live or need a restart (and what to do then). When
// etcd cannot be reached, or holds no net-conf or an invalid one, it says
// so in one line. Only an error writing to w is returned.
func CompareStoredConfig(ctx context.Context, ec etcd.Config, data []byte, w io.Writer) error {
	cfg, _, err := subnet.ParseConfig(data)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, storedCompareTimeout)
	defer cancel()
	cli, err := etcd.Connect(ctx, ec)
	if err != nil {
		_, err = fmt.Fprintf(w, "stored net-conf not compared: %v\n", err)
		return err
	}
	defer cli.Close()
	sm := etcd.NewManager(cli, ec.Prefix, 0, slog.New(slog.NewTextHandler(io.Discard, nil)))
	raw, stored, _, err := sm.GetConfigRaw(ctx)
	if err != nil {
		_, err = fmt.Fprintf(w, "stored net-conf not compared: %v\n", err)
		return err
	}
	prefix := strings.TrimSuffix(sm.ConfigKey(), "/config")
	return WriteConfigDiff(w, sm.ConfigKey(), prefix, bytes.Equal(raw, data), subnet.DiffConfig(stored, cfg))
}

// WriteConfigDiff writes the differences from the net-conf stored at key
// (under prefix, which the advice names) as config check prints them;
// same is set when the documents are the same bytes.
func WriteConfigDiff(w io.Writer, key, prefix string, same bool, diffs []subnet.ConfigDiff) error {
	switch {
	case same:
		_, err := fmt.Fprintf(w, "stored net-conf at %s: the same document\n", key)
		return err
	case len(diffs) == 0:
		_, err := fmt.Fprintf(w, "stored net-conf at %s: the same settings, written differently\n", key)
		return err
	}
	fmt.Fprintf(w, "differences from the net-conf stored at %s (stored -> checked):\n", key)
	for _, d := range diffs {
		what := "applies live"
		if !d.Live {
			what = "needs a restart: " + strings.ReplaceAll(d.Advice(), "<prefix>", prefix)
		}
		if _, err := fmt.Fprintf(w, "  %s: %s -> %s: %s\n", d.Field, unsetText(d.Old), unsetText(d.New), what); err != nil {
			return err
		}
	}
	return nil
}

func unsetText(s string) string {
	if s == "" {
		return "(unset)"
	}
	return s
}

// PrintLeases writes a table of the leases in etcd, each marked with the
// peer set's verdict (judged among themselves, with no host's own lease:
// bad subnets and conflicts between leases show). It does not wait for an
// unreachable etcd.
func PrintLeases(ctx context.Context, ec etcd.Config, w io.Writer) error {
	cli, err := etcd.Connect(ctx, ec)
	if err != nil {
		return err
	}
	defer cli.Close()
	sm := etcd.NewManager(cli, ec.Prefix, 0, slog.New(slog.NewTextHandler(io.Discard, nil)))
	leases, _, err := sm.List(ctx, true)
	if err != nil {
		return err
	}
	cfg, _, cerr := sm.GetConfig(ctx)
	if cerr != nil {
		cfg = nil
	}
	if err := WriteLeaseTable(w, leases, cfg, time.Now()); err != nil {
		return err
	}
	if cerr != nil {
		_, err = fmt.Fprintf(w, "leases not checked: %v\n", cerr)
	}
	return err
}

// WriteLeaseTable renders leases sorted by subnet: subnet, IPv6 subnet (if
// any lease has one), public IP, backend, VTEP MAC, PUBLIC KEY (if any
// lease is a wireguard one), expiry or "reserved",
// and, when cfg is given, STATUS: "ok" for a lease every host of that
// net-conf accepts (a peer, or a valid lease of another backend type:
// "backend_type"), else the reason it is rejected, with the older lease
// that wins a conflict.
func WriteLeaseTable(w io.Writer, leases []subnet.Lease, cfg *subnet.Config, now time.Time) error {
	slices.SortFunc(leases, bySubnet)
	var set *PeerSet
	if cfg != nil {
		set = NewPeerSet(cfg, netip.Addr{})
		set.Apply(addEvents(leases))
	}
	v6, wg := false, false
	for _, l := range leases {
		v6 = v6 || l.IPv6Subnet.IsValid()
		wg = wg || l.Attrs.BackendType == wireguard.TypeName
	}
	cols := []string{"SUBNET", "PUBLIC IP", "BACKEND", "VTEP MAC", "EXPIRES"}
	if v6 {
		cols = []string{"SUBNET", "IPV6 SUBNET", "PUBLIC IP", "PUBLIC IPV6", "BACKEND", "VTEP MAC", "EXPIRES"}
	}
	if wg {
		cols = slices.Insert(cols, len(cols)-1, "PUBLIC KEY")
	}
	if set != nil {
		cols = append(cols, "STATUS")
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(cols, "\t"))
	for _, l := range leases {
		row := []string{l.Subnet.String(), l.Attrs.PublicIP.String(), dash(l.Attrs.BackendType), dash(vtepMAC(l.Attrs.BackendData)), expires(l, now)}
		if v6 {
			row = []string{l.Subnet.String(), dashP(l.IPv6Subnet.String(), l.IPv6Subnet.IsValid()), l.Attrs.PublicIP.String(),
				dashP(l.Attrs.PublicIPv6.String(), l.Attrs.PublicIPv6.IsValid()), row[2], row[3], row[4]}
		}
		if wg {
			row = slices.Insert(row, len(row)-1, publicKey(l))
		}
		if set != nil {
			row = append(row, status(set, l))
		}
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	return tw.Flush()
}

func expires(l subnet.Lease, now time.Time) string {
	switch {
	case l.Reserved():
		return "reserved"
	case l.Expiration.IsZero():
		return "unknown"
	}
	return fmt.Sprintf("%s (in %s)", l.Expiration.UTC().Format(time.RFC3339), l.Expiration.Sub(now).Round(time.Minute))
}

func status(set *PeerSet, l subnet.Lease) string {
	why, winner, _ := set.Status(l.Key())
	switch {
	case why == "":
		return "ok"
	case winner != "":
		return fmt.Sprintf("%s (older: %s)", why, winner)
	}
	return string(why)
}

func addEvents(ls []subnet.Lease) []subnet.Event {
	evs := make([]subnet.Event, len(ls))
	for i, l := range ls {
		evs[i] = subnet.Event{Type: subnet.EventAdded, Lease: l}
	}
	return evs
}

func vtepMAC(data json.RawMessage) string {
	var d struct{ VtepMAC string }
	if len(data) == 0 || json.Unmarshal(data, &d) != nil {
		return ""
	}
	return d.VtepMAC
}

// publicKey is a wireguard lease's public key (the lease holds no other),
// "invalid" when it is not a key, "-" for other backends.
func publicKey(l subnet.Lease) string {
	if l.Attrs.BackendType != wireguard.TypeName {
		return "-"
	}
	k, _, err := wireguard.ParseLeaseData(l.Attrs.BackendData)
	if err != nil {
		return "invalid"
	}
	return k.String()
}

func dash(s string) string { return dashP(s, s != "") }

func dashP(s string, ok bool) string {
	if !ok {
		return "-"
	}
	return s
}
