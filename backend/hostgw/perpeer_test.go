package hostgw

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	"github.com/flanneld-go/flannel/backend"
	"github.com/flanneld-go/flannel/backend/dataplane"
	"github.com/flanneld-go/flannel/subnet"
)

var _ backend.PerPeer = (*HostGW)(nil)

// Random joins, leaves and moves applied one batch at a time with Update
// leave the kernel exactly as the whole-set Desired says, and Update reads
// nothing: a dump-free diff of the changed peers alone.
func TestReconcilerUpdateMatchesDesired(t *testing.T) {
	b, k, _ := setup(t, `{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}`)
	dumps := &dumpCounter{Kernel: k}
	b.k = dumps
	r := backend.NewReconciler(b)
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(1, 2))
	peers := map[string]subnet.Lease{}
	mk := func(i int) subnet.Lease {
		seg := []string{"50", "50", "60"}[rng.IntN(3)] // 60: not on-link
		return lease(fmt.Sprintf("10.244.%d.0/24", i), fmt.Sprintf("192.168.%s.%d", seg, 1+rng.IntN(250)), TypeName)
	}
	for i := range 20 {
		p := mk(i)
		peers[p.Key()] = p
	}
	if _, err := r.Full(ctx, values(peers)); err != nil {
		t.Fatal(err)
	}
	for round := range 200 {
		last := map[string]*subnet.Lease{} // the batch's last word on each key
		for range 1 + rng.IntN(4) {
			i := rng.IntN(30)
			key := mk(i).Key()
			if _, ok := peers[key]; ok && rng.IntN(2) == 0 {
				delete(peers, key)
				last[key] = nil
				continue
			}
			p := mk(i)
			peers[key] = p
			last[key] = &p
		}
		var set []subnet.Lease
		var gone []string
		for key, p := range last {
			if p == nil {
				gone = append(gone, key)
			} else {
				set = append(set, *p)
			}
		}
		before := dumps.n
		if _, err := r.Update(set, gone); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if dumps.n != before {
			t.Fatalf("round %d: Update dumped the routing table", round)
		}
		want, _ := Desired(b.cfg, b.ext, values(peers), b.nets)
		if got := routes(k); got != withNames(want, b.ext.Index) {
			t.Fatalf("round %d: kernel\n%s\nwant\n%s", round, got, withNames(want, b.ext.Index))
		}
	}
}

func values(m map[string]subnet.Lease) []subnet.Lease {
	var out []subnet.Lease
	for _, p := range m {
		out = append(out, p)
	}
	return out
}

func withNames(s dataplane.State, eth0 int) string {
	return strings.ReplaceAll(s.String(), fmt.Sprintf("dev #%d", eth0), "dev eth0")
}

// dumpCounter counts the routing table dumps.
type dumpCounter struct {
	dataplane.Kernel
	n int
}

func (d *dumpCounter) RouteList() ([]dataplane.Route, error) {
	d.n++
	return d.Kernel.RouteList()
}

// A route deleted by hand comes back with Full (the periodic resync), not
// with Update; a new address on the external interface puts a peer that
// was off-link on-link at the next Full, without any lease change.
func TestReconcilerFullResync(t *testing.T) {
	b, k, _ := setup(t, `{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}`)
	r := backend.NewReconciler(b)
	ctx := context.Background()
	near, far := lease("10.244.2.0/24", "192.168.50.12", TypeName), lease("10.244.4.0/24", "192.168.60.14", TypeName)
	if _, err := r.Update([]subnet.Lease{near}, nil); err == nil {
		t.Fatal("Update before the first Full: no error")
	}
	if !r.NeedsFull() {
		t.Fatal("a new reconciler does not need a Full")
	}
	if _, err := r.Full(ctx, []subnet.Lease{near, far}); err != nil {
		t.Fatal(err)
	}
	delete(k.Routes, near.Subnet)
	third := lease("10.244.5.0/24", "192.168.50.15", TypeName)
	if _, err := r.Update([]subnet.Lease{third}, nil); err != nil {
		t.Fatal(err)
	}
	if got := routes(k); got != "ip route 10.244.5.0/24 via 192.168.50.15 dev eth0 proto 98" {
		t.Errorf("after Update:\n%s", got)
	}
	k.Addrs[dataplane.Addr{LinkIndex: b.ext.Index, Prefix: netip.MustParsePrefix("192.168.60.11/24")}] = true
	ch, err := r.Full(ctx, []subnet.Lease{near, far, third})
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Join([]string{
		"ip route 10.244.2.0/24 via 192.168.50.12 dev eth0 proto 98",
		"ip route 10.244.4.0/24 via 192.168.60.14 dev eth0 proto 98",
		"ip route 10.244.5.0/24 via 192.168.50.15 dev eth0 proto 98",
	}, "\n")
	if got := routes(k); got != want || ch.RoutesSet != 2 {
		t.Errorf("after Full (%+v):\n%s\nwant\n%s", ch, got, want)
	}
}

// A failed Update leaves the reconciler needing a Full, which repairs the
// kernel.
func TestReconcilerFailedUpdate(t *testing.T) {
	b, k, _ := setup(t, `{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}`)
	r := backend.NewReconciler(b)
	ctx := context.Background()
	if _, err := r.Full(ctx, nil); err != nil {
		t.Fatal(err)
	}
	p := lease("10.244.2.0/24", "192.168.50.12", TypeName)
	k.Fail["10.244.2.0/24"] = errors.New("injected")
	if _, err := r.Update([]subnet.Lease{p}, nil); err == nil {
		t.Fatal("no error from the failed route")
	}
	if !r.NeedsFull() {
		t.Fatal("a failed Update does not ask for a Full")
	}
	delete(k.Fail, "10.244.2.0/24")
	if _, err := r.Full(ctx, []subnet.Lease{p}); err != nil || r.NeedsFull() {
		t.Fatalf("Full: %v, needs full %v", err, r.NeedsFull())
	}
	if got := routes(k); got != "ip route 10.244.2.0/24 via 192.168.50.12 dev eth0 proto 98" {
		t.Errorf("after the repair:\n%s", got)
	}
}
