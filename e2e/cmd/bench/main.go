// Command bench measures flanneld on the namespace testbed (make bench)
// and writes the results to bench/results/ as Markdown, JSON and a PNG bar
// chart of the throughput.
//
// Data plane (dataplane.go, one table): for the bare underlay and each backend, iperf3
// TCP throughput pod to pod, its ratio to the underlay of the same run,
// ping latency, and the daemons' RSS and CPU time during the transfers.
//
//	lock (one benchmark at a time) -> per scenario: a testbed with 2 hosts
//	and 1 pod each, daemons started with the scenario's net-conf, iperf3
//	server -> runs x scenarios, interleaved (iperf3 -t duration, /proc CPU
//	before/after) -> per scenario 200 pings, RSS -> testbeds removed (also
//	on error or Ctrl-C) -> ratios to the underlay and to kernel VXLAN
//
// Control plane (control.go and one file per measurement): convergence of a join over 5 hosts, one
// daemon with 1,000 leases and their churn, an acquisition storm of
// 250 subnet managers, and a whole-cluster live backend switch (switch.go).
// Select parts with -only: scenario names, "data", "control",
// "convergence", "scale", "storm", "switch".
//
// Scenarios are a list, so more rows (more backends, multi-stream, UDP
// throughput) are one entry each.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

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
	sizes             []int
	churn             int
	idle              time.Duration
	churnRate         float64
	stormN            int
	perfDir           string
	altBin            string
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
	o, out, name, err := parseFlags()
	if err != nil {
		return err
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
	if err := dataPlane(ctx, o, &rep); err != nil {
		return err
	}
	if err := controlPlane(ctx, o, &rep); err != nil {
		return err
	}
	md := markdown(rep)
	fmt.Print(md)
	if err := write(out, name, md, rep); err != nil {
		return err
	}
	if fails := checks(rep); len(fails) > 0 {
		return fmt.Errorf("%d check(s) failed:\n  %s", len(fails), strings.Join(fails, "\n  "))
	}
	return nil
}

// parseFlags reads the command line: the options, and the directory and
// base name of the result files.
func parseFlags() (o *options, out, name string, err error) {
	o = &options{}
	flag.IntVar(&o.runs, "runs", 3, "iperf3 runs per scenario")
	flag.DurationVar(&o.dur, "duration", 5*time.Second, "length of one iperf3 run")
	flag.IntVar(&o.pings, "pings", 200, "pings for the latency figure")
	only := flag.String("only", "", "comma-separated parts to run: scenario names (underlay, host-gw, vxlan, udp, udp-no-offload, wireguard), data, control, convergence, scale, storm, switch (default: all)")
	outDir := flag.String("out", "bench/results", "directory for the Markdown, JSON and PNG results")
	base := flag.String("name", "latest", "base name of the result files")
	flag.BoolVar(&o.verbose, "v", false, "log testbed progress")
	flag.IntVar(&o.hosts, "hosts", 5, "convergence: hosts running a daemon")
	flag.IntVar(&o.joins, "joins", 20, "convergence: simulated hosts joining, one at a time")
	sizes := flag.String("leases", "1000,5000,10000", "scale: comma-separated numbers of leases in etcd (one is the daemon's own), one scenario each")
	flag.DurationVar(&o.idle, "idle", 60*time.Second, "scale: how long the idle daemon's CPU is measured after the churn (0: not)")
	flag.StringVar(&flanneldBin, "flanneld", "", "the daemon binary to measure (default: bin/flanneld of the repository)")
	flag.IntVar(&o.churn, "churn", 1000, "scale: leases deleted and re-added after start-up")
	flag.Float64Var(&o.churnRate, "churn-rate", 100, "scale: churned leases per second")
	flag.IntVar(&o.stormN, "storm", 250, "storm: subnet managers acquiring at once")
	flag.StringVar(&o.perfDir, "perf", "", "scale: record a perf profile of the daemon during the churn into this directory; data: of both daemons during the last run of each udp scenario")
	flag.StringVar(&o.altBin, "alt-bin", "", "data: also measure the udp backend of this flanneld binary (row udp-alt, with the udp row), to compare two builds in one run")
	flag.Parse()
	for _, n := range strings.Split(*sizes, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(n))
		if err != nil || v < 2 || v > 30000 {
			return nil, "", "", fmt.Errorf("-leases %s: want numbers from 2 to 30000", *sizes)
		}
		o.sizes = append(o.sizes, v)
	}
	o.only = map[string]bool{}
	for _, n := range strings.Split(*only, ",") {
		if n = strings.TrimSpace(n); n != "" {
			o.only[n] = true
		}
	}
	known := []string{"data", "control", "convergence", "scale", "storm", "switch"}
	for _, sc := range scenarios {
		known = append(known, sc.Name)
	}
	for n := range o.only {
		if !slices.Contains(known, n) {
			return nil, "", "", fmt.Errorf("-only %s: unknown part; known: %s", n, strings.Join(known, ", "))
		}
	}
	return o, *outDir, *base, nil
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
	for _, n := range o.sizes {
		for _, typ := range []string{"host-gw", "vxlan"} {
			if o.want("control", "scale") {
				rep.Scale = append(rep.Scale, scale(ctx, typ, n, o))
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
	}
	if o.want("control", "switch") {
		rep.Switch = switches(ctx, o.verbose)
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
