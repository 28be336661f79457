package dataplane

import (
	"net/netip"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/flanneld-go/flannel/internal/netnstest"
)

func TestMain(m *testing.M) { netnstest.Main(m) }

func ip(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func sh(t *testing.T, cmd string) string {
	t.Helper()
	out, err := exec.Command("sh", "-c", cmd).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", cmd, err, out)
	}
	return string(out)
}

// nhid matches the nexthop object a route names in `ip route` output.
var nhid = regexp.MustCompile(`nhid [0-9]+ `)

// contains checks that out has each of want, ignoring the nexthop ids of
// routes.
func contains(t *testing.T, what, out string, want ...string) {
	t.Helper()
	out = nhid.ReplaceAllString(out, "")
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("%s lacks %q:\n%s", what, w, out)
		}
	}
}

// TestNetlinkApply runs the reconciler against the real kernel, in a
// private network namespace: a veth as the underlay and a VXLAN device.
func TestNetlinkApply(t *testing.T) {
	netnstest.Require(t)
	sh(t, "ip link add ul0 type veth peer name ul0p && ip addr add 192.168.50.11/24 dev ul0 && ip addr add fd00:50::11/64 dev ul0 nodad"+
		" && ip link set ul0 up && ip link set ul0p up"+
		" && ip link add vx0 type vxlan id 5 dstport 4789 local 192.168.50.11 dev ul0 nolearning && ip link set vx0 up")
	t.Cleanup(func() { exec.Command("sh", "-c", "ip link del vx0; ip link del ul0").Run() })
	k := NewNetlink(nil)
	ul, err := k.LinkByName("ul0")
	if err != nil {
		t.Fatal(err)
	}
	vx, err := k.LinkByName("vx0")
	if err != nil || vx.Type != "vxlan" || !vx.Up {
		t.Fatalf("LinkByName(vx0) = %+v, %v", vx, err)
	}
	want := merge(t,
		State{Addrs: []Addr{{vx.Index, pfx("10.244.3.0/32")}}},
		tunnel(vx.Index, "10.244.2.0/24", "192.168.60.12", "0a:00:00:00:00:02"),
		direct(ul.Index, "10.244.4.0/24", "192.168.50.14"),
		State{Routes: []Route{{Dst: pfx("fd00:10:244:4::/64"), Gw: ip4("fd00:50::14"), LinkIndex: ul.Index, Proto: Proto}}})
	links := []int{vx.Index}
	if ch, err := Apply(k, links, want); err != nil || ch != (Changes{RoutesSet: 3, NeighsSet: 1, FDBsSet: 1, AddrsAdded: 1}) {
		t.Fatalf("first apply: %+v %v", ch, err)
	}
	check := func(when string) {
		t.Helper()
		contains(t, when+": ip route", ip(t, "route", "show", "proto", "98"),
			"10.244.2.0/24 via 10.244.2.0 dev vx0 onlink", "10.244.4.0/24 via 192.168.50.14 dev ul0")
		contains(t, when+": ip -6 route", ip(t, "-6", "route", "show", "proto", "98"), "fd00:10:244:4::/64 via fd00:50::14 dev ul0")
		contains(t, when+": ip neigh", ip(t, "neigh", "show", "dev", "vx0"), "10.244.2.0 lladdr 0a:00:00:00:00:02 PERMANENT")
		contains(t, when+": bridge fdb", sh(t, "bridge fdb show dev vx0"), "0a:00:00:00:00:02 dst 192.168.60.12 self permanent")
		contains(t, when+": ip addr", ip(t, "addr", "show", "dev", "vx0"), "inet 10.244.3.0/32")
	}
	check("first apply")
	// Read back exactly: the second apply is a no-op.
	if ch, err := Apply(k, links, want); err != nil || ch.Any() {
		t.Fatalf("second apply: %+v %v", ch, err)
	}
	// Two remotes under one MAC (the kernel keeps several only for the
	// all-zeros flood entry): the one not wanted goes, the wanted stays.
	sh(t, "bridge fdb append 00:00:00:00:00:00 dev vx0 dst 192.168.60.97 && bridge fdb append 00:00:00:00:00:00 dev vx0 dst 192.168.60.98")
	flood := merge(t, want, State{FDBs: []FDB{{vx.Index, MAC{}, ip4("192.168.60.98")}}})
	if ch, err := Apply(k, links, flood); err != nil || ch != (Changes{FDBsDeleted: 1}) {
		t.Fatalf("two remotes: %+v %v", ch, err)
	}
	if out := sh(t, "bridge fdb show dev vx0"); strings.Contains(out, "192.168.60.97") || !strings.Contains(out, "dst 192.168.60.98") {
		t.Errorf("after removing the stray remote:\n%s", out)
	}
	if ch, err := Apply(k, links, want); err != nil || ch != (Changes{FDBsDeleted: 1}) {
		t.Fatalf("flood entry not wanted any more: %+v %v", ch, err)
	}
	// Hand deletions and a hand change are repaired.
	sh(t, "ip route del 10.244.2.0/24 && ip neigh del 10.244.2.0 dev vx0 && bridge fdb del 0a:00:00:00:00:02 dev vx0 dst 192.168.60.12"+
		" && ip addr del 10.244.3.0/32 dev vx0 && ip route replace 10.244.4.0/24 via 192.168.50.99 dev ul0")
	if ch, err := Apply(k, links, want); err != nil || ch != (Changes{RoutesSet: 2, NeighsSet: 1, FDBsSet: 1, AddrsAdded: 1}) {
		t.Fatalf("repair: %+v %v", ch, err)
	}
	check("after hand deletion")
	// Everything goes when nobody wants it; others' routes stay.
	if ch, err := Apply(k, links, State{}); err != nil || ch != (Changes{RoutesDeleted: 3, NeighsDeleted: 1, FDBsDeleted: 1, AddrsDeleted: 1}) {
		t.Fatalf("empty: %+v %v", ch, err)
	}
	if out := sh(t, "ip route show proto 98; ip -6 route show proto 98; ip neigh show dev vx0 nud permanent; bridge fdb show dev vx0 | grep dst || true"); strings.TrimSpace(out) != "" {
		t.Errorf("left behind:\n%s", out)
	}
	contains(t, "ip route", ip(t, "route"), "192.168.50.0/24 dev ul0 proto kernel")
	// Deleting what is already gone is not an error.
	if err := k.RouteDelete(Route{Dst: pfx("10.99.0.0/24"), Gw: ip4("192.168.50.12"), LinkIndex: ul.Index, Proto: Proto}); err != nil {
		t.Errorf("delete of a missing route: %v", err)
	}
	if err := k.NeighDelete(Neigh{vx.Index, ip4("10.244.9.0"), mac("0a:00:00:00:00:09")}); err != nil {
		t.Errorf("delete of a missing neighbour: %v", err)
	}
	if err := k.AddrDelete(Addr{vx.Index, pfx("10.244.9.0/32")}); err != nil {
		t.Errorf("delete of a missing address: %v", err)
	}
	// The on-link facts of the underlay.
	nets, err := LinkNets(k, ul.Index)
	if err != nil {
		t.Fatal(err)
	}
	for a, want := range map[string]bool{"192.168.50.200": true, "192.168.60.1": false, "fd00:50::99": true, "fd00:60::1": false} {
		if got := nets.Contains(netip.MustParseAddr(a)); got != want {
			t.Errorf("LinkNets(ul0).Contains(%s) = %v, want %v (%v)", a, got, want, nets)
		}
	}
	if _, err := k.LinkByName("nosuch0"); !IsNotFound(err) {
		t.Errorf("LinkByName of a missing device: %v, want a not-found error", err)
	}
	if _, err := LinkNets(k, ul.Index+1000); err == nil {
		t.Error("LinkNets of a missing link: no error")
	}
}

