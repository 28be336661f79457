package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/flanneld-go/flannel/e2e/testbed"
)

// scenario is one row of the table.
type scenario struct {
	Name string
	// Backend is the net-conf Backend object; "" is the bare underlay
	// (host to host, no daemon).
	Backend string
	// Env is extra daemon environment.
	Env []string
	// Bin is the flanneld binary; "" is the repository's bin/flanneld.
	Bin string
}

var scenarios = []scenario{
	{Name: "underlay", Backend: ""},
	{Name: "host-gw", Backend: `{"Type":"host-gw"}`},
	{Name: "vxlan", Backend: `{"Type":"vxlan"}`},
	{Name: "udp", Backend: `{"Type":"udp"}`},
	{Name: "udp-no-offload", Backend: `{"Type":"udp"}`, Env: []string{"FLANNEL_UDP_OFFLOAD=off"}},
	// The kernel here has no WireGuard module: the embedded device.
	{Name: "wireguard", Backend: `{"Type":"wireguard"}`},
}

// dataPlane measures the selected scenarios; their testbeds are removed
// before it returns.
func dataPlane(ctx context.Context, o *options, rep *Report) error {
	var rigs []*rig
	defer func() {
		for _, r := range rigs {
			r.close()
		}
	}()
	all := scenarios
	if o.altBin != "" {
		// Another build of the daemon, measured side by side with this one.
		all = append(slices.Clone(scenarios), scenario{Name: "udp-alt", Backend: `{"Type":"udp"}`, Bin: o.altBin})
	}
	for _, sc := range all {
		if !o.want("data", sc.Name) && !(sc.Bin != "" && o.want("udp")) {
			continue
		}
		fmt.Fprintf(os.Stderr, "bench: setting up %s\n", sc.Name)
		r, err := setup(ctx, sc, o.verbose)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			r.fail(err)
		}
		rigs = append(rigs, r)
	}
	// Runs are interleaved (run 1 of every scenario, then run 2, ...) so
	// that a change in the machine's load hits every scenario alike and
	// the ratios stay fair.
	for i := range o.runs {
		for _, r := range rigs {
			if r.res.Error == "" {
				// With -perf, the last run of each udp scenario is profiled.
				prof := o.perfDir != "" && i == o.runs-1 && strings.HasPrefix(r.sc.Name, "udp")
				r.runOnce(ctx, i, o.dur, prof, o.perfDir)
			}
		}
	}
	for _, r := range rigs {
		if r.res.Error == "" {
			r.finish(ctx, o.pings)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		rep.Results = append(rep.Results, r.res)
	}
	ratios(rep.Results)
	return nil
}

// rig is one scenario's testbed and the figures gathered so far.
type rig struct {
	sc             scenario
	tb             *testbed.Testbed
	h1, h2         *testbed.Host
	src, dst       execer
	dstAddr        string
	stopServer     func()
	res            Result
	txCPU, rxCPU   []float64
	txUser, rxUser []float64
	txSec, rxSec   []float64
}

func (r *rig) fail(err error) {
	r.res.Error = err.Error()
	fmt.Fprintf(os.Stderr, "bench: %s: %v\n", r.sc.Name, err)
}

// setup builds a testbed of two hosts for sc, with daemons and one pod per
// host when sc has a backend, and starts the iperf3 server.
func setup(ctx context.Context, sc scenario, verbose bool) (*rig, error) {
	r := &rig{sc: sc, res: Result{Name: sc.Name}}
	opts := testbed.Options{Hosts: 2, FlanneldBin: sc.Bin}
	if verbose {
		opts.Log = func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) }
	}
	tctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	tb, err := testbed.New(tctx, opts)
	if err != nil {
		return r, err
	}
	r.tb = tb
	r.h1, r.h2 = tb.Hosts()[0], tb.Hosts()[1]
	// Endpoints: pods, or the hosts themselves for the underlay.
	r.src, r.dst, r.dstAddr = r.h1, r.h2, r.h2.Addr.String()
	if sc.Backend != "" {
		if err := tb.PutNetConfig(tctx, fmt.Sprintf(`{"Network":"10.244.0.0/16","Backend":%s}`, sc.Backend)); err != nil {
			return r, err
		}
		for _, h := range tb.Hosts() {
			if err := h.StartDaemonEnv(tctx, sc.Env); err != nil {
				return r, err
			}
		}
		for _, h := range tb.Hosts() {
			if _, err := h.WaitSubnetFile(tctx); err != nil {
				return r, err
			}
		}
		if err := tb.AddPodsAll(tctx, 1); err != nil {
			return r, err
		}
		p1, p2 := r.h1.Pods[0], r.h2.Pods[0]
		if err := p1.WaitPing(tctx, p2.Addr); err != nil {
			return r, err
		}
		r.src, r.dst, r.dstAddr = p1, p2, p2.Addr.String()
	}
	r.stopServer = iperfServer(ctx, r.dst)
	return r, nil
}

