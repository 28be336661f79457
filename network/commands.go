package network

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/flanneld-go/flannel/backend/registry"
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

// PrintLeases writes a table of the leases in etcd. It does not wait for
// an unreachable etcd.
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
	return WriteLeaseTable(w, leases, time.Now())
}

// WriteLeaseTable renders leases sorted by subnet: subnet, IPv6 subnet (if
// any lease has one), public IP, backend, VTEP MAC, expiry or "reserved".
func WriteLeaseTable(w io.Writer, leases []subnet.Lease, now time.Time) error {
	sort.Slice(leases, func(i, j int) bool { return leases[i].Subnet.Addr().Less(leases[j].Subnet.Addr()) })
	v6 := false
	for _, l := range leases {
		v6 = v6 || l.IPv6Subnet.IsValid()
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if v6 {
		fmt.Fprintln(tw, "SUBNET\tIPV6 SUBNET\tPUBLIC IP\tPUBLIC IPV6\tBACKEND\tVTEP MAC\tEXPIRES")
	} else {
		fmt.Fprintln(tw, "SUBNET\tPUBLIC IP\tBACKEND\tVTEP MAC\tEXPIRES")
	}
	for _, l := range leases {
		exp := "reserved"
		if !l.Reserved() {
			exp = "unknown"
			if !l.Expiration.IsZero() {
				exp = fmt.Sprintf("%s (in %s)", l.Expiration.UTC().Format(time.RFC3339), l.Expiration.Sub(now).Round(time.Minute))
			}
		}
		backend := dash(l.Attrs.BackendType)
		mac := dash(vtepMAC(l.Attrs.BackendData))
		if v6 {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", l.Subnet, dashP(l.IPv6Subnet.String(), l.IPv6Subnet.IsValid()),
				l.Attrs.PublicIP, dashP(l.Attrs.PublicIPv6.String(), l.Attrs.PublicIPv6.IsValid()), backend, mac, exp)
		} else {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", l.Subnet, l.Attrs.PublicIP, backend, mac, exp)
		}
	}
	return tw.Flush()
}

func vtepMAC(data json.RawMessage) string {
	var d struct{ VtepMAC string }
	if len(data) == 0 || json.Unmarshal(data, &d) != nil {
		return ""
	}
	return d.VtepMAC
}

func dash(s string) string { return dashP(s, s != "") }

func dashP(s string, ok bool) string {
	if !ok {
		return "-"
	}
	return s
}
