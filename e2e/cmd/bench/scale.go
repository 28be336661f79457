package main

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
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
	// IdleCPU is the daemon's CPU over IdleSec with nothing changing,
	// after the churn (periodic reconciles and rule resyncs only).
	IdleCPU float64 `json:"idle_cpu_s"`
	IdleSec float64 `json:"idle_s"`
	Profile string  `json:"profile,omitempty"` // perf report of the churn, with -perf
	Error   string  `json:"error,omitempty"`
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
func scale(ctx context.Context, typ string, peers int, o *options) (res ScaleResult) {
	ops, rate, perfDir, verbose := o.churn, o.churnRate, o.perfDir, o.verbose
	res = ScaleResult{Backend: typ, Peers: peers - 1, ChurnOps: ops}
	fail := func(err error) ScaleResult {
		res.Error = err.Error()
		logf("bench: scale %s: %v", typ, err)
		return res
	}
	logf("bench: scale %s: %d leases, then %d churned at %.0f/s", typ, peers, ops, rate)
	tctx, cancel := context.WithTimeout(ctx, 4*time.Minute+o.idle+time.Duration(peers)*20*time.Millisecond)
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
	b := &scaleBench{typ: typ, h: h, cli: cli, lease: grant.ID, res: &res, perfDir: perfDir}
	if err := b.seed(tctx, peers); err != nil {
		return fail(err)
	}
	if b.w, err = watchKernel(h.NS, vxlanDev(typ)); err != nil {
		return fail(err)
	}
	defer b.w.close()
	base, err := b.program(tctx)
	if err != nil {
		return fail(err)
	}
	lastWrite, err := b.churn(tctx, peers-1, ops, rate, perfDir)
	if err != nil {
		return fail(err)
	}
	if err := b.settle(tctx, lastWrite, base); err != nil {
		return fail(err)
	}
	if err := b.idle(tctx, o.idle); err != nil {
		return fail(err)
	}
	logf("bench: scale %s: churn %d ops at %.0f/s: lag median %.1f ms, max %.1f ms; settled %.0f ms after the last write; CPU %.2f s; %d reconciles, mean %.1f ms; exact: %v; peak RSS %.1f MiB; idle CPU %.2f s in %.0f s",
		typ, ops, res.ChurnRate, res.ChurnLag.Median, res.ChurnLag.Max, res.SettleMs, res.ChurnCPU, res.ChurnReconciles, res.ReconcileMeanMs, res.FinalExact, res.PeakRSS, res.IdleCPU, res.IdleSec)
	return res
}

// scaleBench is one scale run: the daemon's host, the etcd client that
// plays the peers, and the figures gathered so far.
type scaleBench struct {
	typ     string
	perfDir string // where to record profiles ("" none)
	h       *testbed.Host
	cli     *clientv3.Client
	lease   clientv3.LeaseID
	w       *kernelWatch
	cur     map[int]simPeer // peer i (from 1) as its lease is now
	pid     int             // the daemon's, once started
	res     *ScaleResult
}

// churnBase is what the daemon had used before the churn.
type churnBase struct {
	cpu          time.Duration
	reconciles   int
	reconcileSec float64
}

// seed writes the leases of peers 1 to peers-1, 100 per transaction.
func (b *scaleBench) seed(ctx context.Context, peers int) error {
	b.cur = map[int]simPeer{}
	var ops []clientv3.Op
	for i := 1; i < peers; i++ {
		p := scalePeer(0, i)
		b.cur[i] = p
		ops = append(ops, clientv3.OpPut(p.key(), p.value(b.typ), clientv3.WithLease(b.lease)))
	}
	for len(ops) > 0 {
		n := min(100, len(ops))
		if _, err := b.cli.Txn(ctx).Then(ops[:n]...).Commit(); err != nil {
			return err
		}
		ops = ops[n:]
	}
	return nil
}

// want is every kernel entry the current peers need.
func (b *scaleBench) want() []item {
	var want []item
	for _, p := range b.cur {
		want = append(want, p.items(b.typ)...)
	}
	return want
}

// program starts the daemon and times it until every peer's entries are
// in the kernel, then checks the kernel holds exactly those.
func (b *scaleBench) program(ctx context.Context) (churnBase, error) {
	want := b.want()
	b.res.Entries = len(want)
	t0 := time.Now()
	if err := b.h.StartDaemon(ctx, "--healthz-ip", "127.0.0.1", "--healthz-port", "9099"); err != nil {
		return churnBase{}, err
	}
	stopPerf := func() string { return "" }
	if b.perfDir != "" {
		stopPerf = perfRecord(b.h.DaemonPID(), filepath.Join(b.perfDir, "perf-start-"+b.typ))
	}
	last, missing := b.w.wait(ctx, want, t0, 60*time.Second)
	if f := stopPerf(); f != "" {
		logf("bench: scale %s: profile of the start in %s", b.typ, f)
	}
	if missing > 0 {
		dump := "the kernel holds exactly the lease set (the monitor missed events)"
		if err := checkKernel(ctx, b.h, b.typ, b.cur); err != nil {
			dump = err.Error()
		}
		return churnBase{}, fmt.Errorf("after 60s %d of %d entries still missing; daemon warnings: %s; dump: %.300s", missing, len(want), warnings(b.h.Log()), dump)
	}
	b.res.ProgramMs = float64(last.Sub(t0).Microseconds()) / 1000
	b.pid = b.h.DaemonPID()
	st, err := testbed.ReadProcStat(b.pid)
	if err != nil {
		return churnBase{}, err
	}
	b.res.StartCPU, b.res.StartRSS = st.CPU.Seconds(), float64(st.RSS)/(1<<20)
	logf("bench: scale %s: %d peers (%d entries) programmed in %.0f ms; CPU %.2f s, RSS %.1f MiB",
		b.typ, b.res.Peers, len(want), b.res.ProgramMs, b.res.StartCPU, b.res.StartRSS)
	if err := checkKernel(ctx, b.h, b.typ, b.cur); err != nil {
		return churnBase{}, fmt.Errorf("after start: %w", err)
	}
	n0, sum0 := reconcileMetrics(ctx, b.h)
	return churnBase{cpu: st.CPU, reconciles: n0, reconcileSec: sum0}, nil
}

