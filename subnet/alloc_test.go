package subnet

import (
	"errors"
	"fmt"
	"net/netip"
	"testing"
)

func mustConfig(t *testing.T, doc string) *Config {
	t.Helper()
	cfg, _, err := ParseConfig([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// lease is a lease of the host with public IP 192.168.0.<host>; etcdLease
// 0 makes it a reservation.
func lease(v4, v6 string, host byte, etcdLease int64) Lease {
	l := Lease{Subnet: netip.MustParsePrefix(v4), EtcdLeaseID: etcdLease,
		Attrs: LeaseAttrs{PublicIP: netip.AddrFrom4([4]byte{192, 168, 0, host})}}
	if v6 != "" {
		l.IPv6Subnet = netip.MustParsePrefix(v6)
	}
	return l
}

func self(host byte) netip.Addr { return netip.AddrFrom4([4]byte{192, 168, 0, host}) }

func TestPickSubnetsHint(t *testing.T) {
	cfg := mustConfig(t, `{"Network":"10.0.0.0/24","SubnetLen":28}`)
	hint := Hint{Subnet: netip.MustParsePrefix("10.0.0.48/28")}
	for _, tc := range []struct {
		name     string
		leases   []Lease
		wantHint bool
	}{
		{"free", nil, true},
		{"held by another host", []Lease{lease("10.0.0.48/28", "", 2, 7)}, false},
		{"reserved for another host", []Lease{lease("10.0.0.48/28", "", 2, 0)}, false},
		{"our own lease, about to be replaced", []Lease{lease("10.0.0.48/28", "", 1, 7)}, true},
		{"our own reservation that did not fit", []Lease{lease("10.0.0.48/28", "", 1, 0)}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for range 20 { // the fallback is random: try it a few times
				v4, v6, err := cfg.PickSubnets(tc.leases, nil, self(1), hint)
				if err != nil || v6.IsValid() {
					t.Fatalf("PickSubnets = %s, %s, %v", v4, v6, err)
				}
				if (v4 == hint.Subnet) != tc.wantHint {
					t.Fatalf("got %s, hint %s, want the hint: %v", v4, hint.Subnet, tc.wantHint)
				}
				if !cfg.SubnetFits(v4) {
					t.Fatalf("got %s, outside the config", v4)
				}
			}
		})
	}
	// A hint outside the range is not used.
	v4, _, err := cfg.PickSubnets(nil, nil, self(1), Hint{Subnet: netip.MustParsePrefix("10.9.0.0/28")})
	if err != nil || !cfg.SubnetFits(v4) {
		t.Errorf("hint outside the network: got %s, %v", v4, err)
	}
}

func TestPickSubnetsAvoidsTaken(t *testing.T) {
	cfg := mustConfig(t, `{"Network":"10.0.0.0/24","SubnetLen":28}`)
	// 15 leasable /28s (10.0.0.16 .. 10.0.0.240): all but 10.0.0.160 taken,
	// by 8 leases (odd i) and 6 reservations.
	var leases []Lease
	for i := 1; i <= 15; i++ {
		if i != 10 {
			leases = append(leases, lease(fmt.Sprintf("10.0.0.%d/28", 16*i), "", byte(10+i), int64(i%2)))
		}
	}
	for range 20 {
		v4, _, err := cfg.PickSubnets(leases, nil, self(1), Hint{})
		if err != nil || v4 != netip.MustParsePrefix("10.0.0.160/28") {
			t.Fatalf("got %s, %v; want the one free subnet 10.0.0.160/28", v4, err)
		}
	}
	leases = append(leases, lease("10.0.0.160/28", "", 99, 0))
	_, _, err := cfg.PickSubnets(leases, nil, self(1), Hint{})
	want := "no free subnet in 10.0.0.0/24 (SubnetLen 28): 8 leased, 7 reserved"
	if !errors.Is(err, ErrNoFreeSubnet) || err.Error() != want {
		t.Errorf("exhausted: got %v, want %q (ErrNoFreeSubnet)", err, want)
	}
}

func TestPickSubnetsDualStack(t *testing.T) {
	cfg := mustConfig(t, `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10::/48"}`)
	taken := lease("10.244.5.0/24", "fd00:10:0:5::/64", 2, 7)
	hint := Hint{Subnet: netip.MustParsePrefix("10.244.9.0/24"), IPv6Subnet: taken.IPv6Subnet}
	v4, v6, err := cfg.PickSubnets([]Lease{taken}, nil, self(1), hint)
	if err != nil {
		t.Fatal(err)
	}
	// Each family on its own: the free IPv4 hint is kept although the
	// IPv6 one is taken; the IPv6 subnet comes from the large-range path
	// (65536 /64s).
	if v4 != hint.Subnet || !cfg.SubnetFits(v6) || v6 == taken.IPv6Subnet {
		t.Errorf("got %s + %s; want %s + a free IPv6 subnet", v4, v6, hint.Subnet)
	}
	// IPv6 exhaustion names the family.
	cfg = mustConfig(t, `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/124"}`)
	leases := []Lease{lease("10.244.1.0/24", "fd00::4/126", 2, 7), lease("10.244.2.0/24", "fd00::8/126", 3, 7), lease("10.244.3.0/24", "fd00::c/126", 4, 7)}
	_, _, err = cfg.PickSubnets(leases, nil, self(1), Hint{})
	if want := "no free subnet in IPv6 fd00::/124 (SubnetLen 126): 3 leased, 0 reserved"; err == nil || err.Error() != want {
		t.Errorf("got %v, want %q", err, want)
	}
}

func TestLeaseFits(t *testing.T) {
	v4only := mustConfig(t, `{"Network":"10.244.0.0/16"}`)
	dual := mustConfig(t, `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10::/56"}`)
	for _, tc := range []struct {
		cfg  *Config
		l    Lease
		want bool
	}{
		{v4only, lease("10.244.3.0/24", "", 1, 7), true},
		{v4only, lease("10.245.3.0/24", "", 1, 7), false},
		{v4only, lease("10.244.3.0/24", "fd00:10:0:3::/64", 1, 7), false}, // IPv6 turned off since
		{dual, lease("10.244.3.0/24", "", 1, 7), false},                   // IPv6 turned on since
		{dual, lease("10.244.3.0/24", "fd00:10:0:3::/64", 1, 7), true},
		{dual, lease("10.244.3.0/24", "fd00:11:0:3::/64", 1, 7), false},
	} {
		if got := tc.cfg.LeaseFits(tc.l); got != tc.want {
			t.Errorf("%s in %s (IPv6 %v): LeaseFits = %v, want %v", tc.l, tc.cfg.Network, tc.cfg.EnableIPv6, got, tc.want)
		}
	}
}
