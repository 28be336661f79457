package subnet

import (
	"encoding/json"
	"math/big"
	"net/netip"
	"testing"
)

func TestSubnetKeyRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		v4, v6, key string
	}{
		{"10.244.3.0/24", "", "10.244.3.0-24"},
		{"10.244.3.0/24", "fd00:10:244:3::/64", "10.244.3.0-24&fd00:10:244:3::-64"},
		{"10.0.0.4/30", "fd00::40/122", "10.0.0.4-30&fd00::40-122"},
	} {
		v4 := netip.MustParsePrefix(tc.v4)
		var v6 netip.Prefix
		if tc.v6 != "" {
			v6 = netip.MustParsePrefix(tc.v6)
		}
		if got := SubnetKey(v4, v6); got != tc.key {
			t.Errorf("SubnetKey = %q, want %q", got, tc.key)
		}
		g4, g6, err := ParseSubnetKey(tc.key)
		if err != nil || g4 != v4 || g6 != v6 {
			t.Errorf("ParseSubnetKey(%q) = %v %v %v", tc.key, g4, g6, err)
		}
	}
	for _, bad := range []string{"", "10.244.3.0", "10.244.3.0-", "10.244.3.1-24", "10.244.3.0-33", "300.1.1.0-24",
		"10.244.3.0-24&", "10.244.3.0-24&fd00::1-64", "10.244.3.0-24&10.0.0.0-8", "fd00::-64", "x10.244.3.0-24",
		// other spellings of a valid key: they would alias it
		"10.244.3.0-024", "10.244.3.0-24&FD00:10:244:3::-64", "10.244.3.0-24&fd00:0010:244:3::-64",
		"10.244.3.0-24&fd00:10:244:3:0:0:0:0-64", "10.244.3.0-24&fd00:10:244:3::-064"} {
		if _, _, err := ParseSubnetKey(bad); err == nil {
			t.Errorf("ParseSubnetKey(%q) accepted", bad)
		}
	}
}

func TestLeaseAttrsJSONIsUpstreamShape(t *testing.T) {
	a := LeaseAttrs{PublicIP: netip.MustParseAddr("192.168.50.11"), BackendType: "vxlan", BackendData: json.RawMessage(`{"VNI":1,"VtepMAC":"0a:58:0a:f4:03:00"}`)}
	b, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"PublicIP":"192.168.50.11","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0a:58:0a:f4:03:00"}}`
	if string(b) != want {
		t.Errorf("got  %s\nwant %s", b, want)
	}
	a.PublicIPv6 = netip.MustParseAddr("fd00:50::11")
	a.BackendV6Data = json.RawMessage(`{"VNI":1,"VtepMAC":"0a:58:0a:f4:03:01"}`)
	b, _ = json.Marshal(a)
	want = `{"PublicIP":"192.168.50.11","PublicIPv6":"fd00:50::11","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0a:58:0a:f4:03:00"},"BackendV6Data":{"VNI":1,"VtepMAC":"0a:58:0a:f4:03:01"}}`
	if string(b) != want {
		t.Errorf("got  %s\nwant %s", b, want)
	}
	var back LeaseAttrs
	if err := json.Unmarshal(b, &back); err != nil || !back.Equal(a) {
		t.Errorf("round trip: %+v %v", back, err)
	}
	hostgw := `{"PublicIP":"192.168.50.12","PublicIPv6":null,"BackendType":"host-gw"}`
	b, _ = json.Marshal(LeaseAttrs{PublicIP: netip.MustParseAddr("192.168.50.12"), BackendType: "host-gw"})
	if string(b) != hostgw {
		t.Errorf("host-gw: got %s want %s", b, hostgw)
	}
}

func TestLeaseAttrsRejectsBadAddresses(t *testing.T) {
	for _, bad := range []string{`{"PublicIP":"fd00::1"}`, `{"PublicIP":"nope"}`, `{}`, `{"PublicIP":"1.2.3.4","PublicIPv6":"1.2.3.4"}`, `[]`} {
		var a LeaseAttrs
		if err := json.Unmarshal([]byte(bad), &a); err == nil {
			t.Errorf("accepted %s", bad)
		}
	}
	var a LeaseAttrs // upstream hosts write null BackendData for host-gw sometimes
	if err := json.Unmarshal([]byte(`{"PublicIP":"1.2.3.4","PublicIPv6":null,"BackendType":"host-gw","BackendData":null}`), &a); err != nil || a.BackendData != nil {
		t.Errorf("null BackendData: %v %s", err, a.BackendData)
	}
}

func TestIPMath(t *testing.T) {
	n := netip.MustParsePrefix("10.244.0.0/16")
	if got := lastSubnet(n, 24); got.String() != "10.244.255.0/24" {
		t.Errorf("lastSubnet = %s", got)
	}
	if got := nthSubnet(n.Addr(), 24, big.NewInt(3)); got.String() != "10.244.3.0/24" {
		t.Errorf("nthSubnet = %s", got)
	}
	if got := subnetIndex(netip.MustParseAddr("10.244.1.0"), netip.MustParseAddr("10.244.255.0"), 24); got.Int64() != 254 {
		t.Errorf("subnetIndex = %s", got)
	}
	n6 := netip.MustParsePrefix("fd00::/32")
	if got := lastSubnet(n6, 64); got.String() != "fd00:0:ffff:ffff::/64" {
		t.Errorf("lastSubnet v6 = %s", got)
	}
	if got := FirstHost(netip.MustParsePrefix("fd00:10:244:3::/64")); got.String() != "fd00:10:244:3::1" {
		t.Errorf("FirstHost v6 = %s", got)
	}
}