// churn runs ops operations at rate per second over the n peers: op j
// deletes peer (j mod n)+1 and re-adds it with the next generation's
// address and MAC; a waiter times each op's new entries. It returns the
// time of the last write.
func (b *scaleBench) churn(ctx context.Context, n, ops int, rate float64, perfDir string) (time.Time, error) {
	type op struct {
		at    time.Time
		items []item
	}
	opc := make(chan op, ops)
	lags := make(chan []time.Duration, 1)
	go func() {
		var out []time.Duration
		for o := range opc {
			last, missing := b.w.wait(ctx, o.items, o.at, 30*time.Second)
			if missing == 0 {
				out = append(out, last.Sub(o.at))
			}
		}
		lags <- out
	}()
	stopPerf := func() string { return "" }
	if perfDir != "" {
		stopPerf = perfRecord(b.h.DaemonPID(), filepath.Join(perfDir, "perf-churn-"+b.typ))
	}
	gen := map[int]int{}
	tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
	start := time.Now()
	var lastWrite time.Time
	for j := range ops {
		<-tick.C
		i := j%n + 1
		gen[i]++
		p := scalePeer(gen[i], i)
		at := time.Now()
		if err := b.replace(ctx, i, p); err != nil {
			tick.Stop()
			close(opc)
			return lastWrite, err
		}
		lastWrite = time.Now()
		opc <- op{at, p.items(b.typ)}
	}
	tick.Stop()
	b.res.Profile = stopPerf()
	b.res.ChurnRate = float64(ops) / lastWrite.Sub(start).Seconds()
	close(opc)
	lagList := <-lags
	b.res.ChurnLag = latency(lagList)
	if len(lagList) < ops {
		return lastWrite, fmt.Errorf("churn: %d of %d ops never showed up in the kernel", ops-len(lagList), ops)
	}
	return lastWrite, nil
}

// replace deletes peer i's lease and writes p in its place.
func (b *scaleBench) replace(ctx context.Context, i int, p simPeer) error {
	if _, err := b.cli.Delete(ctx, b.cur[i].key()); err != nil {
		return err
	}
	if _, err := b.cli.Put(ctx, p.key(), p.value(b.typ), clientv3.WithLease(b.lease)); err != nil {
		return err
	}
	b.cur[i] = p
	return nil
}

// settle waits for the final state after the last write, checks it is
// exact and records what the daemon used during the churn.
func (b *scaleBench) settle(ctx context.Context, lastWrite time.Time, base churnBase) error {
	want := b.want()
	last, missing := b.w.wait(ctx, want, lastWrite, 30*time.Second)
	if missing > 0 {
		return fmt.Errorf("after churn %d of %d entries missing", missing, len(want))
	}
	b.res.SettleMs = float64(last.Sub(lastWrite).Microseconds()) / 1000
	// A reconcile deletes what is no longer desired after adding; give the
	// last one its 20 ms window and a little more before the exact check.
	time.Sleep(300 * time.Millisecond)
	if err := checkKernel(ctx, b.h, b.typ, b.cur); err != nil {
		b.res.FinalDiff = err.Error()
	} else {
		b.res.FinalExact = true
	}
	if st, err := testbed.ReadProcStat(b.pid); err == nil {
		b.res.ChurnCPU = (st.CPU - base.cpu).Seconds()
	}
	b.res.PeakRSS = peakRSS(b.pid)
	if n1, sum1 := reconcileMetrics(ctx, b.h); n1 > base.reconciles {
		b.res.ChurnReconciles = n1 - base.reconciles
		b.res.ReconcileMeanMs = (sum1 - base.reconcileSec) / float64(n1-base.reconciles) * 1000
	}
	return nil
}

// idle measures the daemon's CPU over d with nothing changing.
func (b *scaleBench) idle(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	st0, err := testbed.ReadProcStat(b.pid)
	if err != nil {
		return err
	}
	t0 := time.Now()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
	}
	st1, err := testbed.ReadProcStat(b.pid)
	if err != nil {
		return err
	}
	b.res.IdleCPU, b.res.IdleSec = (st1.CPU - st0.CPU).Seconds(), time.Since(t0).Seconds()
	if rss := float64(st1.RSS) / (1 << 20); rss > b.res.PeakRSS {
		b.res.PeakRSS = rss
	}
	return nil
}

// warnings are the first WARN and ERROR lines of a daemon log, for an
// error message.
func warnings(log string) string {
	var out []string
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") {
			out = append(out, l)
		}
		if len(out) == 5 {
			break
		}
	}
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, " | ")
}
