package network

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/flanneld-go/flannel/subnet"
)

func ev(typ subnet.EventType, sn, pub, backend string) subnet.Event {
	return subnet.Event{Type: typ, Lease: subnet.Lease{Subnet: netip.MustParsePrefix(sn),
		Attrs: subnet.LeaseAttrs{PublicIP: netip.MustParseAddr(pub), BackendType: backend}}}
}

func keys(ls []subnet.Lease) string {
	var out []string
	for _, l := range ls {
		out = append(out, l.Key())
	}
	return strings.Join(out, " ")
}

func newSet(t *testing.T, netconf string) *PeerSet {
	t.Helper()
	cfg, _, err := subnet.ParseConfig([]byte(netconf))
	if err != nil {
		t.Fatal(err)
	}
	s := NewPeerSet(cfg, netip.MustParseAddr("192.168.50.11"))
	s.SetOwn(subnet.Lease{Subnet: netip.MustParsePrefix("10.244.1.0/24")})
	return s
}

func TestPeerSetRules(t *testing.T) {
	s := newSet(t, `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`)
	f := s.Apply([]subnet.Event{
		ev(subnet.EventAdded, "10.244.1.0/24", "192.168.50.11", "vxlan"), // ours
		ev(subnet.EventAdded, "10.244.3.0/24", "192.168.50.13", "vxlan"),
		ev(subnet.EventAdded, "10.244.2.0/24", "192.168.50.12", "vxlan"),
		ev(subnet.EventAdded, "10.99.0.0/24", "192.168.50.19", "vxlan"),    // outside the Network
		ev(subnet.EventAdded, "10.244.4.0/24", "192.168.50.14", "host-gw"), // another backend
		ev(subnet.EventAdded, "10.244.5.0/24", "192.168.50.15", ""),        // upstream udp
	})
	if keys(f.Joined) != "10.244.3.0-24 10.244.2.0-24" || !f.Changed || f.OwnRemoved {
		t.Errorf("fold %+v", f)
	}
	if len(f.Ignored) != 3 || f.Ignored[0].Reason != "outside the network" || f.Ignored[1].Reason != "another backend type" ||
		f.Ignored[2].Lease.Key() != "10.244.5.0-24" {
		t.Errorf("ignored %+v", f.Ignored)
	}
	if got := keys(s.Peers()); got != "10.244.2.0-24 10.244.3.0-24" {
		t.Errorf("peers %s", got)
	}
	if s.Len() != 5 {
		t.Errorf("Len %d, want 5 leases besides ours", s.Len())
	}
	// The same lease again (a re-list after an outage): nothing to report.
	f = s.Apply([]subnet.Event{ev(subnet.EventAdded, "10.244.2.0/24", "192.168.50.12", "vxlan"), ev(subnet.EventAdded, "10.99.0.0/24", "192.168.50.19", "vxlan")})
	if f.Changed || len(f.Joined)+len(f.Left)+len(f.Ignored) != 0 {
		t.Errorf("repeat: %+v", f)
	}
	// A peer moves (new address): changed, not joined.
	f = s.Apply([]subnet.Event{ev(subnet.EventAdded, "10.244.2.0/24", "192.168.60.12", "vxlan")})
	if !f.Changed || len(f.Joined) != 0 {
		t.Errorf("move: %+v", f)
	}
	// A peer switches to another backend: it leaves, and is reported ignored.
	f = s.Apply([]subnet.Event{ev(subnet.EventAdded, "10.244.3.0/24", "192.168.50.13", "udp")})
	if keys(f.Left) != "10.244.3.0-24" || len(f.Ignored) != 1 || !f.Changed {
		t.Errorf("switch: %+v", f)
	}
	// Removal of a peer, of a non-peer, and of our own lease.
	f = s.Apply([]subnet.Event{
		ev(subnet.EventRemoved, "10.244.2.0/24", "192.168.60.12", "vxlan"),
		ev(subnet.EventRemoved, "10.244.4.0/24", "192.168.50.14", "host-gw"),
		ev(subnet.EventRemoved, "10.244.1.0/24", "192.168.50.11", "vxlan"),
	})
	if keys(f.Left) != "10.244.2.0-24" || !f.OwnRemoved {
		t.Errorf("removals: %+v", f)
	}
	if len(s.Peers()) != 0 {
		t.Errorf("peers left: %s", keys(s.Peers()))
	}
}

func TestPeerSetUDPAndIPv6(t *testing.T) {
	s := newSet(t, `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"udp"}}`)
	in := ev(subnet.EventAdded, "10.244.2.0/24", "192.168.50.12", "")
	in.Lease.IPv6Subnet = netip.MustParsePrefix("fd00:10:244:2::/64")
	out := ev(subnet.EventAdded, "10.244.3.0/24", "192.168.50.13", "udp")
	out.Lease.IPv6Subnet = netip.MustParsePrefix("fd00:99::/64") // IPv6 half outside the IPv6Network
	f := s.Apply([]subnet.Event{in, out})
	if keys(f.Joined) != in.Lease.Key() || len(f.Ignored) != 1 || f.Ignored[0].Reason != "outside the network" {
		t.Errorf("fold %+v", f)
	}
	// Our own subnet changes: a lease that now holds it is not a peer.
	s.SetOwn(in.Lease)
	if len(s.Peers()) != 0 {
		t.Errorf("our new lease is a peer: %s", keys(s.Peers()))
	}
}

// Our lease is deleted and, while we acquire again, another host takes our
// old subnet; we get another one. That host is a peer as soon as our new
// lease is set, and our own new lease, seen before that, never is.
func TestPeerSetReacquisition(t *testing.T) {
	s := newSet(t, `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`)
	s.Apply([]subnet.Event{ev(subnet.EventAdded, "10.244.1.0/24", "192.168.50.11", "vxlan"), ev(subnet.EventAdded, "10.244.2.0/24", "192.168.50.12", "vxlan")})
	f := s.Apply([]subnet.Event{
		ev(subnet.EventRemoved, "10.244.1.0/24", "192.168.50.11", "vxlan"),
		ev(subnet.EventAdded, "10.244.1.0/24", "192.168.50.13", "vxlan"), // host C takes it
		ev(subnet.EventAdded, "10.244.9.0/24", "192.168.50.11", "vxlan"), // our new lease, before we know it
	})
	if !f.OwnRemoved || len(f.Joined) != 0 {
		t.Errorf("fold %+v", f)
	}
	joined := s.SetOwn(subnet.Lease{Subnet: netip.MustParsePrefix("10.244.9.0/24")})
	if keys(joined) != "10.244.1.0-24" || joined[0].Attrs.PublicIP.String() != "192.168.50.13" {
		t.Errorf("SetOwn returned %v, want host C", keys(joined))
	}
	if got := keys(s.Peers()); got != "10.244.1.0-24 10.244.2.0-24" {
		t.Errorf("peers %s, want C and B (never ourselves)", got)
	}
	if s.Len() != 2 {
		t.Errorf("Len %d, want 2", s.Len())
	}
}
