package main

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

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
