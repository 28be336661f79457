package network

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/flanneld-go/flannel/internal/etcdtest"
	"github.com/flanneld-go/flannel/subnet"
)

// TestEngineRejectsHostileLeases: leases that would hijack a host's
// subnet or claim our PublicIP never reach the backend; each is logged
// once, with the key to delete and the winner, and counted; deleting
// them changes nothing for the real peers.
func TestEngineRejectsHostileLeases(t *testing.T) {
	srv, err := etcdtest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	cli, ctx := srv.Client(t), context.Background()
	netconf := `{"Network":"10.244.0.0/16","Backend":{"Type":"test"}}`
	cli.Put(ctx, "/coreos.com/network/config", netconf)
	cfg, _, _ := subnet.ParseConfig([]byte(netconf))
	dir := t.TempDir()
	var logs syncBuffer
	a := startHostLog(t, srv, cfg, "192.168.50.11", filepath.Join(dir, "a.env"), slog.New(slog.NewTextHandler(&logs, nil)))
	defer a.stop(t)
	b := startHost(t, srv, cfg, "192.168.50.12", filepath.Join(dir, "b.env"))
	defer b.stop(t)
	lb := b.eng.Lease()
	eventually(t, "A sees B", 2*time.Second, func() bool { return a.be.peerSubnets()[lb.Subnet] })

	prefix := "/coreos.com/network/subnets/"
	inside := prefix + lb.Subnet.Addr().String() + "-25" // half of B's subnet
	dup := prefix + lb.Key() + "&fd00:10:244:9::-64"
	free := freeSubnets(2, lb.Subnet, a.eng.Lease().Subnet)
	mine := prefix + free[0]
	for k, v := range map[string]string{
		inside: `{"PublicIP":"192.168.50.66","BackendType":"test"}`,
		dup:    `{"PublicIP":"192.168.50.67","BackendType":"test"}`,
		mine:   `{"PublicIP":"192.168.50.11","BackendType":"test"}`,
	} {
		if _, err := cli.Put(ctx, k, v); err != nil {
			t.Fatal(err)
		}
	}
	msgs := map[string]string{
		inside: `msg="rejecting lease: its subnet length is not the net-conf's; delete the key, or restart its host so it leases with the current net-conf" reason=subnet_length key=` + inside,
		dup:    `msg="rejecting lease: its subnet overlaps an older lease's; delete the younger key" reason=overlaps_lease key=` + dup,
		mine:   `msg="rejecting lease: it claims our PublicIP; delete the key, or give one of the two hosts another --public-ip" reason=public_ip_own key=` + mine,
	}
	for k, m := range msgs {
		if !waitLog(&logs, m, 2*time.Second) {
			t.Fatalf("rejection of %s not logged as\n%s\nlog:\n%s", k, m, logs.String())
		}
	}
	if !strings.Contains(logs.String(), `winner=`+prefix+lb.Key()+` winner_ip=192.168.50.12`) {
		t.Errorf("the overlap does not name the winner:\n%s", logs.String())
	}
	// A re-write of the same value (a new revision) is not news. A lease
	// put after it shows when the watch has delivered it.
	cli.Put(ctx, dup, `{"PublicIP":"192.168.50.67","BackendType":"test"}`)
	marker := prefix + free[1]
	cli.Put(ctx, marker, `{"PublicIP":"192.168.50.19","BackendType":"test"}`)
	eventually(t, "A sees the marker lease", 2*time.Second, func() bool { return a.be.peerSubnets()[netip.MustParsePrefix(strings.Replace(free[1], "-", "/", 1))] })
	cli.Delete(ctx, marker)
	for k, m := range msgs {
		if n := strings.Count(logs.String(), m); n != 1 {
			t.Errorf("%s logged %d times, want once", k, n)
		}
	}
	for _, p := range a.be.peersNow() {
		if ip := p.Attrs.PublicIP.String(); ip != "192.168.50.12" && ip != "192.168.50.19" {
			t.Errorf("A's backend got a hostile peer %s (%s)", p.Key(), ip)
		}
	}
	checkMetrics(t, a.eng, `flannel_leases_rejected_total{reason="subnet_length"} 1`, `flannel_leases_rejected_total{reason="overlaps_lease"} 1`,
		`flannel_leases_rejected_total{reason="public_ip_own"} 1`, `flannel_leases_rejected_total{reason="vtep_mac_duplicate"} 0`)
	for k := range msgs {
		cli.Delete(ctx, k)
	}
	eventually(t, "A still has exactly B", 2*time.Second, func() bool {
		ps := a.be.peersNow()
		return len(ps) == 1 && ps[0].Key() == lb.Key()
	})
	if strings.Contains(logs.String(), "level=ERROR") {
		t.Errorf("errors logged:\n%s", logs.String())
	}
}

func waitLog(logs *syncBuffer, m string, d time.Duration) bool {
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if strings.Contains(logs.String(), m) {
			return true
		}
	}
	return false
}

// checkMetrics checks that the engine's /metrics has each line.
func checkMetrics(t *testing.T, e *Engine, lines ...string) {
	t.Helper()
	rec := httptest.NewRecorder()
	e.health.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for _, want := range lines {
		if !strings.Contains(rec.Body.String(), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// freeSubnets returns n keys of /24s of 10.244.0.0/16 other than held.
func freeSubnets(n int, held ...netip.Prefix) []string {
	var free []string
	for i := 2; len(free) < n; i++ {
		if sn := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(i), 0}), 24); !slices.Contains(held, sn) {
			free = append(free, strings.Replace(sn.String(), "/", "-", 1))
		}
	}
	return free
}
