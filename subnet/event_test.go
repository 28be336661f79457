package subnet

import (
	"net/netip"
	"sort"
	"strings"
	"testing"
)

// events renders a batch as sorted "+subnet" and "-subnet" words.
func events(batch []Event) string {
	var w []string
	for _, e := range batch {
		sign := "+"
		if e.Type == EventRemoved {
			sign = "-"
		}
		w = append(w, sign+e.Lease.String())
	}
	sort.Strings(w)
	return strings.Join(w, " ")
}

func TestDiffLeases(t *testing.T) {
	a, b, c := lease("10.244.1.0/24", "", 1, 7), lease("10.244.2.0/24", "", 2, 8), lease("10.244.3.0/24", "", 3, 0)
	known := map[string]Lease{}
	steps := []struct {
		name   string
		leases []Lease
		want   string
	}{
		{"first list", []Lease{a, b}, "+10.244.1.0/24 +10.244.2.0/24"},
		{"nothing changed", []Lease{b, a}, ""},
		{"one left, one joined", []Lease{a, c}, "+10.244.3.0/24 -10.244.2.0/24"},
		{"attributes changed", []Lease{a, withBackend(c, "vxlan")}, "+10.244.3.0/24"},
		{"etcd lease changed (re-acquired)", []Lease{withEtcdLease(a, 9), withBackend(c, "vxlan")}, "+10.244.1.0/24"},
		{"all gone", nil, "-10.244.1.0/24 -10.244.3.0/24"},
	}
	for _, s := range steps {
		if got := events(DiffLeases(known, s.leases)); got != s.want {
			t.Fatalf("%s: events %q, want %q", s.name, got, s.want)
		}
		if len(known) != len(s.leases) {
			t.Fatalf("%s: known holds %d leases, want %d", s.name, len(known), len(s.leases))
		}
	}
}

func withBackend(l Lease, typ string) Lease { l.Attrs.BackendType = typ; return l }

func withEtcdLease(l Lease, id int64) Lease { l.EtcdLeaseID = id; return l }

func TestDecodeLease(t *testing.T) {
	l, err := DecodeLease("/coreos.com/network/subnets/10.244.3.0-24&fd00:10:244:3::-64",
		[]byte(`{"PublicIP":"192.168.50.11","PublicIPv6":"fd00:50::11","BackendType":"vxlan"}`), 0x6a, 42)
	if err != nil {
		t.Fatal(err)
	}
	if l.Subnet != netip.MustParsePrefix("10.244.3.0/24") || l.IPv6Subnet != netip.MustParsePrefix("fd00:10:244:3::/64") ||
		l.Attrs.PublicIP != netip.MustParseAddr("192.168.50.11") || l.Attrs.BackendType != "vxlan" ||
		l.EtcdLeaseID != 0x6a || l.ModRevision != 42 || l.Reserved() {
		t.Errorf("decoded %+v", l)
	}
	if l, err := DecodeLease("/p/subnets/10.244.4.0-24", []byte(`{"PublicIP":"192.168.50.12"}`), 0, 1); err != nil || !l.Reserved() {
		t.Errorf("reservation: %+v, %v", l, err)
	}
	for _, tc := range []struct{ key, value, want string }{
		{"/p/subnets/garbage", `{"PublicIP":"192.168.50.11"}`, `subnet key "garbage" is not of the form`},
		{"/p/subnets/10.244.3.0-24", `x`, "value is not lease JSON: invalid character 'x'"},
		{"/p/subnets/10.244.3.0-24", `{"PublicIP":"fd00::1"}`, `value is not lease JSON: PublicIP "fd00::1" is not an IPv4 address`},
	} {
		if _, err := DecodeLease(tc.key, []byte(tc.value), 1, 1); err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("DecodeLease(%s, %s) = %v, want %s...", tc.key, tc.value, err, tc.want)
		}
	}
}
