package network

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/flanneld-go/flannel/subnet"
)

const (
	netconf4  = `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`
	netconf46 = `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"vxlan"}}`
	macB      = "0e:00:00:00:00:12"
	macB6     = "0e:00:00:00:06:12"
)

// hostB is the one other host of the rule tests, older than every lease
// a case adds.
func hostB(dual bool) subnet.Lease {
	if !dual {
		return lease("10.244.2.0/24", "192.168.50.12", "vxlan", 10, macB)
	}
	b := lease("10.244.2.0/24&fd00:10:244:2::/64", "192.168.50.12", "vxlan", 10, macB)
	b.Attrs.PublicIPv6 = netip.MustParseAddr("fd00:50::12")
	b.Attrs.BackendV6Data = []byte(`{"VNI":1,"VtepMAC":"` + macB6 + `"}`)
	return b
}

type ruleCase struct {
	name   string
	l      subnet.Lease
	want   Reason
	winner string // key of the lease that wins, for conflicts
}

func with(l subnet.Lease, f func(*subnet.Lease)) subnet.Lease { f(&l); return l }

func v4Cases() []ruleCase {
	x := func(sn, pub, mac string) subnet.Lease { return lease(sn, pub, "vxlan", 20, mac) }
	ok := x("10.244.5.0/24", "192.168.50.15", "0e:00:00:00:00:15")
	data := func(d string) subnet.Lease {
		return with(ok, func(l *subnet.Lease) { l.Attrs.BackendData = []byte(d) })
	}
	pub := func(a string) subnet.Lease { return x("10.244.5.0/24", a, "0e:00:00:00:00:15") }
	return []ruleCase{
		{"a valid lease", ok, "", ""},
		{"a /25 inside another host's /24", x("10.244.2.0/25", "192.168.50.15", "0e:00:00:00:00:15"), ReasonSubnetLength, ""},
		{"a /23 over two subnets", x("10.244.4.0/23", "192.168.50.15", "0e:00:00:00:00:15"), ReasonSubnetLength, ""},
		{"the whole Network", x("10.244.0.0/16", "192.168.50.15", "0e:00:00:00:00:15"), ReasonSubnetLength, ""},
		{"outside the Network", x("10.99.0.0/24", "192.168.50.15", "0e:00:00:00:00:15"), ReasonOutsideNetwork, ""},
		{"an IPv6 half ::/0 (IPv6 off)", x("10.244.5.0/24&::/0", "192.168.50.15", "0e:00:00:00:00:15"), ReasonSubnetLength, ""},
		{"an IPv6 half /127 (IPv6 off)", x("10.244.5.0/24&fd00::/127", "192.168.50.15", "0e:00:00:00:00:15"), ReasonSubnetLength, ""},
		{"a link-local IPv6 half (IPv6 off)", x("10.244.5.0/24&fe80::/64", "192.168.50.15", "0e:00:00:00:00:15"), ReasonOutsideNetwork, ""},
		{"a plausible IPv6 half (IPv6 off: not used, accepted)", x("10.244.5.0/24&fd00:10:244:5::/64", "192.168.50.15", "0e:00:00:00:00:15"), "", ""},
		{"another host's subnet under another key", x("10.244.2.0/24&fd00:10:244:9::/64", "192.168.50.15", "0e:00:00:00:00:15"), ReasonOverlapsLease, "10.244.2.0-24"},
		{"our subnet under another key", x("10.244.1.0/24&fd00:10:244:9::/64", "192.168.50.15", "0e:00:00:00:00:15"), ReasonOverlapsOwn, ""},
		{"another host's VtepMAC", x("10.244.5.0/24", "192.168.50.15", macB), ReasonVtepMACDuplicate, "10.244.2.0-24"},
		{"another host's VtepMAC, other case", x("10.244.5.0/24", "192.168.50.15", "0E:00:00:00:00:12"), ReasonVtepMACDuplicate, "10.244.2.0-24"},
		{"another host's PublicIP and VtepMAC", x("10.244.5.0/24", "192.168.50.12", macB), ReasonVtepMACDuplicate, "10.244.2.0-24"},
		{"another host's PublicIP, own MAC (harmless: accepted)", x("10.244.5.0/24", "192.168.50.12", "0e:00:00:00:00:15"), "", ""},
		{"our VtepMAC", x("10.244.5.0/24", "192.168.50.15", ownMAC), ReasonVtepMACOwn, ""},
		{"our PublicIP", x("10.244.5.0/24", ownIP, "0e:00:00:00:00:15"), ReasonPublicIPOwn, ""},
		{"our PublicIP and VtepMAC", x("10.244.5.0/24", ownIP, ownMAC), ReasonPublicIPOwn, ""},
		{"PublicIP 0.0.0.0", pub("0.0.0.0"), ReasonPublicIPInvalid, ""},
		{"PublicIP loopback", pub("127.0.0.2"), ReasonPublicIPInvalid, ""},
		{"PublicIP link-local multicast", pub("224.0.0.1"), ReasonPublicIPInvalid, ""},
		{"PublicIP multicast", pub("239.1.2.3"), ReasonPublicIPInvalid, ""},
		{"PublicIP broadcast", pub("255.255.255.255"), ReasonPublicIPInvalid, ""},
		{"PublicIP inside the pod network", pub("10.244.5.1"), ReasonPublicIPInvalid, ""},
		{"PublicIPv6 loopback", with(ok, func(l *subnet.Lease) { l.Attrs.PublicIPv6 = netip.IPv6Loopback() }), ReasonPublicIPInvalid, ""},
		{"vxlan without BackendData", data(""), ReasonBackendData, ""},
		{"BackendData not an object", data(`[1]`), ReasonBackendData, ""},
		{"VtepMAC not a string", data(`{"VNI":1,"VtepMAC":7}`), ReasonBackendData, ""},
		{"VtepMAC not a MAC", data(`{"VNI":1,"VtepMAC":"zz:zz"}`), ReasonBackendData, ""},
		{"VtepMAC all zero (the FDB's flood entry)", data(`{"VNI":1,"VtepMAC":"00:00:00:00:00:00"}`), ReasonBackendData, ""},
		{"VtepMAC a group MAC", data(`{"VNI":1,"VtepMAC":"01:00:5e:00:00:01"}`), ReasonBackendData, ""},
		{"BackendV6Data malformed", with(ok, func(l *subnet.Lease) { l.Attrs.BackendV6Data = []byte(`{"VtepMAC":""}`) }), ReasonBackendData, ""},
		{"ipip lease", lease("10.244.5.0/24", "192.168.50.15", "ipip", 20, ""), ReasonBackendType, ""},
		{"host-gw lease with another host's subnet", lease("10.244.2.0/24&fd00:10:244:9::/64", "192.168.50.15", "host-gw", 20, ""), ReasonOverlapsLease, "10.244.2.0-24"},
		{"host-gw lease with an invalid PublicIP", lease("10.244.5.0/24", "127.0.0.1", "host-gw", 20, ""), ReasonPublicIPInvalid, ""},
	}
}

