package dataplane

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func r(dst, gw string, link int) Route {
	rt := Route{Dst: netip.MustParsePrefix(dst), LinkIndex: link, Proto: Proto}
	if gw != "" {
		rt.Gw = netip.MustParseAddr(gw)
	}
	return rt
}

func TestSyncRoutesGolden(t *testing.T) {
	k := NewFakeKernel()
	// Someone else's routes: never touched.
	k.Routes[netip.MustParsePrefix("0.0.0.0/0")] = Route{Dst: netip.MustParsePrefix("0.0.0.0/0"), Gw: netip.MustParseAddr("192.168.50.1"), LinkIndex: 2, Proto: 3}
	k.Routes[netip.MustParsePrefix("192.168.50.0/24")] = Route{Dst: netip.MustParsePrefix("192.168.50.0/24"), LinkIndex: 2, Proto: 2}
	// Ours, of a departed peer.
	k.Routes[netip.MustParsePrefix("10.244.9.0/24")] = r("10.244.9.0/24", "192.168.50.19", 2)
	// Changed by hand: wrong gateway, not our proto.
	k.Routes[netip.MustParsePrefix("10.244.2.0/24")] = Route{Dst: netip.MustParsePrefix("10.244.2.0/24"), Gw: netip.MustParseAddr("192.168.50.99"), LinkIndex: 2, Proto: 3}

	desired := []Route{r("10.244.2.0/24", "192.168.50.12", 2), r("10.244.3.0/24", "192.168.50.13", 2), r("fd00:10:244:3::/64", "fd00:50::13", 2)}
	ch, err := SyncRoutes(k, desired)
	if err != nil {
		t.Fatal(err)
	}
	if ch.Replaced != 3 || ch.Deleted != 1 {
		t.Errorf("changes %+v, want 3 replaced 1 deleted", ch)
	}
	want := strings.Join([]string{
		"0.0.0.0/0 via 192.168.50.1 dev #2 proto 3",
		"10.244.2.0/24 via 192.168.50.12 dev #2 proto 98",
		"10.244.3.0/24 via 192.168.50.13 dev #2 proto 98",
		"192.168.50.0/24 dev #2 proto 2",
		"fd00:10:244:3::/64 via fd00:50::13 dev #2 proto 98",
	}, "\n")
	if got := k.Dump(); got != want {
		t.Errorf("kernel state:\n%s\nwant:\n%s", got, want)
	}
	// In the desired state a sync changes nothing.
	k.Calls = 0
	ch, err = SyncRoutes(k, desired)
	if err != nil || k.Calls != 0 || ch != (RouteChanges{}) {
		t.Errorf("second sync made %d calls (%+v, %v)", k.Calls, ch, err)
	}
}

func TestSyncRoutesAddsBeforeDeletesAndCollectsErrors(t *testing.T) {
	k := NewFakeKernel()
	k.Routes[netip.MustParsePrefix("10.244.9.0/24")] = r("10.244.9.0/24", "192.168.50.19", 2)
	k.Fail[netip.MustParsePrefix("10.244.2.0/24")] = errors.New("boom")
	_, err := SyncRoutes(k, []Route{r("10.244.2.0/24", "192.168.50.12", 2), r("10.244.3.0/24", "192.168.50.13", 2)})
	if err == nil || !strings.Contains(err.Error(), "ip route replace 10.244.2.0/24 via 192.168.50.12 dev #2 proto 98: boom") {
		t.Fatalf("error %v", err)
	}
	// One failure does not stop the rest.
	if _, ok := k.Routes[netip.MustParsePrefix("10.244.3.0/24")]; !ok {
		t.Error("route after the failing one not installed")
	}
	if _, ok := k.Routes[netip.MustParsePrefix("10.244.9.0/24")]; ok {
		t.Error("departed peer's route not deleted")
	}
}
