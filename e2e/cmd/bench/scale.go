package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flanneld-go/flannel/e2e/testbed"
)

// ScaleResult is one backend's figures with many peers.
type ScaleResult struct {
	Backend string `json:"backend"`
	Peers   int    `json:"peers"`
	// ProgramMs: from starting the daemon until the kernel holds every
	// peer's entries.
	ProgramMs  float64 `json:"program_ms"`
	Entries    int     `json:"entries"`
	StartCPU   float64 `json:"start_cpu_s"`
	StartRSS   float64 `json:"start_rss_mib"`
	ChurnOps   int     `json:"churn_ops"`
	ChurnRate  float64 `json:"churn_ops_per_s"` // achieved
	ChurnLag   Latency `json:"churn_lag"`       // per op: write to entries present
	ChurnCPU   float64 `json:"churn_cpu_s"`
	SettleMs   float64 `json:"settle_ms"` // last write to exact final state
	FinalExact bool    `json:"final_exact"`
	FinalDiff  string  `json:"final_diff,omitempty"`
	PeakRSS    float64 `json:"peak_rss_mib"`
	// Reconciles the daemon ran during the churn and their mean
	// duration, from its /metrics.
	ChurnReconciles int     `json:"churn_reconciles"`
	ReconcileMeanMs float64 `json:"churn_reconcile_mean_ms"`
	Profile         string  `json:"profile,omitempty"` // perf report of the churn, with -perf
	Error           string  `json:"error,omitempty"`
}

// scalePeer is peer i (from 1) of generation gen: subnet i of
// 10.128.0.0/9, a public address on the test host's extra 10.50.0.0/16.
func scalePeer(gen, i int) simPeer {
	off := 0
	if gen%2 == 1 {
		off = 128 << 8
	}
	pub := off + i
	return simPeer{
		Subnet:   netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(128 + i>>8), byte(i), 0}), 24),
		PublicIP: netip.AddrFrom4([4]byte{10, 50, byte(pub >> 8), byte(pub)}),
		MAC:      mac(gen, i),
	}
}