func v6Cases() []ruleCase {
	ok := lease("10.244.5.0/24&fd00:10:244:5::/64", "192.168.50.15", "vxlan", 20, "0e:00:00:00:00:15")
	ok.Attrs.PublicIPv6 = netip.MustParseAddr("fd00:50::15")
	ok.Attrs.BackendV6Data = []byte(`{"VNI":1,"VtepMAC":"0e:00:00:00:06:15"}`)
	half := func(p string) subnet.Lease {
		return with(ok, func(l *subnet.Lease) { l.IPv6Subnet = netip.MustParsePrefix(p) })
	}
	pub6 := func(a string) subnet.Lease {
		return with(ok, func(l *subnet.Lease) { l.Attrs.PublicIPv6 = netip.MustParseAddr(a) })
	}
	mac6 := func(m string) subnet.Lease {
		return with(ok, func(l *subnet.Lease) { l.Attrs.BackendV6Data = []byte(`{"VNI":1,"VtepMAC":"` + m + `"}`) })
	}
	return []ruleCase{
		{"a valid dual-stack lease", ok, "", ""},
		{"no IPv6 half (an IPv4-only or upstream host)", with(ok, func(l *subnet.Lease) { l.IPv6Subnet = netip.Prefix{} }), "", ""},
		{"an IPv6 half ::/0", half("::/0"), ReasonSubnetLength, ""},
		{"an IPv6 half /80", half("fd00:10:244:5::/80"), ReasonSubnetLength, ""},
		{"an IPv6 half outside IPv6Network", half("fd00:99::/64"), ReasonOutsideNetwork, ""},
		{"our IPv6 subnet", half("fd00:10:244:1::/64"), ReasonOverlapsOwn, ""},
		{"another host's IPv6 subnet", half("fd00:10:244:2::/64"), ReasonOverlapsLease, hostB(true).Key()},
		{"our PublicIPv6", pub6("fd00:50::11"), ReasonPublicIPOwn, ""},
		{"PublicIPv6 unspecified", pub6("::"), ReasonPublicIPInvalid, ""},
		{"PublicIPv6 link-local multicast", pub6("ff02::1"), ReasonPublicIPInvalid, ""},
		{"PublicIPv6 inside the pod network", pub6("fd00:10:244:5::1"), ReasonPublicIPInvalid, ""},
		{"our IPv6 VtepMAC", mac6("0e:00:00:00:06:11"), ReasonVtepMACOwn, ""},
		{"another host's IPv6 VtepMAC", mac6(macB6), ReasonVtepMACDuplicate, hostB(true).Key()},
	}
}

