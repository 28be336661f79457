package subnet

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"reflect"
	"testing"
)

// Fuzz targets for the decoders of what other hosts and operators write
// into etcd: lease keys, lease values and the net-conf. Each checks the
// decoder's promises on whatever it accepts and, where there is a writer,
// that writing and reading again gives the same value back. Run one with
//
//	go test -run='^$' -fuzz=FuzzParseSubnetKey -fuzztime=20s ./subnet

func FuzzParseSubnetKey(f *testing.F) {
	for _, s := range []string{
		"10.244.3.0-24", "10.244.3.0-24&fd00:10:244:3::-64", "0.0.0.0-0", "10.244.3.0-24&::-0",
		"10.244.3.1-24", "10.244.3.0-33", "10.244.3.0-024", "010.244.3.0-24", "10.244.3.0-24&FD00::-64",
		"10.244.3.0-24&::ffff:10.0.0.0-120", "10.244.3.0-24&fd00::-129", "10.244.3.0-99999999999999999999", "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v4, v6, err := ParseSubnetKey(s)
		if err != nil {
			return
		}
		if !v4.IsValid() || !v4.Addr().Is4() || v4.Masked() != v4 {
			t.Fatalf("%q: IPv4 part %v is not an IPv4 subnet address", s, v4)
		}
		if v6.IsValid() && (!v6.Addr().Is6() || v6.Addr().Is4In6() || v6.Addr().Zone() != "" || v6.Masked() != v6) {
			t.Fatalf("%q: IPv6 part %v is not an IPv6 subnet address", s, v6)
		}
		k := SubnetKey(v4, v6)
		a, b, err := ParseSubnetKey(k)
		if err != nil || a != v4 || b != v6 {
			t.Fatalf("%q -> %s %s -> %q -> %s %s %v", s, v4, v6, k, a, b, err)
		}
		if SubnetKey(a, b) != k {
			t.Fatalf("%q: SubnetKey is not stable: %q then %q", s, k, SubnetKey(a, b))
		}
	})
}

// FuzzDecodeLease: a lease read from etcd, written back the way we write
// ours (key from SubnetKey, value from LeaseAttrs' MarshalJSON), reads back
// as the same lease, and the second writing is the first byte for byte.
func FuzzDecodeLease(f *testing.F) {
	for _, c := range []struct{ key, value string }{
		{"/coreos.com/network/subnets/10.244.3.0-24", `{"PublicIP":"192.168.50.11","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0a:58:0a:f4:03:00"}}`},
		{"/coreos.com/network/subnets/10.244.3.0-24&fd00:10:244:3::-64", `{"PublicIP":"192.168.50.11","PublicIPv6":"fd00:50::11","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0a:58:0a:f4:03:00"},"BackendV6Data":{"VNI":1,"VtepMAC":"0a:58:0a:f4:03:01"}}`},
		{"/coreos.com/network/subnets/10.244.9.0-24", `{"PublicIP":"192.168.50.99","BackendType":"host-gw"}`},
		{"/coreos.com/network/subnets/10.244.9.0-24", `{"PublicIP":"192.168.50.99","BackendType":"udp","BackendData":null}`},
		{"/coreos.com/network/subnets/10.244.9.0-24", `{"PublicIP":"192.168.50.99","BackendData":{"a":"<&>\u2028"}}`},
		{"/coreos.com/network/subnets/10.244.9.0-24", `{"publicip":"192.168.50.99","backenddata":[1, 2 ,3]}`},
		{"/coreos.com/network/subnets/10.244.9.0-24", `{"PublicIP":"fd00::1"}`},
		{"/coreos.com/network/subnets/10.244.9.0-24", `{"PublicIP":"192.168.50.99","PublicIPv6":"fe80::1%eth0"}`},
		{"/coreos.com/network/subnets/10.244.9.0-24", `{"PublicIP":"192.168.50.99","PublicIPv6":""}`},
		{"/coreos.com/network/subnets/garbage", `{}`},
	} {
		f.Add(c.key, []byte(c.value))
	}
	f.Fuzz(func(t *testing.T, key string, value []byte) {
		l, err := DecodeLease(key, value, 7, 9)
		if err != nil {
			return
		}
		if l.EtcdLeaseID != 7 || l.ModRevision != 9 {
			t.Fatalf("lease id %d, mod revision %d", l.EtcdLeaseID, l.ModRevision)
		}
		if !l.Attrs.PublicIP.Is4() {
			t.Fatalf("PublicIP %v is not IPv4", l.Attrs.PublicIP)
		}
		if a := l.Attrs.PublicIPv6; a.IsValid() && (!a.Is6() || a.Is4In6() || a.Zone() != "") {
			t.Fatalf("PublicIPv6 %v is not a plain IPv6 address", a)
		}
		val, err := json.Marshal(l.Attrs)
		if err != nil {
			t.Fatalf("writing %+v: %v", l.Attrs, err)
		}
		l2, err := DecodeLease("/coreos.com/network/subnets/"+l.Key(), val, 7, 9)
		if err != nil {
			t.Fatalf("our own writing %s of %q does not read back: %v", val, value, err)
		}
		if l2.Subnet != l.Subnet || l2.IPv6Subnet != l.IPv6Subnet || !l2.Attrs.Equal(l.Attrs) || !l.Attrs.Equal(l2.Attrs) {
			t.Fatalf("round trip changed the lease:\n%+v\n%+v\n(value %q, written %s)", l, l2, value, val)
		}
		val2, err := json.Marshal(l2.Attrs)
		if err != nil || !bytes.Equal(val, val2) {
			t.Fatalf("second writing differs:\n%s\n%s %v", val, val2, err)
		}
	})
}

