// Command bench measures flanneld on the namespace testbed (make bench)
// and writes the results to bench/results/ as Markdown, JSON and a PNG bar
// chart of the throughput.
//
// Data plane (one table): for the bare underlay and each backend, iperf3
// TCP throughput pod to pod, its ratio to the underlay of the same run,
// ping latency, and the daemons' RSS and CPU time during the transfers.
//
//	lock (one benchmark at a time) -> per scenario: a testbed with 2 hosts
//	and 1 pod each, daemons started with the scenario's net-conf, iperf3
//	server -> runs x scenarios, interleaved (iperf3 -t duration, /proc CPU
//	before/after) -> per scenario 200 pings, RSS -> testbeds removed (also
//	on error or Ctrl-C) -> ratios to the underlay and to kernel VXLAN
//
// Control plane (control.go): convergence of a join over 5 hosts, one
// daemon with 1,000 leases and their churn, and an acquisition storm of
// 250 subnet managers. Select parts with -only: scenario names, "data",
// "control", "convergence", "scale", "storm".
//
// Scenarios are a list, so more rows (more backends, multi-stream, UDP
// throughput) are one entry each.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

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
}

var scenarios = []scenario{
	{Name: "underlay", Backend: ""},
	{Name: "host-gw", Backend: `{"Type":"host-gw"}`},
	{Name: "vxlan", Backend: `{"Type":"vxlan"}`},
	{Name: "udp", Backend: `{"Type":"udp"}`},
	{Name: "udp-no-offload", Backend: `{"Type":"udp"}`, Env: []string{"FLANNEL_UDP_OFFLOAD=off"}},
}

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
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

var stderr = os.Stderr

// options are the command-line settings.
type options struct {
	runs, pings       int
	dur               time.Duration
	only              map[string]bool
	verbose           bool
	hosts, joins      int
	peers, churn      int
	churnRate         float64
	stormN            int
	perfDir           string
	convergeBackends  []string
	dataScenarioNames []string
}

// want reports whether a part runs: all by default, else when -only
// names it or one of its groups.
func (o *options) want(names ...string) bool {
	if len(o.only) == 0 {
		return true
	}
	for _, n := range names {
		if o.only[n] {
			return true
		}
	}
	return false
}

