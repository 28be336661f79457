package dataplane

import (
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/flanneld-go/flannel/internal/netnstest"
)

// freshNetlink is a Netlink with a table of its own: a daemon that has
// just started. Tests that use it clean up the kernel's nexthops of ours
// (deleting their devices does), since in a process every Netlink shares
// one table.
func freshNetlink(tbl *nexthopTable) *Netlink {
	if tbl == nil {
		tbl = newNexthopTable()
	}
	return &Netlink{h: &netlink.Handle{}, nh: tbl}
}

// nhBed is an underlay veth (ul0, with 192.168.50.11/24 and fd00:50::11/64)
// and a VXLAN device (vx0) in the test's namespace.
type nhBed struct{ ul, vx int }

func newNHBed(t *testing.T) nhBed {
	t.Helper()
	netnstest.Require(t)
	sh(t, "ip link add ul0 type veth peer name ul0p && ip addr add 192.168.50.11/24 dev ul0 && ip addr add fd00:50::11/64 dev ul0 nodad"+
		" && ip link set ul0 up && ip link set ul0p up"+
		" && ip link add vx0 type vxlan id 5 dstport 4789 local 192.168.50.11 dev ul0 nolearning && ip link set vx0 up")
	t.Cleanup(func() { exec.Command("sh", "-c", "ip link del vx0; ip link del ul0; ip nexthop flush").Run() })
	k := NewNetlink(nil)
	ul, err := k.LinkByName("ul0")
	if err != nil {
		t.Fatal(err)
	}
	vx, err := k.LinkByName("vx0")
	if err != nil {
		t.Fatal(err)
	}
	return nhBed{ul.Index, vx.Index}
}

func (b nhBed) via(dst, gw string) Route {
	return Route{Dst: pfx(dst), Gw: ip4(gw), LinkIndex: b.ul, Proto: Proto}
}

// routes are three routes of the kinds the backends make: two host-gw
// routes sharing a gateway, a vxlan one (onlink) and an IPv6 one.
func (b nhBed) routes() []Route {
	return []Route{b.via("10.244.4.0/24", "192.168.50.14"), b.via("10.244.5.0/24", "192.168.50.14"),
		{Dst: pfx("10.244.2.0/24"), Gw: ip4("10.244.2.0"), LinkIndex: b.vx, OnLink: true, Proto: Proto},
		b.via("fd00:10:244:4::/64", "fd00:50::14")}
}

// ours are the unicast routes of ours k lists, sorted.
func ours(t *testing.T, k *Netlink) []Route {
	t.Helper()
	all, err := k.RouteList()
	if err != nil {
		t.Fatal(err)
	}
	all = slices.DeleteFunc(all, func(r Route) bool { return r.Proto != Proto || r.Type != Unicast })
	return State{Routes: all}.Sorted().Routes
}

func sameRoutes(t *testing.T, what string, got, want []Route) {
	t.Helper()
	if want = (State{Routes: want}).Sorted().Routes; !slices.Equal(got, want) {
		t.Errorf("%s: RouteList =\n%v\nwant\n%v", what, got, want)
	}
}

