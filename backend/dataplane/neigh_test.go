package dataplane

import (
	"net"
	"net/netip"
	"strings"
	"testing"
)

func mac(s string) net.HardwareAddr { m, _ := net.ParseMAC(s); return m }

func TestPlanL2GoldenAndOrder(t *testing.T) {
	k := NewFakeL2()
	// Current: peer .2 with an old MAC, a departed peer .9, and peer .3 right.
	k.Neighs[netip.MustParseAddr("10.244.2.0")] = Neigh{5, netip.MustParseAddr("10.244.2.0"), mac("02:00:00:00:00:02")}
	k.Neighs[netip.MustParseAddr("10.244.9.0")] = Neigh{5, netip.MustParseAddr("10.244.9.0"), mac("02:00:00:00:00:09")}
	k.Neighs[netip.MustParseAddr("10.244.3.0")] = Neigh{5, netip.MustParseAddr("10.244.3.0"), mac("02:00:00:00:00:03")}
	k.FDBs[fdbKey(5, mac("02:00:00:00:00:02"))] = FDB{5, mac("02:00:00:00:00:02"), netip.MustParseAddr("192.168.50.12")}
	k.FDBs[fdbKey(5, mac("02:00:00:00:00:09"))] = FDB{5, mac("02:00:00:00:00:09"), netip.MustParseAddr("192.168.50.19")}
	k.FDBs[fdbKey(5, mac("02:00:00:00:00:03"))] = FDB{5, mac("02:00:00:00:00:03"), netip.MustParseAddr("192.168.50.99")} // moved host
	neighs := []Neigh{
		{5, netip.MustParseAddr("10.244.2.0"), mac("02:00:00:00:00:22")}, // re-created device: new MAC
		{5, netip.MustParseAddr("10.244.3.0"), mac("02:00:00:00:00:03")},
	}
	fdbs := []FDB{
		{5, mac("02:00:00:00:00:22"), netip.MustParseAddr("192.168.50.12")},
		{5, mac("02:00:00:00:00:03"), netip.MustParseAddr("192.168.50.13")},
	}
	p, err := PlanL2(k, []int{5}, neighs, fdbs)
	if err != nil {
		t.Fatal(err)
	}
	var ch L2Changes
	if err := p.Add(&ch); err != nil {
		t.Fatal(err)
	}
	k.Calls = append(k.Calls, "-- routes --")
	if err := p.Delete(&ch); err != nil {
		t.Fatal(err)
	}
	want := strings.Join([]string{
		"fdb 02:00:00:00:00:03 dev #5 dst 192.168.50.13 self permanent",
		"fdb 02:00:00:00:00:22 dev #5 dst 192.168.50.12 self permanent",
		"neigh 10.244.2.0 lladdr 02:00:00:00:00:22 dev #5 permanent",
		"neigh 10.244.3.0 lladdr 02:00:00:00:00:03 dev #5 permanent",
	}, "\n")
	if got := k.Dump(); got != want {
		t.Errorf("state:\n%s\nwant:\n%s", got, want)
	}
	calls := strings.Join(k.Calls, "; ")
	wantCalls := "neigh replace 10.244.2.0; fdb replace 02:00:00:00:00:22; fdb replace 02:00:00:00:00:03; -- routes --; " +
		"fdb del 02:00:00:00:00:02; fdb del 02:00:00:00:00:09; neigh del 10.244.9.0"
	if calls != wantCalls {
		t.Errorf("calls:\n%s\nwant:\n%s", calls, wantCalls)
	}
	// Nothing to do the second time.
	p, _ = PlanL2(k, []int{5}, neighs, fdbs)
	k.Calls = nil
	p.Add(&ch)
	p.Delete(&ch)
	if len(k.Calls) != 0 {
		t.Errorf("second plan made calls: %v", k.Calls)
	}
}