func run() error {
	var o options
	flag.IntVar(&o.runs, "runs", 3, "iperf3 runs per scenario")
	flag.DurationVar(&o.dur, "duration", 5*time.Second, "length of one iperf3 run")
	flag.IntVar(&o.pings, "pings", 200, "pings for the latency figure")
	only := flag.String("only", "", "comma-separated parts to run: scenario names (underlay, host-gw, vxlan, udp, udp-no-offload), data, control, convergence, scale, storm (default: all)")
	out := flag.String("out", "bench/results", "directory for the Markdown, JSON and PNG results")
	name := flag.String("name", "latest", "base name of the result files")
	flag.BoolVar(&o.verbose, "v", false, "log testbed progress")
	flag.IntVar(&o.hosts, "hosts", 5, "convergence: hosts running a daemon")
	flag.IntVar(&o.joins, "joins", 20, "convergence: simulated hosts joining, one at a time")
	flag.IntVar(&o.peers, "leases", 1000, "scale: leases in etcd (one is the daemon's own)")
	flag.IntVar(&o.churn, "churn", 1000, "scale: leases deleted and re-added after start-up")
	flag.Float64Var(&o.churnRate, "churn-rate", 100, "scale: churned leases per second")
	flag.IntVar(&o.stormN, "storm", 250, "storm: subnet managers acquiring at once")
	flag.StringVar(&o.perfDir, "perf", "", "scale: record a perf profile of the daemon during the churn into this directory")
	flag.Parse()
	o.only = map[string]bool{}
	for _, n := range strings.Split(*only, ",") {
		if n = strings.TrimSpace(n); n != "" {
			o.only[n] = true
		}
	}
	known := []string{"data", "control", "convergence", "scale", "storm"}
	for _, sc := range scenarios {
		known = append(known, sc.Name)
	}
	for n := range o.only {
		if !slices.Contains(known, n) {
			return fmt.Errorf("-only %s: unknown part; known: %s", n, strings.Join(known, ", "))
		}
	}
	if os.Geteuid() != 0 {
		return errors.New("needs root (network namespaces)")
	}
	unlock, err := lock()
	if err != nil {
		return err
	}
	defer unlock()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep := Report{Time: time.Now().UTC(), Kernel: kernel(), CPUs: runtime.NumCPU(), Runs: o.runs, Duration: o.dur.String(), Pings: o.pings}
	if err := dataPlane(ctx, &o, &rep); err != nil {
		return err
	}
	if err := controlPlane(ctx, &o, &rep); err != nil {
		return err
	}
	md := markdown(rep)
	fmt.Print(md)
	if err := write(*out, *name, md, rep); err != nil {
		return err
	}
	if fails := checks(rep); len(fails) > 0 {
		return fmt.Errorf("%d check(s) failed:\n  %s", len(fails), strings.Join(fails, "\n  "))
	}
	return nil
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
	for _, sc := range scenarios {
		if !o.want("data", sc.Name) {
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
				r.runOnce(ctx, i, o.dur)
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

// controlPlane runs the selected control-plane measurements, each on its
// own testbed, one after the other.
func controlPlane(ctx context.Context, o *options, rep *Report) error {
	for _, typ := range []string{"host-gw", "vxlan"} {
		if o.want("control", "convergence") {
			rep.Convergence = append(rep.Convergence, convergence(ctx, typ, o.hosts, o.joins, o.verbose))
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	for _, typ := range []string{"host-gw", "vxlan"} {
		if o.want("control", "scale") {
			rep.Scale = append(rep.Scale, scale(ctx, typ, o.peers, o.churn, o.churnRate, o.perfDir, o.verbose))
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	if o.want("control", "storm") {
		rs, err := storms(ctx, o.stormN, o.verbose)
		if err != nil {
			return err
		}
		rep.Storm = rs
	}
	return ctx.Err()
}

// storms runs the acquisition storm on a testbed with only etcd: once in a
// /16 (room for all), once in a /24 split into /28s (15 subnets).
func storms(ctx context.Context, n int, verbose bool) ([]StormResult, error) {
	tctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	tb, err := newTestbed(tctx, 0, netConf("10.0.0.0/16", "vxlan"), verbose)
	if err != nil {
		return nil, err
	}
	defer tb.Close()
	dial := func() (*clientv3.Client, error) { return tbClient(tb) }
	var out []StormResult
	for _, conf := range []string{`{"Network":"10.0.0.0/16","Backend":{"Type":"vxlan"}}`, `{"Network":"10.0.0.0/24","SubnetLen":28,"Backend":{"Type":"vxlan"}}`} {
		out = append(out, storm(tctx, dial, conf, n))
		if ctx.Err() != nil {
			return out, ctx.Err()
		}
	}
	return out, nil
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
	for _, s := range rep.Storm {
		if err := stormOK(s); err != nil {
			out = append(out, fmt.Sprintf("storm %s/%d: %v", s.Network, s.SubnetLen, err))
		}
	}
	return out
}

// lock takes an exclusive flock on a file in /run: a second benchmark
// refuses to start (two would measure each other). The kernel drops the
// lock when the process dies, so a crash leaves nothing stale.
func lock() (func(), error) {
	path := "/run/flanneld-bench.lock"
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		b, _ := os.ReadFile(path)
		f.Close()
		return nil, fmt.Errorf("another benchmark is running (%s held by pid %s); wait for it", path, strings.TrimSpace(string(b)))
	}
	f.Truncate(0)
	fmt.Fprintf(f, "%d\n", os.Getpid())
	return func() { f.Close() }, nil
}

func kernel() string {
	b, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return strings.TrimSpace(string(b))
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
	opts := testbed.Options{Hosts: 2}
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
func (r *rig) runOnce(ctx context.Context, i int, dur time.Duration) {
	before := daemonCPU(r.h1, r.h2)
	bytes, secs, err := iperf(ctx, r.src, r.dstAddr, dur)
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

type execer interface {
	Exec(ctx context.Context, argv ...string) (string, error)
}

// iperfServer runs "iperf3 -s" in dst until the returned stop is called.
// One server serves every run of a scenario: a server per run (-1) can
// still be winding down when the next client connects.
func iperfServer(ctx context.Context, dst execer) (stop func()) {
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		dst.Exec(sctx, "iperf3", "-s")
		close(done)
	}()
	return func() { cancel(); <-done }
}

// iperf runs one iperf3 TCP transfer and returns the bytes received and
// the seconds it took, from iperf3's JSON.
func iperf(ctx context.Context, src execer, addr string, dur time.Duration) (int64, float64, error) {
	cctx, cancel := context.WithTimeout(ctx, dur+30*time.Second)
	defer cancel()
	var out string
	var err error
	for range 50 { // the server may still be starting
		out, err = src.Exec(cctx, "iperf3", "-c", addr, "-t", strconv.Itoa(int(dur.Seconds())), "-J")
		if !strings.Contains(out, "unable to connect") {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return 0, 0, err
	}
	var res struct {
		End struct {
			SumReceived struct {
				Bytes   int64   `json:"bytes"`
				Seconds float64 `json:"seconds"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		return 0, 0, fmt.Errorf("iperf3 JSON: %w", err)
	}
	if res.End.SumReceived.Seconds == 0 {
		return 0, 0, fmt.Errorf("iperf3 reported no transfer: %s", out)
	}
	return res.End.SumReceived.Bytes, res.End.SumReceived.Seconds, nil
}

var rttRe = regexp.MustCompile(`time=([0-9.]+) ms`)

// ping sends n pings 10 ms apart and returns the round-trip times in ms.
func ping(ctx context.Context, src execer, addr string, n int) ([]float64, error) {
	out, err := src.Exec(ctx, "ping", "-c", strconv.Itoa(n), "-i", "0.01", "-W", "1", addr)
	if err != nil {
		return nil, err
	}
	var rtts []float64
	for _, m := range rttRe.FindAllStringSubmatch(out, -1) {
		v, _ := strconv.ParseFloat(m[1], 64)
		rtts = append(rtts, v)
	}
	if len(rtts) < n*9/10 {
		return nil, fmt.Errorf("ping: %d of %d replies", len(rtts), n)
	}
	return rtts, nil
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
		"kernel tables equals the lease set.\n\n")
	b.WriteString("| backend | peers | entries | program ms | CPU s at start | RSS MiB | churn ops @ /s | lag median / max ms | settle ms | churn CPU s | exact | peak RSS MiB |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, s := range ss {
		if s.Error != "" {
			fmt.Fprintf(b, "| %s | %d | error: %s | | | | | | | | | |\n", s.Backend, s.Peers, s.Error)
			continue
		}
		fmt.Fprintf(b, "| %s | %d | %d | %.0f | %.2f | %.1f | %d @ %.0f | %.1f / %.1f | %.0f | %.2f | %v | %.1f |\n", s.Backend, s.Peers, s.Entries,
			s.ProgramMs, s.StartCPU, s.StartRSS, s.ChurnOps, s.ChurnRate, s.ChurnLag.Median, s.ChurnLag.Max, s.SettleMs, s.ChurnCPU, s.FinalExact, s.PeakRSS)
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