// scale writes peers-1 simulated leases, starts one daemon of backend typ
// and times it until every peer is programmed; then churns ops leases
// (delete, re-add with a new address and MAC) at rate per second and
// checks the final kernel state against the lease set.
func scale(ctx context.Context, typ string, peers, ops int, rate float64, perfDir string, verbose bool) (res ScaleResult) {
	res = ScaleResult{Backend: typ, Peers: peers - 1, ChurnOps: ops}
	fail := func(err error) ScaleResult {
		res.Error = err.Error()
		logf("bench: scale %s: %v", typ, err)
		return res
	}
	logf("bench: scale %s: %d leases, then %d churned at %.0f/s", typ, peers, ops, rate)
	tctx, cancel := context.WithTimeout(ctx, 4*time.Minute)
	defer cancel()
	// 10.128.0.0/9 in /24s: 32,768 subnets, room for the daemon's own.
	tb, err := newTestbed(tctx, 1, netConf("10.128.0.0/9", typ), verbose)
	if err != nil {
		return fail(err)
	}
	defer tb.Close()
	h := tb.Hosts()[0]
	// The simulated peers live on 10.50.0.0/16: make it on-link for
	// host-gw (inside the host namespace only).
	if _, err := h.Exec(tctx, "ip", "addr", "add", "10.50.255.254/16", "dev", "eth0"); err != nil {
		return fail(err)
	}
	cli, err := tbClient(tb)
	if err != nil {
		return fail(err)
	}
	defer cli.Close()
	grant, err := cli.Grant(tctx, 3600)
	if err != nil {
		return fail(err)
	}
	cur := map[int]simPeer{}
	var ops0 []clientv3.Op
	for i := 1; i < peers; i++ {
		p := scalePeer(0, i)
		cur[i] = p
		ops0 = append(ops0, clientv3.OpPut(p.key(), p.value(typ), clientv3.WithLease(grant.ID)))
	}
	for len(ops0) > 0 {
		n := min(100, len(ops0))
		if _, err := cli.Txn(tctx).Then(ops0[:n]...).Commit(); err != nil {
			return fail(err)
		}
		ops0 = ops0[n:]
	}
	w, err := watchKernel(h.NS, vxlanDev(typ))
	if err != nil {
		return fail(err)
	}
	defer w.close()
	var want []item
	for _, p := range cur {
		want = append(want, p.items(typ)...)
	}
	res.Entries = len(want)

	t0 := time.Now()
	if err := h.StartDaemon(tctx, "--healthz-ip", "127.0.0.1", "--healthz-port", "9099"); err != nil {
		return fail(err)
	}
	last, missing := w.wait(tctx, want, t0, 60*time.Second)
	if missing > 0 {
		return fail(fmt.Errorf("after 60s %d of %d entries still missing", missing, len(want)))
	}
	res.ProgramMs = float64(last.Sub(t0).Microseconds()) / 1000
	pid := h.DaemonPID()
	st, err := testbed.ReadProcStat(pid)
	if err != nil {
		return fail(err)
	}
	res.StartCPU, res.StartRSS = st.CPU.Seconds(), float64(st.RSS)/(1<<20)
	logf("bench: scale %s: %d peers (%d entries) programmed in %.0f ms; CPU %.2f s, RSS %.1f MiB",
		typ, peers-1, len(want), res.ProgramMs, res.StartCPU, res.StartRSS)
	if err := checkKernel(tctx, h, typ, cur); err != nil {
		return fail(fmt.Errorf("after start: %w", err))
	}

	// Churn: op j deletes peer (j mod n)+1 and re-adds it with the next
	// generation's address and MAC; a waiter times each op's new entries.
	type op struct {
		at    time.Time
		items []item
	}
	opc := make(chan op, ops)
	lags := make(chan []time.Duration, 1)
	go func() {
		var out []time.Duration
		for o := range opc {
			last, missing := w.wait(tctx, o.items, o.at, 30*time.Second)
			if missing == 0 {
				out = append(out, last.Sub(o.at))
			}
		}
		lags <- out
	}()
	cpu0 := st.CPU
	n0, sum0 := reconcileMetrics(tctx, h)
	stopPerf := func() string { return "" }
	if perfDir != "" {
		stopPerf = perfRecord(h.DaemonPID(), filepath.Join(perfDir, "perf-churn-"+typ))
	}
	gen := map[int]int{}
	tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
	start := time.Now()
	var lastWrite time.Time
	for j := range ops {
		<-tick.C
		i := j%(peers-1) + 1
		gen[i]++
		p := scalePeer(gen[i], i)
		at := time.Now()
		if _, err := cli.Delete(tctx, cur[i].key()); err != nil {
			tick.Stop()
			close(opc)
			return fail(err)
		}
		if _, err := cli.Put(tctx, p.key(), p.value(typ), clientv3.WithLease(grant.ID)); err != nil {
			tick.Stop()
			close(opc)
			return fail(err)
		}
		lastWrite = time.Now()
		cur[i] = p
		opc <- op{at, p.items(typ)}
	}
	tick.Stop()
	res.Profile = stopPerf()
	res.ChurnRate = float64(ops) / lastWrite.Sub(start).Seconds()
	close(opc)
	lagList := <-lags
	res.ChurnLag = latency(lagList)
	if len(lagList) < ops {
		return fail(fmt.Errorf("churn: %d of %d ops never showed up in the kernel", ops-len(lagList), ops))
	}
	want = want[:0]
	for _, p := range cur {
		want = append(want, p.items(typ)...)
	}
	if last, missing := w.wait(tctx, want, lastWrite, 30*time.Second); missing > 0 {
		return fail(fmt.Errorf("after churn %d of %d entries missing", missing, len(want)))
	} else {
		res.SettleMs = float64(last.Sub(lastWrite).Microseconds()) / 1000
	}
	// A reconcile deletes what is no longer desired after adding; give the
	// last one its 20 ms window and a little more before the exact check.
	time.Sleep(300 * time.Millisecond)
	if err := checkKernel(tctx, h, typ, cur); err != nil {
		res.FinalDiff = err.Error()
	} else {
		res.FinalExact = true
	}
	if st, err := testbed.ReadProcStat(pid); err == nil {
		res.ChurnCPU = (st.CPU - cpu0).Seconds()
	}
	res.PeakRSS = peakRSS(pid)
	if n1, sum1 := reconcileMetrics(tctx, h); n1 > n0 {
		res.ChurnReconciles = n1 - n0
		res.ReconcileMeanMs = (sum1 - sum0) / float64(n1-n0) * 1000
	}
	logf("bench: scale %s: churn %d ops at %.0f/s: lag median %.1f ms, max %.1f ms; settled %.0f ms after the last write; CPU %.2f s; %d reconciles, mean %.1f ms; exact: %v; peak RSS %.1f MiB",
		typ, ops, res.ChurnRate, res.ChurnLag.Median, res.ChurnLag.Max, res.SettleMs, res.ChurnCPU, res.ChurnReconciles, res.ReconcileMeanMs, res.FinalExact, res.PeakRSS)
	return res
}

