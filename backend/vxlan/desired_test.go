package vxlan

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/flanneld-go/flannel/backend"
	"github.com/flanneld-go/flannel/backend/dataplane"
	"github.com/flanneld-go/flannel/subnet"
)

func peer(v4, pub, mac string) subnet.Lease {
	return subnet.Lease{Subnet: netip.MustParsePrefix(v4), Attrs: subnet.LeaseAttrs{
		PublicIP: netip.MustParseAddr(pub), BackendType: TypeName, BackendData: []byte(`{"VNI":1,"VtepMAC":"` + mac + `"}`)}}
}

func dual(l subnet.Lease, v6, pub6, mac6 string) subnet.Lease {
	l.IPv6Subnet = netip.MustParsePrefix(v6)
	l.Attrs.PublicIPv6 = netip.MustParseAddr(pub6)
	l.Attrs.BackendV6Data = []byte(`{"VNI":1,"VtepMAC":"` + mac6 + `"}`)
	return l
}

var own = subnet.Lease{Subnet: netip.MustParsePrefix("10.244.3.0/24"), IPv6Subnet: netip.MustParsePrefix("fd00:10:244:3::/64")}

func lines(s ...string) string { return strings.Join(s, "\n") }

func TestDesiredGolden(t *testing.T) {
	h := Host{Ext: 2, Own: own, Dev4: 5}
	peers := []subnet.Lease{
		peer("10.244.2.0/24", "192.168.50.12", "0a:00:00:00:00:02"),
		peer("10.244.4.0/24", "192.168.60.14", "0a:00:00:00:00:04"),
		peer("10.244.6.0/24", "192.168.50.16", "not-a-mac"),
	}
	got, skips := Desired(Options{VNI: 1}, h, peers, nil)
	want := lines(
		"bridge fdb 0a:00:00:00:00:02 dev #5 dst 192.168.50.12 self permanent",
		"bridge fdb 0a:00:00:00:00:04 dev #5 dst 192.168.60.14 self permanent",
		"ip addr add 10.244.3.0/32 dev #5",
		"ip neigh 10.244.2.0 lladdr 0a:00:00:00:00:02 dev #5 nud permanent",
		"ip neigh 10.244.4.0 lladdr 0a:00:00:00:00:04 dev #5 nud permanent",
		"ip route 10.244.2.0/24 via 10.244.2.0 dev #5 onlink proto 98",
		"ip route 10.244.4.0/24 via 10.244.4.0 dev #5 onlink proto 98")
	if got.String() != want {
		t.Errorf("state:\n%s\nwant:\n%s", got, want)
	}
	if len(skips) != 1 || !strings.Contains(skips[0].Msg, "unusable vxlan data") || skips[0].Peer.Key() != peers[2].Key() {
		t.Errorf("skips: %+v", skips)
	}
}

// A peer of another VNI cannot be reached through our device: skipped,
// with both VNIs named.
func TestDesiredOtherVNI(t *testing.T) {
	h := Host{Ext: 2, Own: own, Dev4: 5}
	got, skips := Desired(Options{VNI: 4096}, h, []subnet.Lease{peer("10.244.2.0/24", "192.168.50.12", "0a:00:00:00:00:02")}, nil)
	if len(got.Routes)+len(got.Neighs)+len(got.FDBs) != 0 {
		t.Errorf("entries for a peer of VNI 1 on VNI 4096:\n%s", got)
	}
	if len(skips) != 1 || skips[0].Reason != "vni" || !strings.Contains(fmt.Sprint(skips[0].Attrs), "peer_vni 1 vni 4096") {
		t.Errorf("skips: %+v", skips)
	}
}

// The peer whose VtepMAC changed: the state names only the new MAC (the
// reconciler's ordering of the switch is tested in dataplane).
func TestDesiredVtepMACChange(t *testing.T) {
	h := Host{Ext: 2, Own: own, Dev4: 5}
	before, _ := Desired(Options{}, h, []subnet.Lease{peer("10.244.2.0/24", "192.168.50.12", "0a:00:00:00:00:02")}, nil)
	after, _ := Desired(Options{}, h, []subnet.Lease{peer("10.244.2.0/24", "192.168.50.12", "0a:00:00:00:00:22")}, nil)
	if strings.Contains(after.String(), "0a:00:00:00:00:02") || !strings.Contains(after.String(), "0a:00:00:00:00:22 dev #5 dst 192.168.50.12") {
		t.Errorf("after the MAC change:\n%s", after)
	}
	if before.Len() != after.Len() {
		t.Errorf("%d entries before, %d after", before.Len(), after.Len())
	}
}

