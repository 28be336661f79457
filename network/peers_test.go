package network

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/flanneld-go/flannel/subnet"
)

// lease builds a lease from a key-like subnet ("10.244.2.0/24" or
// "10.244.2.0/24&fd00:10:244:2::/64"), a PublicIP and a backend type; a
// vxlan lease gets BackendData with mac ("" for none).
func lease(sn, pub, backend string, rev int64, mac string) subnet.Lease {
	v4, v6, _ := strings.Cut(sn, "&")
	l := subnet.Lease{Subnet: netip.MustParsePrefix(v4), CreateRevision: rev,
		Attrs: subnet.LeaseAttrs{PublicIP: netip.MustParseAddr(pub), BackendType: backend}}
	if v6 != "" {
		l.IPv6Subnet = netip.MustParsePrefix(v6)
	}
	if mac != "" {
		l.Attrs.BackendData = []byte(`{"VNI":1,"VtepMAC":"` + mac + `"}`)
	}
	return l
}

func add(ls ...subnet.Lease) []subnet.Event {
	var out []subnet.Event
	for _, l := range ls {
		out = append(out, subnet.Event{Type: subnet.EventAdded, Lease: l})
	}
	return out
}

func del(ls ...subnet.Lease) []subnet.Event {
	var out []subnet.Event
	for _, l := range ls {
		out = append(out, subnet.Event{Type: subnet.EventRemoved, Lease: l})
	}
	return out
}

func ev(typ subnet.EventType, sn, pub, backend string) subnet.Event {
	mac := ""
	if backend == "vxlan" {
		mac = "0e:00:00:00:00:" + strings.Split(pub, ".")[3]
	}
	return subnet.Event{Type: typ, Lease: lease(sn, pub, backend, 0, mac)}
}

func keys(ls []subnet.Lease) string {
	var out []string
	for _, l := range ls {
		out = append(out, l.Key())
	}
	return strings.Join(out, " ")
}

func rejected(rs []Rejection) string {
	var out []string
	for _, r := range rs {
		s := r.Lease.Key() + ":" + string(r.Reason)
		if r.Winner.Subnet.IsValid() {
			s += "<" + r.Winner.Key()
		}
		out = append(out, s)
	}
	return strings.Join(out, " ")
}

const (
	ownIP  = "192.168.50.11"
	ownMAC = "0e:00:00:00:00:11"
)

// newSet is the peer set of host 192.168.50.11 (vxlan MAC ownMAC) holding
// 10.244.1.0/24.
func newSet(t testing.TB, netconf string) *PeerSet {
	t.Helper()
	cfg, _, err := subnet.ParseConfig([]byte(netconf))
	if err != nil {
		t.Fatal(err)
	}
	s := NewPeerSet(cfg, netip.MustParseAddr(ownIP))
	own := lease("10.244.1.0/24", ownIP, "vxlan", 1, ownMAC)
	if cfg.EnableIPv6 {
		own = lease("10.244.1.0/24&fd00:10:244:1::/64", ownIP, "vxlan", 1, ownMAC)
		own.Attrs.PublicIPv6 = netip.MustParseAddr("fd00:50::11")
		own.Attrs.BackendV6Data = []byte(`{"VNI":1,"VtepMAC":"0e:00:00:00:06:11"}`)
	}
	s.SetOwnAttrs(own.Attrs)
	s.SetOwn(own)
	return s
}

func TestPeerSetRules(t *testing.T) {
	s := newSet(t, `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`)
	f := s.Apply([]subnet.Event{
		ev(subnet.EventAdded, "10.244.1.0/24", "192.168.50.11", "vxlan"), // ours
		ev(subnet.EventAdded, "10.244.3.0/24", "192.168.50.13", "vxlan"),
		ev(subnet.EventAdded, "10.244.2.0/24", "192.168.50.12", "vxlan"),
		ev(subnet.EventAdded, "10.99.0.0/24", "192.168.50.19", "vxlan"), // outside the Network
		ev(subnet.EventAdded, "10.244.4.0/24", "192.168.50.14", "ipip"), // a backend we cannot serve
		ev(subnet.EventAdded, "10.244.5.0/24", "192.168.50.15", ""),     // upstream udp: served beside vxlan
	})
	if keys(f.Joined) != "10.244.2.0-24 10.244.3.0-24 10.244.5.0-24" || !f.Changed || f.OwnRemoved {
		t.Errorf("fold %+v", f)
	}
	if got := rejected(f.Rejected); got != "10.99.0.0-24:outside_network 10.244.4.0-24:backend_type" {
		t.Errorf("rejected %s", got)
	}
	if got := keys(s.Peers()); got != "10.244.2.0-24 10.244.3.0-24 10.244.5.0-24" {
		t.Errorf("peers %s", got)
	}
	if got := fmt.Sprint(s.ByType()); got != "map[udp:1 vxlan:2]" {
		t.Errorf("ByType %s", got)
	}
	if s.Len() != 5 {
		t.Errorf("Len %d, want 5 leases besides ours", s.Len())
	}
	// The same leases again (a re-list after an outage): nothing to report.
	f = s.Apply([]subnet.Event{ev(subnet.EventAdded, "10.244.2.0/24", "192.168.50.12", "vxlan"), ev(subnet.EventAdded, "10.99.0.0/24", "192.168.50.19", "vxlan")})
	if f.Changed || len(f.Joined)+len(f.Left)+len(f.Rejected) != 0 {
		t.Errorf("repeat: %+v", f)
	}
	// A peer moves (new address): changed, not joined.
	f = s.Apply([]subnet.Event{ev(subnet.EventAdded, "10.244.2.0/24", "192.168.60.12", "vxlan")})
	if !f.Changed || len(f.Joined) != 0 {
		t.Errorf("move: %+v", f)
	}
	// A peer switches to another backend we serve: an update.
	f = s.Apply([]subnet.Event{ev(subnet.EventAdded, "10.244.3.0/24", "192.168.50.13", "host-gw")})
	if keys(f.Updated) != "10.244.3.0-24" || len(f.Left)+len(f.Rejected) != 0 || !f.Changed {
		t.Errorf("switch: %+v", f)
	}
	if got := fmt.Sprint(s.ByType()); got != "map[host-gw:1 udp:1 vxlan:1]" {
		t.Errorf("ByType after the switch %s", got)
	}
	// ... and to one we cannot serve: it leaves, and is reported.
	f = s.Apply([]subnet.Event{ev(subnet.EventAdded, "10.244.3.0/24", "192.168.50.13", "wireguard")})
	if keys(f.Left) != "10.244.3.0-24" || len(f.Rejected) != 1 || !f.Changed {
		t.Errorf("switch to wireguard: %+v", f)
	}
	// Removal of a peer, of a non-peer, and of our own lease.
	f = s.Apply([]subnet.Event{
		ev(subnet.EventRemoved, "10.244.2.0/24", "192.168.60.12", "vxlan"),
		ev(subnet.EventRemoved, "10.244.4.0/24", "192.168.50.14", "ipip"),
		ev(subnet.EventRemoved, "10.244.1.0/24", "192.168.50.11", "vxlan"),
	})
	if keys(f.Left) != "10.244.2.0-24" || !f.OwnRemoved {
		t.Errorf("removals: %+v", f)
	}
	if got := keys(s.Peers()); got != "10.244.5.0-24" {
		t.Errorf("peers left: %s", got)
	}
	if got := fmt.Sprint(s.ByType()); got != "map[udp:1]" {
		t.Errorf("ByType at the end %s", got)
	}
}

