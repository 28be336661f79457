package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Stat is a median with its range.
type Stat struct {
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
}

func stat(v []float64) Stat {
	if len(v) == 0 {
		return Stat{}
	}
	s := slices.Clone(v)
	slices.Sort(s)
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return Stat{Median: m, Min: s[0], Max: s[len(s)-1]}
}

// Result is one scenario's figures.
type Result struct {
	Name       string    `json:"name"`
	Gbps       Stat      `json:"gbps"`
	Runs       []float64 `json:"runs_gbps"`
	VsUnderlay float64   `json:"ratio_to_underlay,omitempty"`
	VsVXLAN    float64   `json:"ratio_to_vxlan,omitempty"`
	// CPU seconds of the sending and receiving hosts' daemons per GB
	// received (medians over the runs); absent for the underlay.
	TxCPUPerGB *Stat `json:"tx_daemon_cpu_s_per_gb,omitempty"`
	RxCPUPerGB *Stat `json:"rx_daemon_cpu_s_per_gb,omitempty"`
	// The user-space part of the above (the rest is system time: system
	// calls and the kernel work they do in the daemon's context).
	TxUserPerGB float64 `json:"tx_daemon_user_s_per_gb,omitempty"`
	RxUserPerGB float64 `json:"rx_daemon_user_s_per_gb,omitempty"`
	// CPU seconds (user+system) of each daemon during one transfer.
	TxCPUSec *Stat   `json:"tx_daemon_cpu_s_per_run,omitempty"`
	RxCPUSec *Stat   `json:"rx_daemon_cpu_s_per_run,omitempty"`
	TxRSSMiB float64 `json:"tx_daemon_rss_mib,omitempty"`
	RxRSSMiB float64 `json:"rx_daemon_rss_mib,omitempty"`
	PingMs   Stat    `json:"ping_ms"`
	PingP99  float64 `json:"ping_p99_ms"`
	Error    string  `json:"error,omitempty"`
}

// Report is the whole benchmark.
type Report struct {
	Time     time.Time `json:"time"`
	Kernel   string    `json:"kernel"`
	CPUs     int       `json:"cpus"`
	Runs     int       `json:"runs"`
	Duration string    `json:"duration"`
	Pings    int       `json:"pings"`
	Results  []Result  `json:"results"`
	// Control plane.
	Convergence []ConvergenceResult `json:"convergence,omitempty"`
	Scale       []ScaleResult       `json:"scale,omitempty"`
	Storm       []StormResult       `json:"storm,omitempty"`
	Switch      []SwitchResult      `json:"switch,omitempty"`
}

// checks lists what did not meet its target or failed outright.
func checks(rep Report) []string {
	var out []string
	for _, r := range rep.Results {
		if r.Error != "" {
			out = append(out, r.Name+": "+r.Error)
		}
	}
	for _, c := range rep.Convergence {
		if c.Error != "" {
			out = append(out, "convergence "+c.Backend+": "+c.Error)
		}
	}
	for _, s := range rep.Scale {
		switch {
		case s.Error != "":
			out = append(out, "scale "+s.Backend+": "+s.Error)
		case !s.FinalExact:
			out = append(out, "scale "+s.Backend+": final state not exact: "+s.FinalDiff)
		}
	}
	for _, s := range rep.Switch {
		switch {
		case s.Error != "":
			out = append(out, "switch "+s.From+" -> "+s.To+": "+s.Error)
		case s.Lost > 0:
			out = append(out, fmt.Sprintf("switch %s -> %s: %d pings lost", s.From, s.To, s.Lost))
		}
	}
	for _, s := range rep.Storm {
		if err := stormOK(s); err != nil {
			out = append(out, fmt.Sprintf("storm %s/%d: %v", s.Network, s.SubnetLen, err))
		}
	}
	return out
}

