// Command bench measures the data plane on the namespace testbed: iperf3
// TCP throughput, the daemons' CPU time per GB and RSS, and ping latency,
// for the bare underlay and each backend, and writes the table to
// bench/results/ as Markdown and JSON (make bench).
//
// Flow:
//
//	lock (one benchmark at a time) -> per scenario: a testbed with 2 hosts
//	and 1 pod each, daemons started with the scenario's net-conf, iperf3
//	server -> runs x scenarios, interleaved (iperf3 -t duration, /proc CPU
//	before/after) -> per scenario 200 pings, RSS -> testbeds removed (also
//	on error or Ctrl-C) -> ratios to the underlay and to kernel VXLAN
//	-> table on stdout, bench/results/<name>.{md,json}
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
	TxRSSMiB    float64 `json:"tx_daemon_rss_mib,omitempty"`
	RxRSSMiB    float64 `json:"rx_daemon_rss_mib,omitempty"`
	PingMs      Stat    `json:"ping_ms"`
	Error       string  `json:"error,omitempty"`
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
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run() error {
	runs := flag.Int("runs", 3, "iperf3 runs per scenario")
	dur := flag.Duration("duration", 5*time.Second, "length of one iperf3 run")
	pings := flag.Int("pings", 200, "pings for the latency figure")
	only := flag.String("only", "", "comma-separated scenario names (default: all)")
	out := flag.String("out", "bench/results", "directory for the Markdown and JSON results")
	name := flag.String("name", "latest", "base name of the result files")
	verbose := flag.Bool("v", false, "log testbed progress")
	flag.Parse()
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
	rep := Report{Time: time.Now().UTC(), Kernel: kernel(), CPUs: runtime.NumCPU(), Runs: *runs, Duration: dur.String(), Pings: *pings}
	var rigs []*rig
	defer func() {
		for _, r := range rigs {
			r.close()
		}
	}()
	for _, sc := range scenarios {
		if *only != "" && !slices.Contains(strings.Split(*only, ","), sc.Name) {
			continue
		}
		fmt.Fprintf(os.Stderr, "bench: setting up %s\n", sc.Name)
		r, err := setup(ctx, sc, *verbose)
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
	for i := range *runs {
		for _, r := range rigs {
			if r.res.Error == "" {
				r.runOnce(ctx, i, *dur)
			}
		}
	}
	for _, r := range rigs {
		if r.res.Error == "" {
			r.finish(ctx, *pings)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		rep.Results = append(rep.Results, r.res)
	}
	ratios(rep.Results)
	md := markdown(rep)
	fmt.Print(md)
	return write(*out, *name, md, rep)
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
	fmt.Fprintf(&b, "# Data-plane benchmark\n\n%s, kernel %s, %d CPUs; iperf3 TCP single stream, pod to pod across two hosts (the underlay row: host to host), %d runs of %s, median [min–max]; ping: %d pings 10 ms apart, median [min–max]. CPU: the daemon's user+system seconds per GB received, on the sending (tx) and receiving (rx) host.\n\n",
		rep.Time.Format(time.RFC3339), rep.Kernel, rep.CPUs, rep.Runs, rep.Duration, rep.Pings)
	b.WriteString("| scenario | Gbit/s | vs underlay | vs vxlan | tx CPU s/GB | rx CPU s/GB | RSS MiB tx/rx | ping ms |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|\n")
	pct := func(v float64) string {
		if v == 0 {
			return "–"
		}
		return fmt.Sprintf("%.0f%%", v*100)
	}
	st := func(s *Stat, f string) string {
		if s == nil {
			return "–"
		}
		return fmt.Sprintf(f+" ["+f+"–"+f+"]", s.Median, s.Min, s.Max)
	}
	for _, r := range rep.Results {
		if r.Error != "" {
			fmt.Fprintf(&b, "| %s | error: %s | | | | | | |\n", r.Name, strings.ReplaceAll(r.Error, "\n", " "))
			continue
		}
		rss := "–"
		if r.TxRSSMiB > 0 {
			rss = fmt.Sprintf("%.0f / %.0f", r.TxRSSMiB, r.RxRSSMiB)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s |\n", r.Name, st(&r.Gbps, "%.2f"), pct(r.VsUnderlay), pct(r.VsVXLAN),
			st(r.TxCPUPerGB, "%.2f"), st(r.RxCPUPerGB, "%.2f"), rss, st(&r.PingMs, "%.3f"))
	}
	return b.String()
}

// write stores the report as name.md and name.json in dir, each through a
// temporary file and a rename.
func write(dir, name, md string, rep Report) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	js, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	for ext, data := range map[string][]byte{".md": []byte(md), ".json": append(js, '\n')} {
		path := filepath.Join(dir, name+ext)
		if err := os.WriteFile(path+".tmp", data, 0o644); err != nil {
			return err
		}
		if err := os.Rename(path+".tmp", path); err != nil {
			return err
		}
	}
	fmt.Fprintf(os.Stderr, "bench: wrote %s/%s.{md,json}\n", dir, name)
	return nil
}