// TestPeerSetRejects: each rule on its own, with host B as the other
// host. The bad lease is rejected once, B and our own lease are untouched,
// and its removal gives back exactly the state before it.
func TestPeerSetRejects(t *testing.T) {
	for _, fam := range []struct {
		name, netconf string
		dual          bool
		cases         []ruleCase
	}{{"IPv4", netconf4, false, v4Cases()}, {"dual-stack", netconf46, true, v6Cases()}} {
		for _, tc := range fam.cases {
			t.Run(fam.name+"/"+tc.name, func(t *testing.T) {
				s := newSet(t, fam.netconf)
				b := hostB(fam.dual)
				s.Apply(add(b))
				f := s.Apply(add(tc.l))
				why, winner, known := s.Status(tc.l.Key())
				if !known || why != tc.want || winner != tc.winner {
					t.Fatalf("status %q winner %q (known %t), want %q winner %q", why, winner, known, tc.want, tc.winner)
				}
				peers := b.Key()
				if tc.want == "" {
					if keys(f.Joined) != tc.l.Key() || !f.Changed || len(f.Rejected) != 0 {
						t.Errorf("fold %+v, want it joined", f)
					}
					peers = keys(s.Peers()) // in subnet order
				} else if len(f.Joined)+len(f.Left) != 0 || len(f.Rejected) != 1 || f.Rejected[0].Reason != tc.want || f.Changed {
					t.Errorf("fold %+v, want one rejection", f)
				} else if tc.winner != "" && f.Rejected[0].Winner.Key() != tc.winner {
					t.Errorf("rejection names winner %q, want %q", f.Rejected[0].Winner.Key(), tc.winner)
				}
				if got := keys(s.Peers()); got != peers {
					t.Errorf("peers %s, want %s", got, peers)
				}
				if f := s.Apply(add(tc.l)); len(f.Rejected)+len(f.Joined)+len(f.Left) != 0 || f.Changed {
					t.Errorf("the same lease again: %+v", f)
				}
				f = s.Apply(del(tc.l))
				if got := keys(s.Peers()); got != b.Key() || len(f.Joined) != 0 || len(f.Rejected) != 0 {
					t.Errorf("after removal: peers %s, fold %+v", got, f)
				}
				if why, _, _ := s.Status(b.Key()); why != "" || s.Len() != 1 {
					t.Errorf("after removal: B is %q, Len %d", why, s.Len())
				}
			})
		}
	}
}