// checkKernel dumps the host's tables once and compares them with the
// entries the peers need, exactly: nothing missing, nothing extra.
func checkKernel(ctx context.Context, h *testbed.Host, typ string, peers map[int]simPeer) error {
	want := map[item]bool{}
	for _, p := range peers {
		for _, it := range p.items(typ) {
			want[it] = true
		}
	}
	have := map[item]bool{}
	out, err := h.Exec(ctx, "ip", "route", "show", "proto", "98")
	if err != nil {
		return err
	}
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		if len(f) >= 3 && f[1] == "via" {
			have[item{"route", f[0], f[2]}] = true
		} else if len(f) > 0 {
			have[item{"route", f[0], ""}] = true
		}
	}
	if typ == "vxlan" {
		out, err := h.Exec(ctx, "ip", "neigh", "show", "dev", "flannel.1", "nud", "permanent")
		if err != nil {
			return err
		}
		for line := range strings.Lines(out) {
			if f := strings.Fields(line); len(f) >= 3 && f[1] == "lladdr" {
				have[item{"neigh", f[0], f[2]}] = true
			}
		}
		out, err = h.Exec(ctx, "bridge", "fdb", "show", "dev", "flannel.1")
		if err != nil {
			return err
		}
		for line := range strings.Lines(out) {
			f := strings.Fields(line)
			for k := 0; k+1 < len(f); k++ {
				if f[k] == "dst" {
					have[item{"fdb", f[0], f[k+1]}] = true
				}
			}
		}
	}
	var missing, extra []string
	for it := range want {
		if !have[it] {
			missing = append(missing, fmt.Sprint(it))
		}
	}
	for it := range have {
		if !want[it] {
			extra = append(extra, fmt.Sprint(it))
		}
	}
	if len(missing)+len(extra) > 0 {
		return fmt.Errorf("kernel differs from the leases: %d missing (e.g. %v), %d extra (e.g. %v)",
			len(missing), first(missing), len(extra), first(extra))
	}
	return nil
}

func first(s []string) []string { return s[:min(3, len(s))] }

// reconcileMetrics reads the daemon's reconcile count and total seconds
// from its /metrics (zeros when unavailable).
func reconcileMetrics(ctx context.Context, h *testbed.Host) (int, float64) {
	out, err := h.Exec(ctx, "curl", "-s", "--max-time", "5", "http://127.0.0.1:9099/metrics")
	if err != nil {
		return 0, 0
	}
	var n int
	var sum float64
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		if len(f) != 2 {
			continue
		}
		switch {
		case strings.HasPrefix(f[0], "flannel_reconcile_total{"):
			v, _ := strconv.ParseFloat(f[1], 64)
			n = int(v)
		case strings.HasPrefix(f[0], "flannel_reconcile_duration_seconds_sum{"):
			sum, _ = strconv.ParseFloat(f[1], 64)
		}
	}
	return n, sum
}

// perfRecord samples pid's stacks with perf until the returned function
// is called, which returns the top of "perf report" (and keeps the data
// file next to it).
func perfRecord(pid int, base string) func() string {
	cmd := exec.Command("perf", "record", "-F", "499", "-g", "-p", strconv.Itoa(pid), "-o", base+".data")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf("bench: perf: %v", err)
		return func() string { return "" }
	}
	return func() string {
		cmd.Process.Signal(syscall.SIGINT)
		cmd.Wait()
		out, err := exec.Command("perf", "report", "-i", base+".data", "--stdio", "--no-children", "--percent-limit", "2", "-g", "none").Output()
		if err != nil {
			logf("bench: perf report: %v", err)
			return ""
		}
		os.WriteFile(base+".txt", out, 0o644)
		return base + ".txt"
	}
}

// peakRSS reads VmHWM, the process's peak resident set, in MiB.
func peakRSS(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}