// An IPv6 host-gw route replaced by a vxlan one whose onlink gateway lies
// in the route's own subnet: the kernel refuses the plain replace
// ("device mismatch", the old route through another device covers the
// gateway); RouteReplace still makes the new route the only one.
func TestNetlinkRouteReplaceIPv6Onlink(t *testing.T) {
	netnstest.Require(t)
	sh(t, "ip link add ul6 type veth peer name ul6p && ip addr add fd00:50::11/64 dev ul6 nodad && ip link set ul6 up && ip link set ul6p up"+
		" && ip link add vx6 type vxlan id 6 dstport 4790 local fd00:50::11 dev ul6 nolearning && ip link set vx6 up")
	t.Cleanup(func() { exec.Command("sh", "-c", "ip link del vx6; ip link del ul6").Run() })
	k := NewNetlink(nil)
	ul, _ := k.LinkByName("ul6")
	vx, _ := k.LinkByName("vx6")
	dst := pfx("fd00:10:244:3b::/64")
	if err := k.RouteReplace(Route{Dst: dst, Gw: netip.MustParseAddr("fd00:50::12"), LinkIndex: ul.Index, Proto: Proto}); err != nil {
		t.Fatal(err)
	}
	want := Route{Dst: dst, Gw: netip.MustParseAddr("fd00:10:244:3b::"), LinkIndex: vx.Index, OnLink: true, Proto: Proto}
	if err := k.RouteReplace(want); err != nil {
		t.Fatalf("replacing the host-gw route with the vxlan one: %v", err)
	}
	out := ip(t, "-6", "route", "show", dst.String())
	if strings.Count(out, "\n") != 1 || !strings.Contains(out, "via fd00:10:244:3b:: dev vx6") || !strings.Contains(out, "onlink") {
		t.Errorf("routes to %s:\n%s", dst, out)
	}
}