// TestPeerSetOlderWins: of two leases with the same subnet the older
// wins, whichever arrives first; when the winner leaves, the loser joins.
func TestPeerSetOlderWins(t *testing.T) {
	old := lease("10.244.2.0/24", "192.168.50.12", "vxlan", 10, macB)
	young := lease("10.244.2.0/24&fd00:10:244:9::/64", "192.168.50.13", "vxlan", 20, "0e:00:00:00:00:13")
	for _, order := range [][]subnet.Lease{{old, young}, {young, old}} {
		s := newSet(t, netconf4)
		var f Fold
		for _, l := range order {
			f = s.Apply(add(l))
		}
		if got := keys(s.Peers()); got != old.Key() {
			t.Errorf("order %s: peers %s, want the older", keys(order), got)
		}
		if order[1].Key() == old.Key() && (keys(f.Left) != young.Key() || keys(f.Joined) != old.Key() || rejected(f.Rejected) != young.Key()+":overlaps_lease<"+old.Key()) {
			t.Errorf("older arriving second: %+v", f)
		}
		f = s.Apply(del(old))
		if keys(f.Joined) != young.Key() || keys(f.Left) != old.Key() || keys(s.Peers()) != young.Key() {
			t.Errorf("winner left: fold %+v, peers %s", f, keys(s.Peers()))
		}
	}
}

// TestPeerSetChain: A and B share a subnet, B and C a VtepMAC. A wins over
// B, so C (which conflicts only with the rejected B) is a peer; when A
// leaves, B wins over C.
func TestPeerSetChain(t *testing.T) {
	a := lease("10.244.2.0/24", "192.168.50.12", "vxlan", 10, "0e:00:00:00:00:12")
	b := lease("10.244.2.0/24&fd00:10:244:9::/64", "192.168.50.13", "vxlan", 20, "0e:00:00:00:00:13")
	c := lease("10.244.3.0/24", "192.168.50.14", "vxlan", 30, "0e:00:00:00:00:13")
	s := newSet(t, netconf4)
	s.Apply(add(c, b, a))
	if got := keys(s.Peers()); got != "10.244.2.0-24 10.244.3.0-24" {
		t.Fatalf("peers %s, want A and C", got)
	}
	f := s.Apply(del(a))
	if keys(f.Left) != "10.244.2.0-24 10.244.3.0-24" || keys(f.Joined) != b.Key() || rejected(f.Rejected) != "10.244.3.0-24:vtep_mac_duplicate<"+b.Key() {
		t.Errorf("A left: %+v", f)
	}
	f = s.Apply(add(a))
	if keys(s.Peers()) != "10.244.2.0-24 10.244.3.0-24" || keys(f.Joined) != "10.244.2.0-24 10.244.3.0-24" {
		t.Errorf("A back: peers %s, fold %+v", keys(s.Peers()), f)
	}
}

