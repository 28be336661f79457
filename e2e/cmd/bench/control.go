package main

// Control-plane measurements: how fast lease changes in etcd reach the
// kernel of every host (convergence), how one daemon copes with a thousand
// peers and their churn (scale), and how concurrent acquisitions behave
// (storm). Leases of simulated peers are written straight into the
// testbed etcd from this process (see etcdClient); the kernel tables are
// followed with ip/bridge monitor (see kernelWatch), never polled.

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flanneld-go/flannel/e2e/testbed"
	"github.com/flanneld-go/flannel/subnet"
	"github.com/flanneld-go/flannel/subnet/etcd"
)

const subnetsDir = etcd.DefaultPrefix + "/subnets/"

// simPeer is a simulated host: a lease in etcd and nothing else.
type simPeer struct {
	Subnet   netip.Prefix
	PublicIP netip.Addr
	MAC      net.HardwareAddr
}

func (p simPeer) key() string { return subnetsDir + subnet.SubnetKey(p.Subnet, netip.Prefix{}) }

// value is the lease JSON a real daemon of backend typ would write.
func (p simPeer) value(typ string) string {
	a := subnet.LeaseAttrs{PublicIP: p.PublicIP, BackendType: typ}
	if typ == "vxlan" {
		a.BackendData = json.RawMessage(fmt.Sprintf(`{"VNI":1,"VtepMAC":%q}`, p.MAC))
	}
	b, _ := json.Marshal(a)
	return string(b)
}

// items are the kernel entries a daemon of backend typ installs for p.
func (p simPeer) items(typ string) []item {
	if typ == "host-gw" {
		return []item{{"route", p.Subnet.String(), p.PublicIP.String()}}
	}
	gw := p.Subnet.Addr().String()
	return []item{
		{"neigh", gw, p.MAC.String()},
		{"fdb", p.MAC.String(), p.PublicIP.String()},
		{"route", p.Subnet.String(), gw},
	}
}

func mac(gen, i int) net.HardwareAddr {
	return net.HardwareAddr{0x0e, 0xbe, byte(gen), byte(i >> 16), byte(i >> 8), byte(i)}
}

// netConf is the net-conf of a control-plane run.
func netConf(network, typ string) string {
	return fmt.Sprintf(`{"Network":%q,"Backend":{"Type":%q}}`, network, typ)
}

func vxlanDev(typ string) string {
	if typ == "vxlan" {
		return "flannel.1"
	}
	return ""
}

// Latency is a set of durations summarised, in milliseconds.
type Latency struct {
	N      int     `json:"n"`
	Median float64 `json:"median_ms"`
	P90    float64 `json:"p90_ms"`
	Max    float64 `json:"max_ms"`
}

func latency(ds []time.Duration) Latency {
	if len(ds) == 0 {
		return Latency{}
	}
	v := make([]float64, len(ds))
	for i, d := range ds {
		v[i] = float64(d.Microseconds()) / 1000
	}
	sort.Float64s(v)
	return Latency{N: len(v), Median: median(v), P90: rank(v, 0.90), Max: v[len(v)-1]}
}

func median(s []float64) float64 {
	if len(s)%2 == 0 {
		return (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return s[len(s)/2]
}

// rank is the nearest-rank percentile of sorted s.
func rank(s []float64, q float64) float64 {
	i := int(float64(len(s))*q+0.999999) - 1
	return s[max(0, min(i, len(s)-1))]
}

// newTestbed builds a testbed of n hosts, with the net-conf set.
// flanneldBin is the daemon binary of -flanneld ("": the repository's).
var flanneldBin string

func newTestbed(ctx context.Context, n int, conf string, verbose bool) (*testbed.Testbed, error) {
	opts := testbed.Options{Hosts: n, FlanneldBin: flanneldBin}
	if verbose {
		opts.Log = logf
	}
	tb, err := testbed.New(ctx, opts)
	if err != nil {
		return nil, err
	}
	if err := tb.PutNetConfig(ctx, conf); err != nil {
		tb.Close()
		return nil, err
	}
	return tb, nil
}

func startDaemons(ctx context.Context, tb *testbed.Testbed) error {
	for _, h := range tb.Hosts() {
		if err := h.StartDaemon(ctx); err != nil {
			return err
		}
	}
	for _, h := range tb.Hosts() {
		if _, err := h.WaitSubnetFile(ctx); err != nil {
			return err
		}
	}
	return nil
}

// tbClient is an etcd client to the testbed's etcd.
func tbClient(tb *testbed.Testbed) (*clientv3.Client, error) {
	return etcdClient(tb.Prefix()+"-sw", tb.EtcdEndpoint())
}

// takenSubnets lists the subnets leased in etcd now.
func takenSubnets(ctx context.Context, cli *clientv3.Client) (map[netip.Prefix]bool, error) {
	resp, err := cli.Get(ctx, subnetsDir, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, err
	}
	out := map[netip.Prefix]bool{}
	for _, kv := range resp.Kvs {
		k := strings.TrimPrefix(string(kv.Key), subnetsDir)
		if v4, _, err := subnet.ParseSubnetKey(k); err == nil {
			out[v4] = true
		}
	}
	return out, nil
}

func logf(f string, a ...any) { fmt.Fprintf(stderr, f+"\n", a...) }