func TestDesiredDirectRouting(t *testing.T) {
	h := Host{Ext: 2, Own: own, Dev4: 5}
	nets := dataplane.Nets{netip.MustParsePrefix("192.168.50.0/24")}
	peers := []subnet.Lease{peer("10.244.2.0/24", "192.168.50.12", "0a:00:00:00:00:02"), peer("10.244.4.0/24", "192.168.60.14", "0a:00:00:00:00:04")}
	got, _ := Desired(Options{DirectRouting: true}, h, peers, nets)
	want := lines(
		"bridge fdb 0a:00:00:00:00:04 dev #5 dst 192.168.60.14 self permanent",
		"ip addr add 10.244.3.0/32 dev #5",
		"ip neigh 10.244.4.0 lladdr 0a:00:00:00:00:04 dev #5 nud permanent",
		"ip route 10.244.2.0/24 via 192.168.50.12 dev #2 proto 98",
		"ip route 10.244.4.0/24 via 10.244.4.0 dev #5 onlink proto 98")
	if got.String() != want {
		t.Errorf("state:\n%s\nwant:\n%s", got, want)
	}
	// Without DirectRouting the same facts change nothing: both tunnelled.
	got, _ = Desired(Options{}, h, peers, nets)
	if strings.Contains(got.String(), "dev #2") {
		t.Errorf("direct route without DirectRouting:\n%s", got)
	}
}

func TestDesiredDualStack(t *testing.T) {
	h := Host{Ext: 2, Own: own, Dev4: 5, Dev6: 6}
	p := dual(peer("10.244.2.0/24", "192.168.50.12", "0a:00:00:00:00:02"), "fd00:10:244:2::/64", "fd00:50::12", "0a:00:00:00:06:02")
	q := peer("10.244.4.0/24", "192.168.50.14", "0a:00:00:00:00:04") // no IPv6 half
	got, skips := Desired(Options{}, h, []subnet.Lease{p, q}, nil)
	want := lines(
		"bridge fdb 0a:00:00:00:00:02 dev #5 dst 192.168.50.12 self permanent",
		"bridge fdb 0a:00:00:00:00:04 dev #5 dst 192.168.50.14 self permanent",
		"bridge fdb 0a:00:00:00:06:02 dev #6 dst fd00:50::12 self permanent",
		"ip addr add 10.244.3.0/32 dev #5",
		"ip addr add fd00:10:244:3::/128 dev #6",
		"ip neigh 10.244.2.0 lladdr 0a:00:00:00:00:02 dev #5 nud permanent",
		"ip neigh 10.244.4.0 lladdr 0a:00:00:00:00:04 dev #5 nud permanent",
		"ip neigh fd00:10:244:2:: lladdr 0a:00:00:00:06:02 dev #6 nud permanent",
		"ip route 10.244.2.0/24 via 10.244.2.0 dev #5 onlink proto 98",
		"ip route 10.244.4.0/24 via 10.244.4.0 dev #5 onlink proto 98",
		"ip route fd00:10:244:2::/64 via fd00:10:244:2:: dev #6 onlink proto 98")
	if got.String() != want {
		t.Errorf("state:\n%s\nwant:\n%s", got, want)
	}
	if len(skips) != 1 || skips[0].Aspect != "v6" || skips[0].Peer.Key() != q.Key() {
		t.Errorf("skips %+v", skips)
	}
}

// Through the fake kernel: a reconcile of the whole backend against a
// state where a peer moved from the tunnel onto our segment.
func TestApplyDesiredDirectRoutingMove(t *testing.T) {
	k := dataplane.NewFake()
	ext := k.AddLink(dataplane.Link{Name: "eth0"})
	dev := k.AddLink(dataplane.Link{Name: "flannel.1", Type: "vxlan"})
	h := Host{Ext: ext, Own: own, Dev4: dev}
	nets := dataplane.Nets{netip.MustParsePrefix("192.168.50.0/24")}
	o := Options{DirectRouting: true}
	for _, at := range []string{"192.168.60.12", "192.168.50.12", "192.168.60.12"} {
		want, _ := Desired(o, h, []subnet.Lease{peer("10.244.2.0/24", at, "0a:00:00:00:00:02")}, nets)
		if _, err := dataplane.Apply(k, h.links(), want); err != nil {
			t.Fatal(err)
		}
		if !k.State().Equal(want) {
			t.Errorf("peer at %s: kernel\n%s\nwant\n%s", at, k.Dump(), want)
		}
	}
}