// runOnce is one iperf3 transfer, with the daemons' CPU time around it.
// With prof, perf records both daemons during the transfer; the reports
// go to perfDir/perf-<scenario>-{tx,rx}.txt.
func (r *rig) runOnce(ctx context.Context, i int, dur time.Duration, prof bool, perfDir string) {
	var stops []func() string
	if prof {
		for _, h := range []struct {
			pid  int
			name string
		}{{r.h1.DaemonPID(), "tx"}, {r.h2.DaemonPID(), "rx"}} {
			stops = append(stops, perfRecord(h.pid, filepath.Join(perfDir, "perf-"+r.sc.Name+"-"+h.name)))
		}
	}
	before := daemonCPU(r.h1, r.h2)
	bytes, secs, err := iperf(ctx, r.src, r.dstAddr, dur)
	for _, stop := range stops {
		if p := stop(); p != "" {
			fmt.Fprintf(os.Stderr, "bench: %s: profile in %s\n", r.sc.Name, p)
		}
	}
	if err != nil {
		r.fail(fmt.Errorf("run %d: %w", i+1, err))
		return
	}
	after := daemonCPU(r.h1, r.h2)
	gbps := float64(bytes) * 8 / secs / 1e9
	r.res.Runs = append(r.res.Runs, gbps)
	fmt.Fprintf(os.Stderr, "bench: %s run %d: %.2f Gbit/s\n", r.sc.Name, i+1, gbps)
	if r.sc.Backend != "" && bytes > 0 {
		gb := float64(bytes) / 1e9
		r.txSec = append(r.txSec, (after[0].CPU - before[0].CPU).Seconds())
		r.rxSec = append(r.rxSec, (after[1].CPU - before[1].CPU).Seconds())
		r.txCPU = append(r.txCPU, (after[0].CPU-before[0].CPU).Seconds()/gb)
		r.rxCPU = append(r.rxCPU, (after[1].CPU-before[1].CPU).Seconds()/gb)
		r.txUser = append(r.txUser, (after[0].User-before[0].User).Seconds()/gb)
		r.rxUser = append(r.rxUser, (after[1].User-before[1].User).Seconds()/gb)
	}
}

// finish computes the statistics, reads the daemons' RSS and measures the
// latency.
func (r *rig) finish(ctx context.Context, pings int) {
	r.res.Gbps = stat(r.res.Runs)
	if r.sc.Backend != "" {
		tx, rx := stat(r.txCPU), stat(r.rxCPU)
		r.res.TxCPUPerGB, r.res.RxCPUPerGB = &tx, &rx
		txs, rxs := stat(r.txSec), stat(r.rxSec)
		r.res.TxCPUSec, r.res.RxCPUSec = &txs, &rxs
		r.res.TxUserPerGB, r.res.RxUserPerGB = stat(r.txUser).Median, stat(r.rxUser).Median
		if s, err := testbed.ReadProcStat(r.h1.DaemonPID()); err == nil {
			r.res.TxRSSMiB = float64(s.RSS) / (1 << 20)
		}
		if s, err := testbed.ReadProcStat(r.h2.DaemonPID()); err == nil {
			r.res.RxRSSMiB = float64(s.RSS) / (1 << 20)
		}
	}
	rtts, err := ping(ctx, r.src, r.dstAddr, pings)
	if err != nil {
		r.fail(err)
		return
	}
	r.res.PingMs = stat(rtts)
	sorted := slices.Clone(rtts)
	slices.Sort(sorted)
	r.res.PingP99 = rank(sorted, 0.99)
}

// close stops the iperf3 server and removes the testbed.
func (r *rig) close() {
	if r.stopServer != nil {
		r.stopServer()
	}
	if r.tb != nil {
		r.tb.Close()
	}
}

// daemonCPU returns the CPU time of the two hosts' daemons (0 without).
func daemonCPU(hs ...*testbed.Host) []testbed.ProcStat {
	out := make([]testbed.ProcStat, len(hs))
	for i, h := range hs {
		if pid := h.DaemonPID(); pid != 0 {
			if s, err := testbed.ReadProcStat(pid); err == nil {
				out[i] = s
			}
		}
	}
	return out
}

func ratios(rs []Result) {
	var under, vx float64
	for _, r := range rs {
		switch r.Name {
		case "underlay":
			under = r.Gbps.Median
		case "vxlan":
			vx = r.Gbps.Median
		}
	}
	for i := range rs {
		if under > 0 && rs[i].Name != "underlay" {
			rs[i].VsUnderlay = rs[i].Gbps.Median / under
		}
		if vx > 0 && rs[i].Name != "vxlan" && rs[i].Name != "underlay" {
			rs[i].VsVXLAN = rs[i].Gbps.Median / vx
		}
	}
}