// TestPeerSetLogOnce: a rejected lease is reported once per key, again
// only when its reason or attributes change; a changed winner alone is not
// news.
func TestPeerSetLogOnce(t *testing.T) {
	s := newSet(t, netconf4)
	w1 := lease("10.244.2.0/24", "192.168.50.12", "vxlan", 10, macB)
	w2 := lease("10.244.2.0/24&fd00:10:244:8::/64", "192.168.50.13", "vxlan", 11, "0e:00:00:00:00:13")
	x := lease("10.244.2.0/24&fd00:10:244:9::/64", "192.168.50.14", "vxlan", 20, "0e:00:00:00:00:14")
	var reports []string
	apply := func(evs []subnet.Event) {
		for _, r := range s.Apply(evs).Rejected {
			if r.Lease.Key() == x.Key() {
				reports = append(reports, string(r.Reason))
			}
		}
	}
	apply(add(w1, w2, x))
	apply(add(x))                                       // re-list
	apply(del(w1))                                      // w2 wins now: same reason
	x.Attrs.PublicIP = netip.MustParseAddr("127.0.0.1") // another reason
	apply(add(x))
	x.Attrs.PublicIP = netip.MustParseAddr("192.168.50.14")
	apply(add(x)) // back to the conflict
	apply(del(x))
	apply(add(x)) // a new lease under the same key
	if want := []string{"overlaps_lease", "public_ip_invalid", "overlaps_lease", "overlaps_lease"}; !slices.Equal(reports, want) {
		t.Errorf("reports %v, want %v", reports, want)
	}
}

// wgLease is a wireguard lease publishing key k (base64) in BackendData,
// and in BackendV6Data when k6 is given.
func wgLease(sn, pub string, rev int64, k, k6 string) subnet.Lease {
	l := lease(sn, pub, "wireguard", rev, "")
	l.Attrs.BackendData = []byte(`{"PublicKey":"` + k + `","Port":51820}`)
	if k6 != "" {
		l.Attrs.BackendV6Data = []byte(`{"PublicKey":"` + k6 + `","Port":51821}`)
	}
	return l
}

// TestPeerSetWireGuard: a wireguard lease without a usable public key is
// rejected (backend_data), as is one whose two halves disagree; one that
// publishes our key (public_key_own) or an older lease's
// (public_key_duplicate) too, and the younger takes over when the older
// leaves.
func TestPeerSetWireGuard(t *testing.T) {
	const (
		kOwn = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="
		kB   = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI="
		kC   = "AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM="
	)
	s := newSet(t, `{"Network":"10.244.0.0/16","Backend":{"Type":"wireguard"}}`)
	s.SetOwnAttrs(subnet.LeaseAttrs{PublicIP: netip.MustParseAddr("192.168.50.11"), BackendType: "wireguard",
		BackendData: []byte(`{"PublicKey":"` + kOwn + `","Port":51820}`)})
	b := wgLease("10.244.2.0/24", "192.168.50.12", 10, kB, "")
	dup := wgLease("10.244.3.0/24", "192.168.50.13", 20, kB, "")
	mine := wgLease("10.244.4.0/24", "192.168.50.14", 30, kOwn, "")
	bad := wgLease("10.244.5.0/24", "192.168.50.15", 40, "not-a-key", "")
	split := wgLease("10.244.6.0/24", "192.168.50.16", 50, kC, kB)
	none := lease("10.244.7.0/24", "192.168.50.17", "wireguard", 60, "")
	ok := wgLease("10.244.8.0/24", "192.168.50.18", 70, kC, kC)
	s.Apply(add(b, dup, mine, bad, split, none, ok))
	for _, c := range []struct {
		l      subnet.Lease
		want   Reason
		winner string
	}{{b, "", ""}, {dup, ReasonPublicKeyDuplicate, b.Key()}, {mine, ReasonPublicKeyOwn, ""}, {bad, ReasonBackendData, ""},
		{split, ReasonBackendData, ""}, {none, ReasonBackendData, ""}, {ok, "", ""}} {
		why, winner, known := s.Status(c.l.Key())
		if !known || why != c.want || winner != c.winner {
			t.Errorf("%s: %q (winner %q), want %q (winner %q)", c.l.Key(), why, winner, c.want, c.winner)
		}
	}
	f := s.Apply(del(b))
	if keys(f.Joined) != dup.Key() {
		t.Errorf("the older key holder left: joined %s", keys(f.Joined))
	}
}