func TestPeerSetUDPAndIPv6(t *testing.T) {
	s := newSet(t, `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"udp"}}`)
	in := ev(subnet.EventAdded, "10.244.2.0/24&fd00:10:244:2::/64", "192.168.50.12", "")
	out := ev(subnet.EventAdded, "10.244.3.0/24&fd00:99::/64", "192.168.50.13", "udp") // IPv6 half outside the IPv6Network
	f := s.Apply([]subnet.Event{in, out})
	if keys(f.Joined) != in.Lease.Key() || rejected(f.Rejected) != out.Lease.Key()+":outside_network" {
		t.Errorf("fold %+v", f)
	}
	// Our own subnet changes: a lease that now holds it is not a peer.
	f = s.SetOwn(in.Lease)
	if len(s.Peers()) != 0 || keys(f.Left) != in.Lease.Key() {
		t.Errorf("our new lease is a peer: %s (fold %+v)", keys(s.Peers()), f)
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
	if !f.OwnRemoved || len(f.Joined) != 0 || len(f.Rejected) != 0 {
		t.Errorf("fold %+v", f)
	}
	f = s.SetOwn(lease("10.244.9.0/24", ownIP, "vxlan", 30, ownMAC))
	if keys(f.Joined) != "10.244.1.0-24" || f.Joined[0].Attrs.PublicIP.String() != "192.168.50.13" || len(f.Rejected) != 0 {
		t.Errorf("SetOwn returned %+v, want host C joined", f)
	}
	if got := keys(s.Peers()); got != "10.244.1.0-24 10.244.2.0-24" {
		t.Errorf("peers %s, want C and B (never ourselves)", got)
	}
	if s.Len() != 2 {
		t.Errorf("Len %d, want 2", s.Len())
	}
}

// A lease claiming our PublicIP is ours only while we re-acquire; at any
// other time it is another host's (or a forgery) and rejected, once.
func TestPeerSetForeignLeaseWithOurPublicIP(t *testing.T) {
	s := newSet(t, `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`)
	fake := lease("10.244.7.0/24", ownIP, "vxlan", 40, "0e:00:00:00:00:77")
	f := s.Apply(add(lease("10.244.1.0/24", ownIP, "vxlan", 1, ownMAC), fake))
	if rejected(f.Rejected) != "10.244.7.0-24:public_ip_own" || len(f.Joined) != 0 {
		t.Fatalf("fold %+v", f)
	}
	s.Reacquiring()
	if why, _, known := s.Status(fake.Key()); known {
		t.Errorf("while re-acquiring: %s, want ours", why)
	}
	// We got our subnet back: the other lease is rejected again, and not
	// reported a second time.
	f = s.SetOwn(lease("10.244.1.0/24", ownIP, "vxlan", 1, ownMAC))
	if len(f.Rejected)+len(f.Joined) != 0 {
		t.Errorf("fold after SetOwn %+v", f)
	}
	if why, _, _ := s.Status(fake.Key()); why != ReasonPublicIPOwn {
		t.Errorf("after SetOwn: %s", why)
	}
	// Its attributes change: reported again.
	fake.Attrs.BackendData = []byte(`{"VNI":1,"VtepMAC":"0e:00:00:00:00:78"}`)
	if f = s.Apply(add(fake)); rejected(f.Rejected) != "10.244.7.0-24:public_ip_own" {
		t.Errorf("changed attrs: %+v", f)
	}
}
