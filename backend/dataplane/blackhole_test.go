package dataplane

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/flanneld-go/flannel/internal/netnstest"
)

// TestApplyBlackholes: the blackhole step keeps exactly the wanted
// blackholes of ours, and neither it nor a backend's Apply touches the
// other's routes.
func TestApplyBlackholes(t *testing.T) {
	b := newBed()
	own := BlackholeRoutes(pfx("10.244.3.0/24"), pfx("fd00:10:244:3::/64"))
	peer := direct(b.ext, "10.244.4.0/24", "192.168.50.14")
	for _, step := range []struct {
		name  string
		setup func()
		black []Route // wanted blackholes; nil: none
		want  Changes
		dump  []string // every blackhole line of the dump
	}{
		{name: "added", black: own, want: Changes{RoutesSet: 2},
			dump: []string{"ip route blackhole 10.244.3.0/24 proto 98 metric 65535", "ip route blackhole fd00:10:244:3::/64 proto 98 metric 65535"}},
		{name: "unchanged", black: own, dump: []string{"ip route blackhole 10.244.3.0/24 proto 98 metric 65535", "ip route blackhole fd00:10:244:3::/64 proto 98 metric 65535"}},
		{name: "deleted by hand comes back", setup: func() { b.k.RouteDelete(own[0]) }, black: own, want: Changes{RoutesSet: 1},
			dump: []string{"ip route blackhole 10.244.3.0/24 proto 98 metric 65535", "ip route blackhole fd00:10:244:3::/64 proto 98 metric 65535"}},
		{name: "another subnet, and a stray metric of ours, go; others' stay", setup: func() {
			b.k.RouteReplace(Route{Dst: pfx("10.244.9.0/24"), Type: Blackhole, Proto: 3})
			b.k.RouteReplace(Route{Dst: pfx("10.244.3.0/24"), Type: Blackhole, Proto: Proto, Metric: 7})
		}, black: own[:1], want: Changes{RoutesDeleted: 2},
			dump: []string{"ip route blackhole 10.244.3.0/24 proto 98 metric 65535", "ip route blackhole 10.244.9.0/24 proto 3"}},
		{name: "flag off removes ours", black: nil, want: Changes{RoutesDeleted: 1}, dump: []string{"ip route blackhole 10.244.9.0/24 proto 3"}},
	} {
		t.Run(step.name, func(t *testing.T) {
			if step.setup != nil {
				step.setup()
			}
			// A backend's reconcile first: it must leave blackholes alone.
			if ch := b.apply(t, peer); ch.RoutesDeleted != 0 {
				t.Fatalf("the backend's Apply deleted routes: %+v", ch)
			}
			ch, err := ApplyBlackholes(b.k, step.black)
			if err != nil || ch != step.want {
				t.Fatalf("ApplyBlackholes: %+v %v, want %+v", ch, err, step.want)
			}
			var got []string
			for _, l := range strings.Split(b.k.Dump(), "\n") {
				if strings.Contains(l, "blackhole") {
					got = append(got, l)
				}
			}
			if strings.Join(got, "\n") != strings.Join(step.dump, "\n") {
				t.Errorf("blackholes:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(step.dump, "\n"))
			}
			if !strings.Contains(b.k.Dump(), "ip route 10.244.4.0/24 via 192.168.50.14 dev eth0 proto 98") {
				t.Errorf("the backend's route went:\n%s", b.k.Dump())
			}
		})
	}
}

// TestNetlinkBlackhole: in a private namespace, our blackhole for a
// subnet sits beside the bridge's connected route without shadowing it
// (pods stay reachable), takes over only when the bridge is down, reads
// back exactly (a second pass is a no-op), and goes when not wanted.
func TestNetlinkBlackhole(t *testing.T) {
	netnstest.Require(t)
	sh(t, "ip link add cni0 type bridge && ip addr add 10.244.3.1/24 dev cni0 && ip addr add fd00:10:244:3::1/64 dev cni0 nodad"+
		" && ip link add pod0 type veth peer name pod0p && ip link set pod0 master cni0 && ip link set pod0 up && ip link set pod0p up && ip link set cni0 up"+
		" && ip link add ul0 type veth peer name ul0p && ip addr add 192.168.50.11/24 dev ul0 && ip link set ul0 up && ip link set ul0p up"+
		" && ip route add default via 192.168.50.1")
	t.Cleanup(func() { exec.Command("sh", "-c", "ip link del cni0; ip link del pod0; ip link del ul0").Run() })
	k := NewNetlink(nil)
	own := BlackholeRoutes(pfx("10.244.3.0/24"), pfx("fd00:10:244:3::/64"))
	if ch, err := ApplyBlackholes(k, own); err != nil || ch != (Changes{RoutesSet: 2}) {
		t.Fatalf("first pass: %+v %v", ch, err)
	}
	if ch, err := ApplyBlackholes(k, own); err != nil || ch.Any() {
		t.Fatalf("second pass (read back): %+v %v", ch, err)
	}
	contains(t, "ip route", ip(t, "route", "show", "proto", "98"), "blackhole 10.244.3.0/24 metric 65535")
	contains(t, "ip -6 route", ip(t, "-6", "route", "show", "proto", "98"), "blackhole fd00:10:244:3::/64")
	contains(t, "a pod address", ip(t, "route", "get", "10.244.3.7"), "dev cni0")
	contains(t, "a pod address (IPv6)", ip(t, "-6", "route", "get", "fd00:10:244:3::7"), "dev cni0")
	// The backend's reconcile leaves the blackholes alone.
	if ch, err := Apply(k, nil, State{}); err != nil || ch.Any() {
		t.Fatalf("a backend's empty Apply: %+v %v", ch, err)
	}
	// Without the bridge, the subnet's traffic is dropped here instead of
	// following the default route.
	sh(t, "ip link set cni0 down")
	if out, err := exec.Command("ip", "route", "get", "10.244.3.7").CombinedOutput(); err == nil && !strings.Contains(string(out), "blackhole") {
		t.Errorf("with cni0 down, 10.244.3.7 is routed: %s", out)
	}
	if ch, err := ApplyBlackholes(k, nil); err != nil || ch != (Changes{RoutesDeleted: 2}) {
		t.Fatalf("not wanted: %+v %v", ch, err)
	}
	if out := sh(t, "ip route show type blackhole; ip -6 route show type blackhole"); strings.TrimSpace(out) != "" {
		t.Errorf("left behind:\n%s", out)
	}
}
