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

func setup(t *testing.T, netconf string) (*HostGW, *dataplane.Fake, *bytes.Buffer) {
	t.Helper()
	cfg, _, err := subnet.ParseConfig([]byte(netconf))
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	k := dataplane.NewFake()
	idx := k.AddLink(dataplane.Link{Name: "eth0", Type: "veth"})
	for _, a := range []string{"192.168.50.11/24", "fd00:50::11/64"} {
		k.Addrs[dataplane.Addr{LinkIndex: idx, Prefix: netip.MustParsePrefix(a)}] = true
	}
	ext := &backend.ExternalInterface{Name: "eth0", Index: idx, MTU: 1500}
	return New(ext, cfg, log, k), k, &logs
}

func routes(k *dataplane.Fake) string {
	var out []string
	for _, l := range strings.Split(k.Dump(), "\n") {
		if strings.HasPrefix(l, "ip route") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestReconcileGolden(t *testing.T) {
	b, k, logs := setup(t, `{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}`)
	peers := []subnet.Lease{
		lease("10.244.2.0/24", "192.168.50.12", TypeName),
		lease("10.244.3.0/24", "192.168.50.13", TypeName),
		lease("10.244.4.0/24", "192.168.60.14", TypeName), // another L2 segment
	}
	ctx := context.Background()
	for i := 0; i < 3; i++ { // repeated reconciles log each problem once
		if _, err := b.Reconcile(ctx, peers); err != nil {
			t.Fatal(err)
		}
	}
	want := "ip route 10.244.2.0/24 via 192.168.50.12 dev eth0 proto 98\nip route 10.244.3.0/24 via 192.168.50.13 dev eth0 proto 98"
	if got := routes(k); got != want {
		t.Errorf("routes:\n%s\nwant:\n%s", got, want)
	}
	l := logs.String()
	if n := strings.Count(l, "peer is not on this host's L2 segment"); n != 1 {
		t.Errorf("L2 warning logged %d times:\n%s", n, l)
	}
	if !strings.Contains(l, "use the vxlan backend (with DirectRouting") || !strings.Contains(l, "peer_ip=192.168.60.14") {
		t.Errorf("L2 warning lacks the fix or the peer:\n%s", l)
	}
	// A peer leaves: its route goes; a route removed by hand comes back.
	delete(k.Routes, netip.MustParsePrefix("10.244.3.0/24"))
	ch, err := b.Reconcile(ctx, peers[1:])
	if err != nil {
		t.Fatal(err)
	}
	if ch != (dataplane.Changes{RoutesSet: 1, RoutesDeleted: 1}) {
		t.Errorf("changes %+v", ch)
	}
	if got := routes(k); got != "ip route 10.244.3.0/24 via 192.168.50.13 dev eth0 proto 98" {
		t.Errorf("after leave + hand delete:\n%s", got)
	}
}

func TestDesiredDualStack(t *testing.T) {
	cfg, _, err := subnet.ParseConfig([]byte(`{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"host-gw"}}`))
	if err != nil {
		t.Fatal(err)
	}
	p := lease("10.244.2.0/24", "192.168.50.12", TypeName)
	p.IPv6Subnet = netip.MustParsePrefix("fd00:10:244:2::/64")
	p.Attrs.PublicIPv6 = netip.MustParseAddr("fd00:60::12") // IPv6 behind a router
	q := lease("10.244.3.0/24", "192.168.50.13", TypeName)
	q.IPv6Subnet = netip.MustParsePrefix("fd00:10:244:3::/64")
	q.Attrs.PublicIPv6 = netip.MustParseAddr("fd00:50::13")
	nets := dataplane.Nets{netip.MustParsePrefix("192.168.50.0/24"), netip.MustParsePrefix("fd00:50::/64")}
	got, skips := Desired(cfg, &backend.ExternalInterface{Name: "eth0", Index: 2}, []subnet.Lease{p, q}, nets)
	want := strings.Join([]string{
		"ip route 10.244.2.0/24 via 192.168.50.12 dev #2 proto 98",
		"ip route 10.244.3.0/24 via 192.168.50.13 dev #2 proto 98",
		"ip route fd00:10:244:3::/64 via fd00:50::13 dev #2 proto 98",
	}, "\n")
	if got.String() != want {
		t.Errorf("state:\n%s\nwant:\n%s", got, want)
	}
	if len(skips) != 1 || skips[0].Aspect != "v6" || skips[0].Peer.Key() != p.Key() {
		t.Errorf("skips %+v, want the IPv6 half of %s", skips, p)
	}
}

func TestOptions(t *testing.T) {
	if _, err := parseOptions([]byte(`{"Type":"host-gw"}`)); err != nil {
		t.Fatal(err)
	}
	// Unknown keys are ignored (OptionWarnings reports them).
	if o, err := parseOptions([]byte(`{"Type":"host-gw","DirectRouting":true}`)); err != nil || o != (Options{Type: TypeName}) {
		t.Fatalf("got %+v %v", o, err)
	}
}