func markdown(rep Report) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# flanneld benchmark\n\n%s, kernel %s, %d CPUs.\n", rep.Time.Format(time.RFC3339), rep.Kernel, rep.CPUs)
	if len(rep.Results) > 0 {
		dataTable(&b, rep)
	}
	if len(rep.Convergence) > 0 {
		convergenceTable(&b, rep.Convergence)
	}
	if len(rep.Scale) > 0 {
		scaleTable(&b, rep.Scale)
	}
	if len(rep.Storm) > 0 {
		stormTable(&b, rep.Storm)
	}
	if len(rep.Switch) > 0 {
		switchTable(&b, rep.Switch)
	}
	return b.String()
}

func dataTable(b *strings.Builder, rep Report) {
	fmt.Fprintf(b, "\n## Data plane\n\niperf3 TCP, one stream, pod to pod across two hosts (underlay: host to host), %d runs of %s, median [min–max]; "+
		"the ratios are to the underlay and to kernel VXLAN of the same run. Ping: %d pings 10 ms apart, median and p99. Daemon: RSS after the runs, "+
		"user+system CPU seconds during one run and per GB received (medians), on the sending (tx) and receiving (rx) host.\n\n",
		rep.Runs, rep.Duration, rep.Pings)
	b.WriteString("| scenario | Gbit/s | vs underlay | vs vxlan | ping ms median / p99 | daemon RSS MiB tx / rx | daemon CPU s per run tx / rx | daemon CPU s per GB tx / rx |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|\n")
	for _, r := range rep.Results {
		if r.Error != "" {
			fmt.Fprintf(b, "| %s | error: %s | | | | | | |\n", r.Name, strings.ReplaceAll(r.Error, "\n", " "))
			continue
		}
		ratio, vsVX, rss, cpu, perGB := "–", "–", "–", "–", "–"
		if r.VsUnderlay > 0 {
			ratio = fmt.Sprintf("%.0f%%", r.VsUnderlay*100)
		}
		if r.VsVXLAN > 0 {
			vsVX = fmt.Sprintf("%.0f%%", r.VsVXLAN*100)
		}
		if r.TxRSSMiB > 0 {
			rss = fmt.Sprintf("%.1f / %.1f", r.TxRSSMiB, r.RxRSSMiB)
		}
		if r.TxCPUSec != nil {
			cpu = fmt.Sprintf("%.2f / %.2f", r.TxCPUSec.Median, r.RxCPUSec.Median)
		}
		if r.TxCPUPerGB != nil && r.RxCPUPerGB != nil {
			perGB = fmt.Sprintf("%.2f / %.2f", r.TxCPUPerGB.Median, r.RxCPUPerGB.Median)
		}
		fmt.Fprintf(b, "| %s | %.2f [%.2f–%.2f] | %s | %s | %.3f / %.3f | %s | %s | %s |\n", r.Name, r.Gbps.Median, r.Gbps.Min, r.Gbps.Max,
			ratio, vsVX, r.PingMs.Median, r.PingP99, rss, cpu, perGB)
	}
}

func convergenceTable(b *strings.Builder, cs []ConvergenceResult) {
	b.WriteString("\n## Convergence\n\nA simulated host's lease is written to etcd; time until every daemon host has its route " +
		"(vxlan: neighbour, FDB entry and route), seen with ip/bridge monitor. Per join: the slowest host.\n\n")
	b.WriteString("| backend | hosts | joins | median ms | p90 ms | max ms | per host median / max ms | etcd put ms |\n|---|---|---|---|---|---|---|---|\n")
	for _, c := range cs {
		if c.Error != "" {
			fmt.Fprintf(b, "| %s | %d | %d | error: %s | | | | |\n", c.Backend, c.Hosts, c.Joins, c.Error)
			continue
		}
		fmt.Fprintf(b, "| %s | %d | %d | %.1f | %.1f | %.1f | %.1f / %.1f | %.1f |\n", c.Backend, c.Hosts, c.Joins,
			c.Join.Median, c.Join.P90, c.Join.Max, c.PerHost.Median, c.PerHost.Max, c.PutMs)
	}
}

