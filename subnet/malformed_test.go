package subnet

import (
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestGuardedSubnet(t *testing.T) {
	for _, tc := range []struct {
		name string
		bits int
		want string // "" when the name guards nothing
	}{
		{"10.244.3.0-24", 24, "10.244.3.0/24"},
		{"10.244.3.0-24&fd00::-64", 24, "10.244.3.0/24"},
		{"10.244.3.0-24garbage", 24, "10.244.3.0/24"},
		{"10.244.3.0-24/nested", 24, "10.244.3.0/24"},
		{"10.244.3.0-240", 24, "10.244.3.0/24"}, // begins like the guard: it blocks 10.244.3.0-24
		{"10.244.3.0-25", 24, ""},
		{"10.244.3.0-024", 24, ""},
		{"10.244.3.1-24", 24, ""}, // not a subnet address of a /24
		{"010.244.3.0-24", 24, ""},
		{"x10.244.3.0-24", 24, ""},
		{"garbage", 24, ""},
		{"", 24, ""},
		{"fd00::-64", 24, ""},
		{"10.244.3.0", 24, ""},
		{"10.244.3.128-25", 25, "10.244.3.128/25"},
	} {
		got, ok := GuardedSubnet(tc.name, tc.bits)
		if tc.want == "" {
			if ok {
				t.Errorf("GuardedSubnet(%q, %d) = %s, want none", tc.name, tc.bits, got)
			}
			continue
		}
		if !ok || got != netip.MustParsePrefix(tc.want) {
			t.Errorf("GuardedSubnet(%q, %d) = %s %v, want %s", tc.name, tc.bits, got, ok, tc.want)
		}
	}
}

// FuzzGuardedSubnet checks GuardedSubnet against the guard's own
// definition: it names S exactly when the name begins with S's guard prefix.
func FuzzGuardedSubnet(f *testing.F) {
	for _, s := range []string{"10.244.3.0-24", "10.244.3.0-24&fd00:10:244:3::-64", "10.244.3.0-24x", "10.244.3.0-2", "garbage",
		"10.244.3.0-024", "1.2.3.4-32", "0.0.0.0-1", "255.255.255.255-32/x"} {
		f.Add(s, 24)
	}
	f.Fuzz(func(t *testing.T, name string, bits int) {
		sn, ok := GuardedSubnet(name, bits)
		if ok {
			if sn.Bits() != bits || !sn.Addr().Is4() || sn.Masked() != sn {
				t.Fatalf("GuardedSubnet(%q, %d) = %s: not a /%d IPv4 subnet", name, bits, sn, bits)
			}
			if !strings.HasPrefix(name, SubnetKey(sn, netip.Prefix{})) {
				t.Fatalf("GuardedSubnet(%q, %d) = %s, whose guard %q the name does not begin with", name, bits, sn, SubnetKey(sn, netip.Prefix{}))
			}
		}
		// A canonical lease key of that length always guards its subnet.
		if v4, _, err := ParseSubnetKey(name); err == nil && v4.Bits() == bits && (!ok || sn != v4) {
			t.Fatalf("lease key %q does not guard its own subnet %s (got %s %v)", name, v4, sn, ok)
		}
	})
}

func TestParseSubnetKeyWantsCanonicalForm(t *testing.T) {
	for _, bad := range []string{"10.244.3.0-024", "10.244.3.0-24&fd00:0::-64", "10.244.3.0-24&FD00::-64", "10.244.3.0-24&fd00::-064"} {
		if _, _, err := ParseSubnetKey(bad); err == nil {
			t.Errorf("ParseSubnetKey(%q) accepted a non-canonical key", bad)
		}
	}
}

func TestMalformedHolds(t *testing.T) {
	cfg := mustConfig(t, `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56"}`)
	for _, tc := range []struct {
		name, v4, v6 string
	}{
		{"10.244.3.0-24", "10.244.3.0/24", ""},
		{"10.244.3.0-24&fd00:10:244:3::-64", "10.244.3.0/24", "fd00:10:244:3::/64"},
		{"10.244.3.0-24&junk", "10.244.3.0/24", ""},
		{"junk", "", ""},
	} {
		v4, v6 := Malformed{Name: tc.name}.Holds(cfg)
		if v4.String() != prefixOrInvalid(tc.v4) || v6.String() != prefixOrInvalid(tc.v6) {
			t.Errorf("%q holds %s %s, want %s %s", tc.name, v4, v6, tc.v4, tc.v6)
		}
	}
}

func prefixOrInvalid(s string) string {
	if s == "" {
		return netip.Prefix{}.String()
	}
	return s
}

// A malformed key keeps its subnet from being picked, hinted or not; one
// that guards nothing does not count.
func TestPickSubnetsAvoidsMalformedKeys(t *testing.T) {
	cfg := mustConfig(t, `{"Network":"10.0.0.0/24","SubnetLen":28,"SubnetMin":"10.0.0.16","SubnetMax":"10.0.0.48"}`)
	hint := Hint{Subnet: netip.MustParsePrefix("10.0.0.32/28")}
	bad := []Malformed{{Name: "10.0.0.32-28"}, {Name: "10.0.0.16-28garbage"}, {Name: "garbage"}}
	for range 20 {
		v4, _, err := cfg.PickSubnets(nil, bad, self(1), hint)
		if err != nil || v4 != netip.MustParsePrefix("10.0.0.48/28") {
			t.Fatalf("PickSubnets = %s %v, want the only subnet no key holds, 10.0.0.48/28", v4, err)
		}
	}
	_, _, err := cfg.PickSubnets([]Lease{lease("10.0.0.48/28", "", 2, 7)}, bad, self(1), hint)
	want := "no free subnet in 10.0.0.0/24 (SubnetLen 28): 1 leased, 0 reserved, 3 malformed keys (logged with the command that deletes each)"
	if !errors.Is(err, ErrNoFreeSubnet) || err.Error() != want {
		t.Fatalf("got %v, want %q", err, want)
	}
}

func TestLeaseAttrsHostID(t *testing.T) {
	a := LeaseAttrs{PublicIP: netip.MustParseAddr("192.168.50.11"), BackendType: "host-gw", HostID: "3f2a9c1e5b7d8e60"}
	b, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"PublicIP":"192.168.50.11","PublicIPv6":null,"BackendType":"host-gw","HostID":"3f2a9c1e5b7d8e60"}`
	if string(b) != want {
		t.Errorf("got  %s\nwant %s", b, want)
	}
	var back LeaseAttrs
	if err := json.Unmarshal(b, &back); err != nil || !back.Equal(a) || back.HostID != a.HostID {
		t.Errorf("round trip: %+v %v", back, err)
	}
	other := a
	other.HostID = "another"
	if a.Equal(other) {
		t.Error("attributes with different host IDs compare equal")
	}
	// What upstream writes has none: it decodes to an empty HostID.
	var up LeaseAttrs
	if err := json.Unmarshal([]byte(`{"PublicIP":"192.168.50.12","PublicIPv6":null,"BackendType":"host-gw"}`), &up); err != nil || up.HostID != "" {
		t.Errorf("upstream lease: %+v %v", up, err)
	}
	if err := json.Unmarshal([]byte(`{"PublicIP":"192.168.50.12","HostID":5}`), &up); err == nil {
		t.Error("a HostID that is not a string was accepted")
	}
}
