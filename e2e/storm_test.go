package e2e_test

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flanneld-go/flannel/internal/etcdtest"
	"github.com/flanneld-go/flannel/subnet"
	"github.com/flanneld-go/flannel/subnet/etcd"
)

// TestAcquisitionStorm starts 250 subnet managers, each with its own etcd
// client as 250 daemons would have, that acquire at the same instant
// against a real (embedded) etcd: in a /16 every one gets a distinct /24;
// in a /24 split into /28s the 15 leasable subnets are handed out once
// and every other manager gets the exhaustion error an operator can act
// on. make bench measures the same against the testbed etcd.
func TestAcquisitionStorm(t *testing.T) {
	srv, err := etcdtest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	const n = 250
	clients := make([]*clientv3.Client, n)
	for i := range clients {
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{srv.Endpoint}, DialTimeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cli.Close() })
		clients[i] = cli
	}
	for _, tc := range []struct {
		conf     string
		leasable int
	}{
		{`{"Network":"10.0.0.0/16","Backend":{"Type":"vxlan"}}`, 255},
		{`{"Network":"10.0.0.0/24","SubnetLen":28,"Backend":{"Type":"vxlan"}}`, 15},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := clients[0].Delete(ctx, etcd.DefaultPrefix+"/subnets/", clientv3.WithPrefix()); err != nil {
			t.Fatal(err)
		}
		cfg, _, err := subnet.ParseConfig([]byte(tc.conf))
		if err != nil {
			t.Fatal(err)
		}
		leases := make([]subnet.Lease, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i, cli := range clients {
			m := etcd.NewManager(cli, "", time.Hour, slog.New(slog.DiscardHandler))
			attrs := subnet.LeaseAttrs{PublicIP: netip.AddrFrom4([4]byte{10, 60, byte(i >> 8), byte(i)}), BackendType: "vxlan"}
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				leases[i], errs[i] = m.Acquire(ctx, cfg, attrs, subnet.Hint{})
			}()
		}
		t0 := time.Now()
		close(start)
		wg.Wait()
		wall := time.Since(t0)
		got := map[netip.Prefix]int{}
		exhausted := 0
		for i, err := range errs {
			switch {
			case err == nil:
				if j, dup := got[leases[i].Subnet]; dup {
					t.Errorf("%s: managers %d and %d both got %s", cfg.Network, j, i, leases[i].Subnet)
				}
				got[leases[i].Subnet] = i
			case errors.Is(err, subnet.ErrNoFreeSubnet):
				exhausted++
				want := "no free subnet in " + cfg.Network.String() + " (SubnetLen 28): 15 leased, 0 reserved"
				if err.Error() != want {
					t.Errorf("exhaustion error %q, want %q", err, want)
				}
			default:
				t.Errorf("manager %d: %v", i, err)
			}
		}
		if want := min(n, tc.leasable); len(got) != want || exhausted != n-want {
			t.Errorf("%s: %d distinct subnets and %d exhaustion errors, want %d and %d", cfg.Network, len(got), exhausted, want, n-want)
		}
		resp, err := clients[0].Get(ctx, etcd.DefaultPrefix+"/subnets/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		if int(resp.Count) != len(got) {
			t.Errorf("%s: %d leases in etcd, %d handed out", cfg.Network, resp.Count, len(got))
		}
		t.Logf("%s (SubnetLen %d): %d managers, %d acquired, %d out of subnets, wall %v", cfg.Network, cfg.SubnetLen, n, len(got), exhausted, wall.Round(time.Millisecond))
	}
}
