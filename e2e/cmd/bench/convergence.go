package main

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flanneld-go/flannel/e2e/testbed"
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
	watches, err := watchHosts(tb, vxlanDev(typ))
	if err != nil {
		return fail(err)
	}
	defer closeWatches(watches)
	grant, err := cli.Grant(tctx, 600)
	if err != nil {
		return fail(err)
	}
	// Let the daemons' start-up reconciles settle.
	time.Sleep(500 * time.Millisecond)
	j := &joiner{cli: cli, lease: grant.ID, watches: watches, typ: typ}
	next := 100
	for i := range joins {
		p := simPeer{PublicIP: netip.AddrFrom4([4]byte{192, 168, 50, byte(100 + i)}), MAC: mac(1, i)}
		p.Subnet, next = freeSubnet(taken, next)
		worst, err := j.join(tctx, i, p)
		if err != nil {
			return fail(err)
		}
		if verbose {
			logf("bench: convergence %s: join %d: %v", typ, i+1, worst)
		}
		time.Sleep(250 * time.Millisecond)
	}
	res.Join, res.PerHost = latency(j.all), latency(j.per)
	res.PutMs = latency(j.puts).Median
	logf("bench: convergence %s: median %.1f ms, max %.1f ms over %d joins", typ, res.Join.Median, res.Join.Max, joins)
	return res
}

// watchHosts starts an ip/bridge monitor in every host of tb; on an error
// the monitors already started are closed.
func watchHosts(tb *testbed.Testbed, dev string) ([]*kernelWatch, error) {
	var watches []*kernelWatch
	for _, h := range tb.Hosts() {
		w, err := watchKernel(h.NS, dev)
		if err != nil {
			closeWatches(watches)
			return nil, err
		}
		watches = append(watches, w)
	}
	return watches, nil
}

func closeWatches(watches []*kernelWatch) {
	for _, w := range watches {
		w.close()
	}
}

// freeSubnet returns the first 10.244.N.0/24 with N >= next that no lease
// holds, and the N to look from next time.
func freeSubnet(taken map[netip.Prefix]bool, next int) (netip.Prefix, int) {
	for ; ; next++ {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(next), 0}), 24)
		if !taken[p] {
			return p, next + 1
		}
	}
}

// joiner writes simulated peers' leases and collects how long the hosts
// took to program them.
type joiner struct {
	cli     *clientv3.Client
	lease   clientv3.LeaseID
	watches []*kernelWatch
	typ     string

	all, per, puts []time.Duration // per join, per host and join, etcd writes
}

// join writes p's lease (join i, from 0) and waits until every host has
// all of p's entries; it returns the time the slowest host took.
func (j *joiner) join(ctx context.Context, i int, p simPeer) (time.Duration, error) {
	t0 := time.Now()
	if _, err := j.cli.Put(ctx, p.key(), p.value(j.typ), clientv3.WithLease(j.lease)); err != nil {
		return 0, err
	}
	j.puts = append(j.puts, time.Since(t0))
	var worst time.Duration
	for h, w := range j.watches {
		last, missing := w.wait(ctx, p.items(j.typ), t0, 10*time.Second)
		if missing > 0 {
			return 0, fmt.Errorf("join %d (%s): host h%d still misses %d of %d entries after 10s", i+1, p.Subnet, h+1, missing, len(p.items(j.typ)))
		}
		d := last.Sub(t0)
		j.per = append(j.per, d)
		worst = max(worst, d)
	}
	j.all = append(j.all, worst)
	return worst, nil
}
