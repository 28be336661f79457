package main

// A whole-cluster live backend switch: a testbed of 3 hosts with a pod
// each, ping streams every 10 ms between the pods of every pair of hosts,
// and the net-conf put with the next backend, vxlan -> host-gw -> udp ->
// vxlan. Per switch: the time from the put until every host logged
// "backend switched" (its lease re-published and data plane programmed),
// and the pings lost across it (counted from the streams' sequence
// numbers, over the switch and the 6 s after it, while the old backend
// retires).

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/flanneld-go/flannel/e2e/testbed"
)

// SwitchResult is one whole-cluster switch.
type SwitchResult struct {
	From   string  `json:"from"`
	To     string  `json:"to"`
	Hosts  int     `json:"hosts"`
	WallMs float64 `json:"wall_ms"` // put -> every host switched
	Pings  int     `json:"pings"`
	Lost   int     `json:"lost"`
	Error  string  `json:"error,omitempty"`
}

var switchOrder = []string{"vxlan", "host-gw", "udp", "vxlan"}

// switches runs the sequence on one testbed.
func switches(ctx context.Context, verbose bool) []SwitchResult {
	const hosts = 3
	fail := func(err error) []SwitchResult {
		return []SwitchResult{{From: switchOrder[0], To: switchOrder[1], Hosts: hosts, Error: err.Error()}}
	}
	tctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	tb, err := newTestbed(tctx, hosts, netConf("10.244.0.0/16", switchOrder[0]), verbose)
	if err != nil {
		return fail(err)
	}
	defer tb.Close()
	if err := startDaemons(tctx, tb); err != nil {
		return fail(err)
	}
	if err := tb.AddPodsAll(tctx, 1); err != nil {
		return fail(err)
	}
	var out []SwitchResult
	for i := 1; i < len(switchOrder); i++ {
		r := switchOnce(tctx, tb, switchOrder[i-1], switchOrder[i], i)
		out = append(out, r)
		if r.Error != "" {
			break
		}
	}
	return out
}

// switchOnce puts the net-conf of to, the nth switch of the testbed.
func switchOnce(ctx context.Context, tb *testbed.Testbed, from, to string, nth int) SwitchResult {
	r := SwitchResult{From: from, To: to, Hosts: len(tb.Hosts())}
	var streams []*testbed.PingStream
	defer func() {
		for _, s := range streams {
			s.Kill()
		}
	}()
	for _, a := range tb.Hosts() {
		for _, b := range tb.Hosts() {
			if a != b {
				s, err := a.Pods[0].StartPingStream(ctx, b.Pods[0].Addr, "0.01")
				if err != nil {
					r.Error = err.Error()
					return r
				}
				streams = append(streams, s)
			}
		}
	}
	start := time.Now()
	if err := tb.PutNetConfig(ctx, netConf("10.244.0.0/16", to)); err != nil {
		r.Error = err.Error()
		return r
	}
	for !allSwitched(tb, nth) {
		if time.Since(start) > 30*time.Second || ctx.Err() != nil {
			r.Error = "not every host switched within 30 s"
			return r
		}
		time.Sleep(2 * time.Millisecond)
	}
	r.WallMs = float64(time.Since(start).Microseconds()) / 1000
	time.Sleep(6 * time.Second) // past the old backend's retirement (mux.DefaultGrace)
	for _, s := range streams {
		replies, lost, err := s.Stop()
		if err != nil {
			r.Error = err.Error()
			return r
		}
		r.Pings += replies + len(lost)
		r.Lost += len(lost)
	}
	return r
}

func allSwitched(tb *testbed.Testbed, nth int) bool {
	for _, h := range tb.Hosts() {
		if strings.Count(h.Log(), `msg="backend switched"`) < nth {
			return false
		}
	}
	return true
}

func switchTable(b *strings.Builder, ss []SwitchResult) {
	b.WriteString("\n## Live backend switch\n\nThe net-conf is put with the next backend while pods of every pair of hosts ping each other " +
		"every 10 ms. Wall: from the put until every host re-published its lease and programmed the new data plane. Lost: pings " +
		"missing over the switch and the 6 s after it, past the old backend's retirement.\n\n")
	b.WriteString("| switch | hosts | wall ms | pings | lost |\n|---|---|---|---|---|\n")
	for _, s := range ss {
		if s.Error != "" {
			fmt.Fprintf(b, "| %s -> %s | %d | error: %s | | |\n", s.From, s.To, s.Hosts, s.Error)
			continue
		}
		fmt.Fprintf(b, "| %s -> %s | %d | %.0f | %d | %d |\n", s.From, s.To, s.Hosts, s.WallMs, s.Pings, s.Lost)
	}
}
