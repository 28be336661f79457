package dataplane

import (
	"net/netip"
	"os/exec"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

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

// TestNetlinkSyncRoutes runs the reconciler against the real kernel, in a
// private network namespace with a veth as the underlay interface.
func TestNetlinkSyncRoutes(t *testing.T) {
	netnstest.Require(t)
	ip(t, "link", "add", "ul0", "type", "veth", "peer", "name", "ul0p") // no dummy module on every kernel
	t.Cleanup(func() { exec.Command("ip", "link", "del", "ul0").Run() })
	ip(t, "addr", "add", "192.168.50.11/24", "dev", "ul0")
	ip(t, "addr", "add", "fd00:50::11/64", "dev", "ul0", "nodad")
	ip(t, "link", "set", "ul0", "up")
	ip(t, "link", "set", "ul0p", "up")
	link, err := netlink.LinkByName("ul0")
	if err != nil {
		t.Fatal(err)
	}
	idx := link.Attrs().Index
	k := NewNetlink(nil)
	desired := []Route{r("10.244.2.0/24", "192.168.50.12", idx), r("10.244.3.0/24", "192.168.50.13", idx), r("fd00:10:244:3::/64", "fd00:50::13", idx)}
	if _, err := SyncRoutes(k, desired); err != nil {
		t.Fatal(err)
	}
	out := ip(t, "route", "show", "proto", "98")
	for _, want := range []string{"10.244.2.0/24 via 192.168.50.12 dev ul0", "10.244.3.0/24 via 192.168.50.13 dev ul0"} {
		if !strings.Contains(out, want) {
			t.Errorf("ip route lacks %q:\n%s", want, out)
		}
	}
	if out6 := ip(t, "-6", "route", "show", "proto", "98"); !strings.Contains(out6, "fd00:10:244:3::/64 via fd00:50::13 dev ul0") {
		t.Errorf("ip -6 route: %s", out6)
	}
	// Second sync is a no-op; hand deletion and hand change are repaired;
	// a departed peer's route goes.
	if ch, err := SyncRoutes(k, desired); err != nil || ch != (RouteChanges{}) {
		t.Fatalf("second sync: %+v %v", ch, err)
	}
	ip(t, "route", "del", "10.244.2.0/24")
	ip(t, "route", "replace", "10.244.3.0/24", "via", "192.168.50.99", "dev", "ul0")
	ch, err := SyncRoutes(k, desired[:2])
	if err != nil || ch.Replaced != 2 || ch.Deleted != 1 {
		t.Fatalf("repair sync: %+v %v", ch, err)
	}
	out = ip(t, "route", "show")
	if !strings.Contains(out, "10.244.2.0/24 via 192.168.50.12") || !strings.Contains(out, "10.244.3.0/24 via 192.168.50.13") {
		t.Errorf("not repaired:\n%s", out)
	}
	if out6 := ip(t, "-6", "route", "show", "proto", "98"); strings.TrimSpace(out6) != "" {
		t.Errorf("departed v6 route remains: %s", out6)
	}
	// Deleting a route that is already gone is not an error.
	if err := k.RouteDelete(r("10.99.0.0/24", "192.168.50.12", idx)); err != nil {
		t.Errorf("delete of a missing route: %v", err)
	}
	// OnLink sees the underlay networks of the link.
	for a, want := range map[string]bool{"192.168.50.200": true, "192.168.60.1": false, "fd00:50::99": true, "fd00:60::1": false} {
		got, err := k.OnLink(idx, netip.MustParseAddr(a))
		if err != nil || got != want {
			t.Errorf("OnLink(%s) = %v %v, want %v", a, got, err, want)
		}
	}
}