// nexthops are the lines of `ip nexthop show protocol 98`.
func nexthops(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, l := range strings.Split(ip(t, "nexthop", "show", "protocol", "98"), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

func replaceAll(t *testing.T, k *Netlink, rs ...Route) {
	t.Helper()
	for _, r := range rs {
		if err := k.RouteReplace(r); err != nil {
			t.Fatalf("RouteReplace(%v): %v", r, err)
		}
	}
}

// TestNetlinkNexthops: routes with a gateway go through nexthop objects
// of ours, shared per gateway; they read back exactly whatever the kernel
// dumps; a nexthop goes with its last route.
func TestNetlinkNexthops(t *testing.T) {
	b := newNHBed(t)
	k := freshNetlink(nil)
	want := b.routes()
	replaceAll(t, k, want...)
	sameRoutes(t, "after setting", ours(t, k), want)
	if nh := nexthops(t); len(nh) != 3 {
		t.Errorf("ip nexthop show protocol 98: %d nexthops, want 3:\n%s", len(nh), strings.Join(nh, "\n"))
	}
	contains(t, "ip nexthop", ip(t, "nexthop", "show"), "via 192.168.50.14 dev ul0 scope link proto 98",
		"via 10.244.2.0 dev vx0 scope link proto 98 onlink", "via fd00:50::14 dev ul0 scope link proto 98")
	routes := ip(t, "route", "show", "proto", "98")
	contains(t, "ip route", routes, "10.244.2.0/24 via 10.244.2.0 dev vx0 onlink", "10.244.4.0/24 via 192.168.50.14 dev ul0")
	if ids := nhid.FindAllString(routes, -1); len(ids) != 3 || ids[1] != ids[2] {
		t.Errorf("the two routes via 192.168.50.14 do not share a nexthop:\n%s", routes)
	}
	if ch, err := Apply(k, nil, State{Routes: want}); err != nil || ch.Any() {
		t.Errorf("a second apply: %+v %v", ch, err)
	}
	// Without the compatibility attributes the kernel dumps only the id.
	sh(t, "sysctl -qw net.ipv4.nexthop_compat_mode=0")
	sameRoutes(t, "nexthop_compat_mode=0", ours(t, k), want)
	sh(t, "sysctl -qw net.ipv4.nexthop_compat_mode=1")

	// A peer's gateway changes: the old nexthop goes when its last route has moved.
	moved := []Route{b.via("10.244.4.0/24", "192.168.50.15"), b.via("fd00:10:244:4::/64", "fd00:50::15")}
	replaceAll(t, k, moved...)
	if out := ip(t, "nexthop", "show"); !strings.Contains(out, "192.168.50.14") || strings.Contains(out, "fd00:50::14") {
		t.Errorf("after moving one of two routes via 192.168.50.14 and the IPv6 one:\n%s", out)
	}
	replaceAll(t, k, b.via("10.244.5.0/24", "192.168.50.15"))
	if out := ip(t, "nexthop", "show"); strings.Contains(out, "192.168.50.14") || len(nexthops(t)) != 3 {
		t.Errorf("after moving both routes off 192.168.50.14:\n%s", out)
	}
	want = append(moved, b.via("10.244.5.0/24", "192.168.50.15"), want[2])
	sameRoutes(t, "after the moves", ours(t, k), want)

	// The kernel deletes the nexthops of a device that goes down, and the
	// routes with them; the reconciler puts both back.
	sh(t, "ip link set vx0 down && ip link set vx0 up")
	if ch, err := Apply(k, nil, State{Routes: want}); err != nil || ch != (Changes{RoutesSet: 1}) {
		t.Errorf("after vx0 went down and up: %+v %v", ch, err)
	}
	sameRoutes(t, "after vx0 went down and up", ours(t, k), want)

	deleteEach(t, k, want, 3, 2, 1, 0)
}

// deleteEach deletes the routes one by one, checking how many nexthops of
// ours are left after each, then that nothing of ours is.
func deleteEach(t *testing.T, k *Netlink, rs []Route, left ...int) {
	t.Helper()
	for i, r := range rs {
		if err := k.RouteDelete(r); err != nil {
			t.Fatalf("RouteDelete(%v): %v", r, err)
		}
		if n := len(nexthops(t)); n != left[i] {
			t.Errorf("after deleting %v: %d nexthops left, want %d: %s", r, n, left[i], ip(t, "nexthop", "show"))
		}
	}
	if out := sh(t, "ip route show proto 98; ip -6 route show proto 98"); strings.TrimSpace(out) != "" {
		t.Errorf("left behind:\n%s", out)
	}
	if err := k.RouteDelete(rs[0]); err != nil {
		t.Errorf("deleting a route that is gone: %v", err)
	}
}

// TestNetlinkNexthopAdopt: a restarted daemon adopts its nexthops (same
// ids, no new ones), deletes those of ours no route uses, and leaves
// others' alone; RemoveNexthops then removes every nexthop marked 98.
func TestNetlinkNexthopAdopt(t *testing.T) {
	b := newNHBed(t)
	want := b.routes()
	replaceAll(t, freshNetlink(nil), want...)
	before := nexthops(t)
	// A leak of ours (a crash between the nexthop and its route), one of
	// someone else, and one marked 98 outside our range.
	sh(t, "ip nexthop add id 0x0f1a1000 via 192.168.50.77 dev ul0 proto 98 && ip nexthop add id 7 via 192.168.50.77 dev ul0"+
		" && ip nexthop add id 8 via 192.168.50.78 dev ul0 proto 98")

	k := freshNetlink(nil)
	sameRoutes(t, "after a restart", ours(t, k), want)
	if after := nexthops(t); len(after) == 0 || !strings.HasPrefix(after[0], "id 8 ") || !slices.Equal(after[1:], before) {
		t.Errorf("nexthops of ours after a restart:\n%s\nwant those before:\n%s", strings.Join(after, "\n"), strings.Join(before, "\n"))
	}
	if ch, err := Apply(k, nil, State{Routes: want}); err != nil || ch.Any() {
		t.Errorf("the first apply after a restart: %+v %v", ch, err)
	}
	// A new route via a known gateway shares its nexthop; a new gateway
	// gets an id that is not taken.
	replaceAll(t, k, b.via("10.244.6.0/24", "192.168.50.14"), b.via("10.244.7.0/24", "192.168.50.16"))
	if got := len(nexthops(t)); got != len(before)+2 { // id 8, and the one for 192.168.50.16
		t.Errorf("%d nexthops marked 98 after two more routes, want %d:\n%s", got, len(before)+2, ip(t, "nexthop", "show"))
	}
	sameRoutes(t, "after two more", ours(t, k), append(want, b.via("10.244.6.0/24", "192.168.50.14"), b.via("10.244.7.0/24", "192.168.50.16")))

	removed, err := k.RemoveNexthops()
	if err != nil || len(removed) != len(before)+2 || removed[0] != 8 {
		t.Errorf("RemoveNexthops = %x, %v; want 8 and %d ids of ours", removed, err, len(before)+1)
	}
	if out := sh(t, "ip nexthop show protocol 98; ip route show proto 98; ip -6 route show proto 98"); strings.TrimSpace(out) != "" {
		t.Errorf("left behind:\n%s", out)
	}
	contains(t, "someone else's nexthop", ip(t, "nexthop", "show"), "id 7 via 192.168.50.77 dev ul0")
	replaceAll(t, k, want[0]) // the table starts again from the kernel
	sameRoutes(t, "after RemoveNexthops", ours(t, k), want[:1])
}

// TestNetlinkNexthopFallback: a kernel that refuses the first nexthop gets
// plain routes, without another try per route.
func TestNetlinkNexthopFallback(t *testing.T) {
	for _, refusal := range []unix.Errno{unix.EOPNOTSUPP, unix.EINVAL} {
		t.Run(refusal.Error(), func(t *testing.T) {
			b := newNHBed(t)
			tbl := newNexthopTable()
			tries := 0
			tbl.add = func(uint32, nhKey, int) error { tries++; return refusal }
			k := freshNetlink(tbl)
			want := b.routes()
			replaceAll(t, k, want...)
			if tries != 1 || !tbl.off {
				t.Errorf("%d tries to make a nexthop (want 1), off = %v", tries, tbl.off)
			}
			if out := sh(t, "ip route show proto 98; ip nexthop show"); strings.Contains(out, "nhid") || strings.Contains(out, "id ") {
				t.Errorf("nexthops used:\n%s", out)
			}
			sameRoutes(t, "plain routes", ours(t, k), want)
			if ch, err := Apply(k, nil, State{}); err != nil || ch != (Changes{RoutesDeleted: len(want)}) {
				t.Errorf("deleting: %+v %v", ch, err)
			}
		})
	}
}

// TestNetlinkNexthopRefusedLater: a nexthop refused after the kernel took
// one is that route's problem: it goes plain, and the others still go
// through nexthops.
func TestNetlinkNexthopRefusedLater(t *testing.T) {
	b := newNHBed(t)
	tbl := newNexthopTable()
	tries := 0
	tbl.add = func(id uint32, k nhKey, flags int) error {
		if tries++; tries == 2 {
			return unix.EINVAL
		}
		return tbl.conn.nexthopAdd(id, k, flags)
	}
	k := freshNetlink(tbl)
	want := b.routes()
	replaceAll(t, k, want...) // the vxlan route is the second nexthop
	if tbl.off || len(nexthops(t)) != 2 {
		t.Errorf("off = %v, nexthops:\n%s", tbl.off, ip(t, "nexthop", "show"))
	}
	if out := ip(t, "route", "show", "10.244.2.0/24"); strings.Contains(out, "nhid") {
		t.Errorf("the refused route: %s", out)
	}
	sameRoutes(t, "mixed", ours(t, k), want)
	deleteEach(t, k, want, 2, 1, 1, 0)
}

// TestNetlinkNexthopShared: the Netlinks of a process share one table, as
// the kernel has one per namespace: two backends' routes via one gateway
// share its nexthop, and one deleting its route leaves the other's.
func TestNetlinkNexthopShared(t *testing.T) {
	b := newNHBed(t)
	k1, k2 := NewNetlink(nil), NewNetlink(nil)
	r1, r2 := b.via("10.244.4.0/24", "192.168.50.14"), b.via("10.244.5.0/24", "192.168.50.14")
	replaceAll(t, k1, r1)
	replaceAll(t, k2, r2)
	if n := len(nexthops(t)); n != 1 {
		t.Errorf("%d nexthops for one gateway:\n%s", n, ip(t, "nexthop", "show"))
	}
	if err := k2.RouteDelete(r2); err != nil {
		t.Fatal(err)
	}
	sameRoutes(t, "k1's route after k2 deleted its own", ours(t, k1), []Route{r1})
	deleteEach(t, k1, []Route{r1}, 0)
}
