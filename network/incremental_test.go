package network

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flanneld-go/flannel/backend"
	"github.com/flanneld-go/flannel/backend/dataplane"
	"github.com/flanneld-go/flannel/backend/hostgw"
	"github.com/flanneld-go/flannel/internal/etcdtest"
	"github.com/flanneld-go/flannel/subnet"
)

// dumpingKernel is a locked fake that counts routing table dumps.
type dumpingKernel struct {
	mu sync.Mutex
	*dataplane.Fake
	dumps int
}

func (k *dumpingKernel) RouteList() ([]dataplane.Route, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.dumps++
	return k.Fake.RouteList()
}

func (k *dumpingKernel) RouteReplace(r dataplane.Route) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.Fake.RouteReplace(r)
}

func (k *dumpingKernel) RouteDelete(r dataplane.Route) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.Fake.RouteDelete(r)
}

func (k *dumpingKernel) AddrList(link int) ([]dataplane.Addr, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.Fake.AddrList(link)
}

func (k *dumpingKernel) routes() (string, int) {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []string
	for _, l := range strings.Split(k.Dump(), "\n") {
		if strings.HasPrefix(l, "ip route") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n"), k.dumps
}

// A per-peer backend gets each lease change as a diff of that peer: the
// routes follow the leases without a single dump of the routing table
// after the first (full) reconcile; the periodic resync (here: never,
// the period is an hour) is the only full comparison.
func TestEngineAppliesPeerChangesWithoutDumps(t *testing.T) {
	srv, err := etcdtest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	cli := srv.Client(t)
	ctx := context.Background()
	netconf := `{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}`
	cli.Put(ctx, "/coreos.com/network/config", netconf)
	cfg, _, _ := subnet.ParseConfig([]byte(netconf))
	k := &dumpingKernel{Fake: dataplane.NewFake()}
	idx := k.AddLink(dataplane.Link{Name: "eth0", Type: "veth"})
	k.Addrs[dataplane.Addr{LinkIndex: idx, Prefix: netip.MustParsePrefix("192.168.50.11/24")}] = true
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	h := startHostWith(t, srv, cfg, "192.168.50.11", filepath.Join(t.TempDir(), "a.env"), func(e *Engine) {
		e.cfg.ReconcilePeriod = time.Hour
		e.ext.Index = idx
		e.be = hostgw.New(e.ext, cfg, log, k)
	})
	defer h.stop(t)
	if _, ok := h.eng.be.(backend.PerPeer); !ok {
		t.Fatal("host-gw is not driven per peer")
	}
	put := func(i int, pub string) {
		t.Helper()
		v, _ := json.Marshal(subnet.LeaseAttrs{PublicIP: netip.MustParseAddr(pub), BackendType: "host-gw"})
		if _, err := cli.Put(ctx, fmt.Sprintf("/coreos.com/network/subnets/10.244.%d.0-24", i), string(v)); err != nil {
			t.Fatal(err)
		}
	}
	want := func(what, routes string) int {
		t.Helper()
		var dumps int
		eventually(t, what, 5*time.Second, func() bool {
			var got string
			got, dumps = k.routes()
			return got == routes
		})
		return dumps
	}
	put(100, "192.168.50.100")
	base := want("first peer", "ip route 10.244.100.0/24 via 192.168.50.100 dev eth0 proto 98")
	put(101, "192.168.50.101")
	put(100, "192.168.50.110") // moved
	want("second peer, first moved", "ip route 10.244.100.0/24 via 192.168.50.110 dev eth0 proto 98\n"+
		"ip route 10.244.101.0/24 via 192.168.50.101 dev eth0 proto 98")
	if _, err := cli.Delete(ctx, "/coreos.com/network/subnets/10.244.101.0-24"); err != nil {
		t.Fatal(err)
	}
	dumps := want("second peer gone", "ip route 10.244.100.0/24 via 192.168.50.110 dev eth0 proto 98")
	if dumps != base {
		t.Errorf("the routing table was dumped %d times for three lease changes", dumps-base)
	}
}