// FuzzDesired: whatever a peer writes as its BackendData, Desired does not
// panic, and a peer either gets a complete, consistent set of entries (the
// MAC it published, on our device, to its address) or is skipped.
func FuzzDesired(f *testing.F) {
	f.Add([]byte(`{"VNI":1,"VtepMAC":"0a:00:00:00:00:02"}`))
	f.Add([]byte(`{"VNI":1,"VtepMAC":"0a:00:00:00:00:02:03:04"}`))
	f.Add([]byte(`{"VtepMAC":null}`))
	f.Add([]byte(`[]`))
	f.Add([]byte(``))
	h := Host{Ext: 2, Own: own, Dev4: 5}
	f.Fuzz(func(t *testing.T, data []byte) {
		p := peer("10.244.2.0/24", "192.168.50.12", "")
		p.Attrs.BackendData = data
		got, skips := Desired(Options{}, h, []subnet.Lease{p}, nil)
		switch {
		case len(skips) == 1 && len(got.Neighs)+len(got.FDBs)+len(got.Routes) == 0:
		case len(skips) == 0 && len(got.Neighs) == 1 && len(got.FDBs) == 1 && len(got.Routes) == 1:
			n, fdb, r := got.Neighs[0], got.FDBs[0], got.Routes[0]
			if n.MAC != fdb.MAC || n.LinkIndex != 5 || fdb.LinkIndex != 5 || r.LinkIndex != 5 ||
				fdb.Dst != p.Attrs.PublicIP || r.Dst != p.Subnet || n.IP != p.Subnet.Addr() {
				t.Fatalf("inconsistent entries for %q:\n%s", data, got)
			}
		default:
			t.Fatalf("BackendData %q: %d skips and\n%s", data, len(skips), got)
		}
	})
}

var _ backend.PerPeer = (*VXLAN)(nil)

// The engine's table holds PeerState per peer and the devices' addresses:
// their union must be Desired, skips included.
func TestPeerStateSumsToDesired(t *testing.T) {
	h := Host{Ext: 2, Own: own, Dev4: 5, Dev6: 6}
	peers := []subnet.Lease{
		dual(peer("10.244.2.0/24", "192.168.50.12", "0a:00:00:00:00:02"), "fd00:10:244:2::/64", "fd00:50::12", "0a:00:00:00:01:02"),
		peer("10.244.4.0/24", "192.168.60.14", "0a:00:00:00:00:04"), // no IPv6 half
		dual(peer("10.244.6.0/24", "192.168.50.16", "not-a-mac"), "fd00:10:244:6::/64", "fd00:60::16", "0a:00:00:00:01:06"),
	}
	onLink := dataplane.Nets{netip.MustParsePrefix("192.168.50.0/24")}
	o := Options{VNI: 1, DirectRouting: true}
	want, wantSkips := Desired(o, h, peers, onLink)
	parts := []dataplane.State{{Addrs: deviceAddrs(h)}}
	var skips []backend.Skip
	for _, p := range peers {
		s, sk := PeerState(o, h, p, onLink)
		parts = append(parts, s)
		skips = append(skips, sk...)
	}
	got, err := dataplane.Merge(parts...)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Equal(want) {
		t.Errorf("parts:\n%s\nDesired:\n%s", got, want)
	}
	if len(skips) != len(wantSkips) || len(skips) != 1 {
		t.Errorf("skips %+v, Desired's %+v", skips, wantSkips)
	}
}

// FuzzLeaseData: readLeaseData reads BackendData as encoding/json does,
// error or not.
func FuzzLeaseData(f *testing.F) {
	for _, v := range []string{`{"VNI":1,"VtepMAC":"0a:00:00:00:00:02"}`, `{"VNI":1.0}`, `{"vni":4096,"VtepMAC":null}`, `{"VNI":-3,"VNI":7}`, `[]`} {
		f.Add([]byte(v))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := readLeaseData(data)
		var want leaseData
		werr := json.Unmarshal(data, &want)
		if (err == nil) != (werr == nil) || err == nil && got != want || err != nil && err.Error() != werr.Error() {
			t.Fatalf("%q: readLeaseData %+v, %v; encoding/json %+v, %v", data, got, err, want, werr)
		}
	})
}