// FuzzParseConfig: an accepted net-conf keeps every promise of Config
// (prefixes of the right family, lengths in range, a non-empty subnet
// range inside the network, no default route), and the effective config
// that `flanneld config check` prints parses to the same config.
func FuzzParseConfig(f *testing.F) {
	for _, s := range []string{
		`{"Network":"10.244.0.0/16"}`,
		`{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","VNI":4,"Port":4789}}`,
		`{"network":"10.1.0.0/16","subnetlen":20,"BACKEND":{"type":"host-gw"}}`,
		`{"Network":"10.0.0.0/8","SubnetLen":20,"SubnetMin":"10.10.0.0","SubnetMax":"10.99.0.0/20","Backend":{"Type":"udp","Port":7890}}`,
		`{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","IPv6SubnetLen":64}`,
		`{"Network":"10.244.0.0/16","EnableIPv6":false,"IPv6Network":"fd00::/56"}`,
		`{"Network":"10.0.0.0/28"}`, `{"Network":"0.0.0.0/0"}`, `{"Network":"240.0.0.0/4"}`,
		`{"Network":"10.244.0.0/16","EnableIPv4":false}`, `{"Network":"10.244.0.0/16","Backend":null,"Extra":[1]}`,
		`{"Network":"10.244.0.0/16","Backend":{"Type":""}}`, `{"Network":"10.244.0.0/16","Backend":{ "Type" : "vxlan" , "VNI" : 1 }}`,
		`[]`, `null`, `{"Network":"10.244.0.0/16","SubnetMin":"10.244.9.0","SubnetMax":"10.244.3.0"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, _, err := ParseConfig(data)
		if err != nil {
			return
		}
		checkFamily(t, "", c.Network, c.SubnetLen, c.SubnetMin, c.SubnetMax, 28, 30, true)
		if c.EnableIPv6 {
			checkFamily(t, "IPv6", c.IPv6Network, c.IPv6SubnetLen, c.IPv6SubnetMin, c.IPv6SubnetMax, 124, 126, false)
		} else if c.IPv6Network.IsValid() {
			t.Fatalf("IPv6 off but IPv6Network %s", c.IPv6Network)
		}
		if c.BackendType == "" || len(c.Backend) == 0 || !json.Valid(c.Backend) {
			t.Fatalf("backend %q %q", c.BackendType, c.Backend)
		}
		out, err := c.Effective(nil)
		if err != nil {
			t.Fatalf("Effective: %v", err)
		}
		c2, warnings, err := ParseConfig(out)
		if err != nil || len(warnings) != 0 {
			t.Fatalf("the effective config of %q does not parse cleanly: %v %v\n%s", data, err, warnings, out)
		}
		if !sameConfig(c, c2) {
			t.Fatalf("the effective config parses to another config:\n%+v\n%+v", c, c2)
		}
	})
}

func checkFamily(t *testing.T, name string, n netip.Prefix, l int, lo, hi netip.Addr, minBits, maxLen int, is4 bool) {
	t.Helper()
	if !n.IsValid() || n.Addr().Is4() != is4 || n.Addr().Is4In6() || n.Masked() != n || n.Bits() == 0 || n.Bits() > minBits {
		t.Fatalf("%sNetwork %v", name, n)
	}
	if l < n.Bits()+2 || l > maxLen {
		t.Fatalf("%sSubnetLen %d for %s", name, l, n)
	}
	for _, a := range []netip.Addr{lo, hi} {
		p := netip.PrefixFrom(a, l)
		if !n.Contains(a) || p.Masked() != p {
			t.Fatalf("%sSubnetMin/Max %s is not a /%d subnet of %s", name, a, l, n)
		}
	}
	if hi.Less(lo) {
		t.Fatalf("%sSubnetMax %s below SubnetMin %s", name, hi, lo)
	}
}

func sameConfig(a, b *Config) bool {
	return a.EnableIPv4 == b.EnableIPv4 && a.EnableIPv6 == b.EnableIPv6 &&
		a.Network == b.Network && a.SubnetLen == b.SubnetLen && a.SubnetMin == b.SubnetMin && a.SubnetMax == b.SubnetMax &&
		a.IPv6Network == b.IPv6Network && a.IPv6SubnetLen == b.IPv6SubnetLen && a.IPv6SubnetMin == b.IPv6SubnetMin && a.IPv6SubnetMax == b.IPv6SubnetMax &&
		a.BackendType == b.BackendType && jsonEqual(a.Backend, b.Backend)
}

// FuzzLeaseAttrsPlain: whatever readPlain reads, encoding/json reads the
// same (it falls back to encoding/json for anything else).
func FuzzLeaseAttrsPlain(f *testing.F) {
	for _, v := range []string{
		`{"PublicIP":"192.168.50.11","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0a:58:0a:f4:03:00"}}`,
		`{"PublicIP":"192.168.50.11","PublicIPv6":"fd00:50::11","BackendType":"vxlan","BackendData":{"VNI":1},"BackendV6Data":null,"HostID":"h"}`,
		`{"PublicIP":"1.2.3.4","PublicIP":"5.6.7.8","BackendData":[1, 2],"BackendData":"x"}`,
		`{"publicip":"192.168.50.99"}`,
	} {
		f.Add([]byte(v))
	}
	f.Fuzz(func(t *testing.T, value []byte) {
		var got wireAttrs
		if !got.readPlain(value) {
			return
		}
		var want wireAttrs
		if err := json.Unmarshal(value, &want); err != nil {
			t.Fatalf("readPlain read %q, encoding/json refuses it: %v", value, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%q: readPlain %+v, encoding/json %+v", value, got, want)
		}
	})
}
