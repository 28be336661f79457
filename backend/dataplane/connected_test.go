package dataplane

import (
	"net/netip"
	"os/exec"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/flanneld-go/flannel/internal/netnstest"
)

// TestOnLinkSnapshot checks that OnLink answers a reconcile's worth of
// questions from one address dump, and sees address changes after the
// next route listing (the start of the next reconcile).
func TestOnLinkSnapshot(t *testing.T) {
	netnstest.Require(t)
	ip(t, "link", "add", "sn0", "type", "veth", "peer", "name", "sn0p")
	t.Cleanup(func() { exec.Command("ip", "link", "del", "sn0").Run() })
	ip(t, "addr", "add", "192.168.70.11/24", "dev", "sn0")
	link, err := netlink.LinkByName("sn0")
	if err != nil {
		t.Fatal(err)
	}
	idx := link.Attrs().Index
	k := NewNetlink(nil)
	for i := range 1000 {
		a := netip.AddrFrom4([4]byte{192, 168, 70, byte(i)})
		if ok, err := k.OnLink(idx, a); err != nil || !ok {
			t.Fatalf("OnLink(%s) = %v %v, want true", a, ok, err)
		}
	}
	if k.addrs.dumps != 1 {
		t.Errorf("1000 OnLink calls took %d address dumps, want 1", k.addrs.dumps)
	}
	peer := netip.MustParseAddr("10.50.3.4")
	ip(t, "addr", "add", "10.50.255.254/16", "dev", "sn0")
	if _, err := k.RouteList(); err != nil {
		t.Fatal(err)
	}
	if ok, err := k.OnLink(idx, peer); err != nil || !ok {
		t.Errorf("after adding 10.50.255.254/16 and a route listing: OnLink(%s) = %v %v, want true", peer, ok, err)
	}
	ip(t, "addr", "del", "10.50.255.254/16", "dev", "sn0")
	if _, err := k.RouteList(); err != nil {
		t.Fatal(err)
	}
	if ok, err := k.OnLink(idx, peer); err != nil || ok {
		t.Errorf("after removing it: OnLink(%s) = %v %v, want false", peer, ok, err)
	}
	// A link without addresses is not an error; a missing link is.
	if ok, err := k.OnLink(link.Attrs().Index+1000, peer); err == nil {
		t.Errorf("OnLink on a missing link = %v, nil; want an error", ok)
	}
	p, err := netlink.LinkByName("sn0p")
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := k.OnLink(p.Attrs().Index, peer); err != nil || ok {
		t.Errorf("OnLink on a link without addresses = %v %v, want false, nil", ok, err)
	}
}
