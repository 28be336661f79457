package main

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// ConvergenceResult is one backend's join latency over a cluster.
type ConvergenceResult struct {
	Backend string `json:"backend"`
	Hosts   int    `json:"hosts"`
	Joins   int    `json:"joins"`
	// Join: from just before the lease is written to etcd until the last
	// host has the last of the peer's entries (route; vxlan: neighbour,
	// FDB and route), per join.
	Join Latency `json:"join_all_hosts"`
	// PerHost: the same per host and join (Hosts x Joins samples).
	PerHost Latency `json:"join_per_host"`
	// PutMs is the etcd write itself (median), part of the above.
	PutMs float64 `json:"etcd_put_ms"`
	Error string  `json:"error,omitempty"`
}

// convergence runs daemons of backend typ on hosts hosts, then writes
// joins leases of simulated peers one at a time, 250 ms apart, and times
// each until every host has programmed it.
func convergence(ctx context.Context, typ string, hosts, joins int, verbose bool) (res ConvergenceResult) {
	res = ConvergenceResult{Backend: typ, Hosts: hosts, Joins: joins}
	fail := func(err error) ConvergenceResult {
		res.Error = err.Error()
		logf("bench: convergence %s: %v", typ, err)
		return res
	}
	logf("bench: convergence %s: %d hosts, %d joins", typ, hosts, joins)
	tctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	tb, err := newTestbed(tctx, hosts, netConf("10.244.0.0/16", typ), verbose)
	if err != nil {
		return fail(err)
	}
	defer tb.Close()
	if err := startDaemons(tctx, tb); err != nil {
		return fail(err)
	}
	cli, err := tbClient(tb)
	if err != nil {
		return fail(err)
	}
	defer cli.Close()
	taken, err := takenSubnets(tctx, cli)
	if err != nil {
		return fail(err)
	}
	var watches []*kernelWatch
	defer func() {
		for _, w := range watches {
			w.close()
		}
	}()
	for _, h := range tb.Hosts() {
		w, err := watchKernel(h.NS, vxlanDev(typ))
		if err != nil {
			return fail(err)
		}
		watches = append(watches, w)
	}
	grant, err := cli.Grant(tctx, 600)
	if err != nil {
		return fail(err)
	}
	// Let the daemons' start-up reconciles settle.
	time.Sleep(500 * time.Millisecond)
	var all, per, puts []time.Duration
	next := 100
	for i := range joins {
		var p simPeer
		for ; ; next++ {
			p.Subnet = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(next), 0}), 24)
			if !taken[p.Subnet] {
				next++
				break
			}
		}
		p.PublicIP = netip.AddrFrom4([4]byte{192, 168, 50, byte(100 + i)})
		p.MAC = mac(1, i)
		t0 := time.Now()
		if _, err := cli.Put(tctx, p.key(), p.value(typ), clientv3.WithLease(grant.ID)); err != nil {
			return fail(err)
		}
		puts = append(puts, time.Since(t0))
		var worst time.Duration
		for j, w := range watches {
			last, missing := w.wait(tctx, p.items(typ), t0, 10*time.Second)
			if missing > 0 {
				return fail(fmt.Errorf("join %d (%s): host h%d still misses %d of %d entries after 10s", i+1, p.Subnet, j+1, missing, len(p.items(typ))))
			}
			d := last.Sub(t0)
			per = append(per, d)
			worst = max(worst, d)
		}
		all = append(all, worst)
		if verbose {
			logf("bench: convergence %s: join %d: %v", typ, i+1, worst)
		}
		time.Sleep(250 * time.Millisecond)
	}
	res.Join, res.PerHost = latency(all), latency(per)
	res.PutMs = latency(puts).Median
	logf("bench: convergence %s: median %.1f ms, max %.1f ms over %d joins", typ, res.Join.Median, res.Join.Max, joins)
	return res
}
