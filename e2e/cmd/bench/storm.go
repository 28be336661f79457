package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flanneld-go/flannel/subnet"
	"github.com/flanneld-go/flannel/subnet/etcd"
)

// StormResult is one acquisition storm.
type StormResult struct {
	Network   string  `json:"network"`
	SubnetLen int     `json:"subnet_len"`
	Leasable  int     `json:"leasable"`
	Managers  int     `json:"managers"`
	Acquired  int     `json:"acquired"`
	Distinct  bool    `json:"distinct"`
	WallMs    float64 `json:"wall_ms"`
	PerCall   Latency `json:"per_call"`
	Exhausted int     `json:"exhausted"` // ErrNoFreeSubnet
	OtherErrs int     `json:"other_errors"`
	// ExhaustedMsg is one exhaustion error as the operator sees it.
	ExhaustedMsg string `json:"exhausted_message,omitempty"`
	OtherMsg     string `json:"other_error,omitempty"`
	Error        string `json:"error,omitempty"`
}

// storm runs n subnet managers, each with its own etcd client (as n
// daemons would), that call Acquire at the same instant against etcd,
// for the net-conf conf; the subnet table is emptied first.
func storm(ctx context.Context, dial func() (*clientv3.Client, error), conf string, n int) (res StormResult) {
	fail := func(err error) StormResult {
		res.Error = err.Error()
		logf("bench: storm %s: %v", conf, err)
		return res
	}
	cfg, _, err := subnet.ParseConfig([]byte(conf))
	if err != nil {
		return fail(err)
	}
	res = StormResult{Network: cfg.Network.String(), SubnetLen: cfg.SubnetLen, Managers: n,
		Leasable: leasable(cfg)}
	logf("bench: storm: %d managers acquiring in %s (SubnetLen %d, %d leasable)", n, cfg.Network, cfg.SubnetLen, res.Leasable)
	admin, err := dial()
	if err != nil {
		return fail(err)
	}
	defer admin.Close()
	if _, err := admin.Delete(ctx, subnetsDir, clientv3.WithPrefix()); err != nil {
		return fail(err)
	}
	if _, err := admin.Put(ctx, etcd.DefaultPrefix+"/config", conf); err != nil {
		return fail(err)
	}
	mgrs, closeAll, err := stormManagers(ctx, dial, n)
	if err != nil {
		return fail(err)
	}
	defer closeAll()
	outs, wall := acquireAll(ctx, cfg, mgrs)
	res.WallMs = float64(wall.Microseconds()) / 1000
	res.tally(outs)
	// The leases in etcd must be exactly the ones handed out.
	resp, err := admin.Get(ctx, subnetsDir, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return fail(err)
	}
	if int(resp.Count) != res.Acquired {
		return fail(fmt.Errorf("%d leases in etcd, %d acquisitions reported", resp.Count, res.Acquired))
	}
	logf("bench: storm %s/%d: %d of %d acquired, distinct %v, wall %.0f ms; %d exhausted (%s), %d other errors %s",
		res.Network, res.SubnetLen, res.Acquired, n, res.Distinct, res.WallMs, res.Exhausted, res.ExhaustedMsg, res.OtherErrs, res.OtherMsg)
	return res
}

// stormManagers makes n subnet managers, each with its own etcd client,
// already connected; closeAll closes the clients. On an error the clients
// made so far are closed.
func stormManagers(ctx context.Context, dial func() (*clientv3.Client, error), n int) (mgrs []*etcd.Manager, closeAll func(), err error) {
	var clis []*clientv3.Client
	closeAll = func() {
		for _, cli := range clis {
			cli.Close()
		}
	}
	quiet := slog.New(slog.DiscardHandler)
	mgrs = make([]*etcd.Manager, n)
	for i := range mgrs {
		cli, err := dial()
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		clis = append(clis, cli)
		// Connect now, so the storm measures acquisition, not dialing.
		if _, err := cli.Get(ctx, etcd.DefaultPrefix+"/config"); err != nil {
			closeAll()
			return nil, nil, err
		}
		mgrs[i] = etcd.NewManager(cli, "", time.Hour, quiet)
	}
	return mgrs, closeAll, nil
}

// acquisition is one manager's Acquire: the lease or error, and how long
// the call took.
type acquisition struct {
	l   subnet.Lease
	err error
	d   time.Duration
}

// acquireAll lets every manager call Acquire at the same instant, manager
// i as public address 10.60.x.y, and returns the outcomes and the time
// until the last call returned.
func acquireAll(ctx context.Context, cfg *subnet.Config, mgrs []*etcd.Manager) ([]acquisition, time.Duration) {
	outs := make([]acquisition, len(mgrs))
	var wg sync.WaitGroup
	startGun := make(chan struct{})
	for i, m := range mgrs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			attrs := subnet.LeaseAttrs{PublicIP: netip.AddrFrom4([4]byte{10, 60, byte(i >> 8), byte(i)}), BackendType: "vxlan"}
			<-startGun
			t := time.Now()
			l, err := m.Acquire(ctx, cfg, attrs, subnet.Hint{})
			outs[i] = acquisition{l, err, time.Since(t)}
		}()
	}
	t0 := time.Now()
	close(startGun)
	wg.Wait()
	return outs, time.Since(t0)
}

// tally counts the outcomes into res: acquired (and whether all distinct),
// exhausted, other errors, and the per-call latency.
func (res *StormResult) tally(outs []acquisition) {
	seen := map[netip.Prefix]bool{}
	res.Distinct = true
	var ds []time.Duration
	for _, o := range outs {
		ds = append(ds, o.d)
		switch {
		case o.err == nil:
			res.Acquired++
			if seen[o.l.Subnet] {
				res.Distinct = false
			}
			seen[o.l.Subnet] = true
		case errors.Is(o.err, subnet.ErrNoFreeSubnet):
			res.Exhausted++
			res.ExhaustedMsg = o.err.Error()
		default:
			res.OtherErrs++
			res.OtherMsg = o.err.Error()
		}
	}
	res.PerCall = latency(ds)
}

// leasable counts the subnets in [SubnetMin, SubnetMax] (IPv4).
func leasable(cfg *subnet.Config) int {
	lo, hi := cfg.SubnetMin.As4(), cfg.SubnetMax.As4()
	u := func(b [4]byte) uint32 { return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]) }
	return int((u(hi)-u(lo))>>(32-cfg.SubnetLen)) + 1
}

// stormOK checks a storm against what it must show: with room for all,
// every manager got a distinct subnet; without, exactly the leasable
// subnets were handed out and every other manager got the exhaustion error.
func stormOK(r StormResult) error {
	want := min(r.Managers, r.Leasable)
	var errs []string
	if r.Error != "" {
		errs = append(errs, r.Error)
	}
	if r.Acquired != want || !r.Distinct {
		errs = append(errs, fmt.Sprintf("%d acquired (distinct: %v), want %d distinct", r.Acquired, r.Distinct, want))
	}
	if r.Managers > r.Leasable {
		prefix := fmt.Sprintf("no free subnet in %s (SubnetLen %d): ", r.Network, r.SubnetLen)
		if r.Exhausted != r.Managers-r.Leasable || !strings.HasPrefix(r.ExhaustedMsg, prefix) {
			errs = append(errs, fmt.Sprintf("%d exhaustion errors %q, want %d starting %q", r.Exhausted, r.ExhaustedMsg, r.Managers-r.Leasable, prefix))
		}
	}
	if r.OtherErrs > 0 {
		errs = append(errs, fmt.Sprintf("%d other errors: %s", r.OtherErrs, r.OtherMsg))
	}
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, "; "))
	}
	return nil
}
