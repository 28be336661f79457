package hostgw

import (
	"bytes"
	"context"
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	"github.com/flanneld-go/flannel/backend"
	"github.com/flanneld-go/flannel/backend/dataplane"
	"github.com/flanneld-go/flannel/subnet"
)

func lease(v4, pub string, typ string) subnet.Lease {
	return subnet.Lease{Subnet: netip.MustParsePrefix(v4), Attrs: subnet.LeaseAttrs{PublicIP: netip.MustParseAddr(pub), BackendType: typ}}
}

func setup(t *testing.T, netconf string) (*HostGW, *dataplane.FakeKernel, *bytes.Buffer) {
	t.Helper()
	cfg, _, err := subnet.ParseConfig([]byte(netconf))
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	k := dataplane.NewFakeKernel()
	underlay := []netip.Prefix{netip.MustParsePrefix("192.168.50.0/24"), netip.MustParsePrefix("fd00:50::/64")}
	connected := func(ip netip.Addr) (bool, error) {
		for _, p := range underlay {
			if p.Contains(ip) {
				return true, nil
			}
		}
		return false, nil
	}
	ext := &backend.ExternalInterface{Name: "eth0", Index: 2, MTU: 1500}
	return New(ext, cfg, log, k, connected), k, &logs
}

func TestReconcileGolden(t *testing.T) {
	b, k, logs := setup(t, `{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}`)
	peers := []subnet.Lease{
		lease("10.244.2.0/24", "192.168.50.12", TypeName),
		lease("10.244.3.0/24", "192.168.50.13", TypeName),
		lease("10.244.4.0/24", "192.168.60.14", TypeName), // another L2 segment
		lease("10.244.5.0/24", "192.168.50.15", "vxlan"),  // another backend
	}
	ctx := context.Background()
	for i := 0; i < 3; i++ { // repeated reconciles log each problem once
		if err := b.Reconcile(ctx, peers); err != nil {
			t.Fatal(err)
		}
	}
	want := "10.244.2.0/24 via 192.168.50.12 dev #2 proto 98\n10.244.3.0/24 via 192.168.50.13 dev #2 proto 98"
	if got := k.Dump(); got != want {
		t.Errorf("routes:\n%s\nwant:\n%s", got, want)
	}
	l := logs.String()
	if n := strings.Count(l, "peer is not on this host's L2 segment"); n != 1 {
		t.Errorf("L2 warning logged %d times:\n%s", n, l)
	}
	if !strings.Contains(l, "use the vxlan backend (with DirectRouting") || !strings.Contains(l, "peer_ip=192.168.60.14") {
		t.Errorf("L2 warning lacks the fix or the peer:\n%s", l)
	}
	if n := strings.Count(l, "ignoring peer of another backend type"); n != 1 {
		t.Errorf("backend type warning logged %d times", n)
	}
	// A peer leaves: its route goes; a route removed by hand comes back.
	delete(k.Routes, netip.MustParsePrefix("10.244.3.0/24"))
	if err := b.Reconcile(ctx, peers[1:]); err != nil {
		t.Fatal(err)
	}
	if got := k.Dump(); got != "10.244.3.0/24 via 192.168.50.13 dev #2 proto 98" {
		t.Errorf("after leave + hand delete:\n%s", got)
	}
}

func TestReconcileDualStack(t *testing.T) {
	b, k, _ := setup(t, `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"host-gw"}}`)
	p := lease("10.244.2.0/24", "192.168.50.12", TypeName)
	p.IPv6Subnet = netip.MustParsePrefix("fd00:10:244:2::/64")
	p.Attrs.PublicIPv6 = netip.MustParseAddr("fd00:50::12")
	if err := b.Reconcile(context.Background(), []subnet.Lease{p}); err != nil {
		t.Fatal(err)
	}
	want := "10.244.2.0/24 via 192.168.50.12 dev #2 proto 98\nfd00:10:244:2::/64 via fd00:50::12 dev #2 proto 98"
	if got := k.Dump(); got != want {
		t.Errorf("routes:\n%s\nwant:\n%s", got, want)
	}
}

func TestOptions(t *testing.T) {
	if _, err := parseOptions([]byte(`{"Type":"host-gw"}`)); err != nil {
		t.Fatal(err)
	}
	_, err := parseOptions([]byte(`{"Type":"host-gw","DirectRouting":true}`))
	if err == nil || !strings.Contains(err.Error(), "Backend.DirectRouting: host-gw has no options; remove it") {
		t.Fatalf("got %v", err)
	}
}
