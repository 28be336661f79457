package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"

	"github.com/flanneld-go/flannel/e2e/testbed"
)

// checkKernel dumps the host's tables once and compares them with the
// entries the peers need, exactly: nothing missing, nothing extra.
func checkKernel(ctx context.Context, h *testbed.Host, typ string, peers map[int]simPeer) error {
	want := map[item]bool{}
	for _, p := range peers {
		for _, it := range p.items(typ) {
			want[it] = true
		}
	}
	out, err := h.Exec(ctx, "ip", "route", "show")
	if err != nil {
		return err
	}
	have := routeItems(out)
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

// routeItems are the routes of ip route show output as items (dst, gw).
func routeItems(out string) map[item]bool {
	have := map[item]bool{}
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		if len(f) == 0 || !strings.Contains(line, "proto 98") && !inScaleNet(f[0]) {
			continue // not the daemon's (upstream's routes carry no proto)
		}
		if len(f) >= 3 && f[1] == "nhid" { // a route through a nexthop object
			f = append(f[:1], f[3:]...)
		}
		if len(f) >= 3 && f[1] == "via" {
			have[item{"route", f[0], f[2]}] = true
		} else if len(f) > 0 {
			have[item{"route", f[0], ""}] = true
		}
	}
	return have
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
