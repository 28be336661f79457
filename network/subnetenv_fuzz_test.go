package network

import (
	"net/netip"
	"testing"
)

// FuzzParseSubnetEnv: whatever the subnet file holds (it survives the
// daemon, and anyone with root can edit it), an accepted file has each
// prefix in its own family, its hint asks only for subnet addresses of
// the right family, and a complete file (both networks and subnets that
// go together) reads back the same after writing it. Run with
//
//	go test -run='^$' -fuzz=FuzzParseSubnetEnv -fuzztime=20s ./network
func FuzzParseSubnetEnv(f *testing.F) {
	for _, s := range []string{
		"FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_IPV6_NETWORK=fd00:10:244::/56\nFLANNEL_IPV6_SUBNET=fd00:10:244:3::1/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
		"FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_MTU=1500\nFLANNEL_IPMASQ=false\n",
		"  FLANNEL_SUBNET=10.244.3.1/24  \r\n# comment\nexport X=1\n",
		"FLANNEL_SUBNET=fd00:10:244:3::1/64\n", "FLANNEL_IPV6_SUBNET=10.244.3.1/24\n",
		"FLANNEL_MTU=+1450\nFLANNEL_IPMASQ=T\n", "FLANNEL_MTU=-1\n", "FLANNEL_SUBNET=garbage\n", "",
		"FLANNEL_NETWORK=::ffff:10.0.0.0/104\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := ParseSubnetEnv(data)
		if err != nil {
			return
		}
		for _, p := range []struct {
			name string
			p    netip.Prefix
			is4  bool
		}{{"FLANNEL_NETWORK", e.Network, true}, {"FLANNEL_SUBNET", e.Subnet, true},
			{"FLANNEL_IPV6_NETWORK", e.IPv6Network, false}, {"FLANNEL_IPV6_SUBNET", e.IPv6Subnet, false}} {
			if p.p.IsValid() && (p.p.Addr().Is4() != p.is4 || p.p.Addr().Is4In6()) {
				t.Fatalf("%s=%s accepted from %q", p.name, p.p, data)
			}
		}
		h := e.Hint()
		if (h.Subnet.IsValid() && (!h.Subnet.Addr().Is4() || h.Subnet.Masked() != h.Subnet)) ||
			(h.IPv6Subnet.IsValid() && (!h.IPv6Subnet.Addr().Is6() || h.IPv6Subnet.Masked() != h.IPv6Subnet)) {
			t.Fatalf("hint %+v from %q", h, data)
		}
		if !e.Network.IsValid() || !e.Subnet.IsValid() || e.IPv6Network.IsValid() != e.IPv6Subnet.IsValid() {
			return // not a file we would write
		}
		back, err := ParseSubnetEnv(e.Bytes())
		if err != nil || back != e {
			t.Fatalf("%+v written as\n%s\nreads back as %+v %v", e, e.Bytes(), back, err)
		}
	})
}