func scaleTable(b *strings.Builder, ss []ScaleResult) {
	b.WriteString("\n## Control-plane scale\n\nOne daemon, the other leases simulated peers written to etcd beforehand. Program: daemon start " +
		"to every peer's entries in the kernel. Churn: each op deletes a lease and re-adds it with a new address and MAC; lag is per op, " +
		"from the delete to the new entries in the kernel; settle is from the last write to the final state; exact: one dump of the " +
		"kernel tables equals the lease set. Idle: the daemon's CPU afterwards with nothing changing.\n\n")
	b.WriteString("| backend | peers | entries | program ms | CPU s at start | RSS MiB | churn ops @ /s | lag median / max ms | settle ms | churn CPU s | exact | peak RSS MiB | idle CPU s / s |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, s := range ss {
		if s.Error != "" {
			fmt.Fprintf(b, "| %s | %d | error: %s | | | | | | | | | | |\n", s.Backend, s.Peers, s.Error)
			continue
		}
		fmt.Fprintf(b, "| %s | %d | %d | %.0f | %.2f | %.1f | %d @ %.0f | %.1f / %.1f | %.0f | %.2f | %v | %.1f | %.2f / %.0f |\n", s.Backend, s.Peers, s.Entries,
			s.ProgramMs, s.StartCPU, s.StartRSS, s.ChurnOps, s.ChurnRate, s.ChurnLag.Median, s.ChurnLag.Max, s.SettleMs, s.ChurnCPU, s.FinalExact, s.PeakRSS,
			s.IdleCPU, s.IdleSec)
	}
}

func stormTable(b *strings.Builder, ss []StormResult) {
	b.WriteString("\n## Acquisition storm\n\nSubnet managers (one etcd client each) call Acquire at the same instant against the testbed etcd.\n\n")
	b.WriteString("| network | SubnetLen | leasable | managers | acquired | distinct | wall ms | per call median / max ms | out of subnets | other errors |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|\n")
	for _, s := range ss {
		if s.Error != "" {
			fmt.Fprintf(b, "| %s | %d | error: %s | | | | | | | |\n", s.Network, s.SubnetLen, s.Error)
			continue
		}
		fmt.Fprintf(b, "| %s | %d | %d | %d | %d | %v | %.0f | %.0f / %.0f | %d | %d |\n", s.Network, s.SubnetLen, s.Leasable, s.Managers,
			s.Acquired, s.Distinct, s.WallMs, s.PerCall.Median, s.PerCall.Max, s.Exhausted, s.OtherErrs)
	}
	for _, s := range ss {
		if s.ExhaustedMsg != "" {
			fmt.Fprintf(b, "\nExhaustion error (%s/%d): `%s`\n", s.Network, s.SubnetLen, s.ExhaustedMsg)
		}
		if s.OtherMsg != "" {
			fmt.Fprintf(b, "\nOther error (%s/%d): `%s`\n", s.Network, s.SubnetLen, s.OtherMsg)
		}
	}
}

// write stores the report as name.md, name.json and, with data-plane
// results, name.png in dir, each through a temporary file and a rename.
func write(dir, name, md string, rep Report) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	js, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	files := map[string][]byte{".md": []byte(md), ".json": append(js, '\n')}
	if len(rep.Results) > 0 {
		img, err := chartPNG(rep)
		if err != nil {
			return err
		}
		files[".png"] = img
	}
	var exts []string
	for ext, data := range files {
		path := filepath.Join(dir, name+ext)
		if err := os.WriteFile(path+".tmp", data, 0o644); err != nil {
			return err
		}
		if err := os.Rename(path+".tmp", path); err != nil {
			return err
		}
		exts = append(exts, ext[1:])
	}
	slices.Sort(exts)
	fmt.Fprintf(os.Stderr, "bench: wrote %s/%s.{%s}\n", dir, name, strings.Join(exts, ","))
	return nil
}
