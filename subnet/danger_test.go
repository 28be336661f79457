package subnet

import (
	"net/netip"
	"strings"
	"testing"
)

// TestDangerousNetworksRefused: a default route, and any Network that
// overlaps address space no pod can have, is refused with the field, the
// prefix and what to do; networks next to those ranges, and unusual but
// harmless ones (class E, all of unique-local), are accepted.
func TestDangerousNetworksRefused(t *testing.T) {
	v6 := func(n string) string {
		return `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"` + n + `"}`
	}
	refused := []struct{ name, json, want string }{
		{"v4 default route", `{"Network":"0.0.0.0/0"}`,
			`Network: 0.0.0.0/0 is the default route (every address): the hosts would route their own traffic, etcd's included, into the overlay; use a private range that holds no host address, e.g. "10.244.0.0/16"`},
		{"v6 default route", v6("::/0"), "IPv6Network: ::/0 is the default route (every address)"},
		{"v4 first half", `{"Network":"0.0.0.0/1"}`, `Network: 0.0.0.0/1 overlaps 0.0.0.0/8, "this network" addresses, which cannot be pod addresses`},
		{"v4 second half", `{"Network":"128.0.0.0/1"}`, "Network: 128.0.0.0/1 overlaps 169.254.0.0/16, link-local addresses (cloud metadata services live at 169.254.169.254)"},
		{"v4 /2 with loopback", `{"Network":"64.0.0.0/2"}`, "Network: 64.0.0.0/2 overlaps 127.0.0.0/8, loopback addresses"},
		{"v4 /2 with multicast", `{"Network":"192.0.0.0/2"}`, "Network: 192.0.0.0/2 overlaps 224.0.0.0/4, multicast addresses"},
		{"loopback", `{"Network":"127.0.0.0/16"}`, "Network: 127.0.0.0/16 overlaps 127.0.0.0/8, loopback addresses"},
		{"this network", `{"Network":"0.0.0.0/16"}`, `overlaps 0.0.0.0/8, "this network" addresses`},
		{"link-local", `{"Network":"169.254.0.0/16"}`, "overlaps 169.254.0.0/16, link-local"},
		{"multicast part", `{"Network":"239.1.0.0/16"}`, "overlaps 224.0.0.0/4, multicast"},
		{"v6 first half", v6("::/1"), "IPv6Network: ::/1 overlaps ::/127, the unspecified and loopback addresses"},
		{"v6 second half", v6("8000::/1"), "IPv6Network: 8000::/1 overlaps fe80::/10, link-local addresses"},
		{"v6 link-local", v6("fe80::/56"), "IPv6Network: fe80::/56 overlaps fe80::/10"},
		{"v6 multicast", v6("ff05::/56"), "IPv6Network: ff05::/56 overlaps ff00::/8, multicast"},
		{"v6 around loopback", v6("::/64"), "overlaps ::/127"},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := ParseConfig([]byte(tc.json))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ParseConfig(%s):\n got %v\nwant %q", tc.json, err, tc.want)
			}
		})
	}
	for _, ok := range []string{
		`{"Network":"10.0.0.0/8"}`, `{"Network":"1.0.0.0/8"}`, `{"Network":"126.0.0.0/8"}`, `{"Network":"128.0.0.0/8"}`,
		`{"Network":"169.253.0.0/16"}`, `{"Network":"240.0.0.0/4","SubnetLen":24}`, `{"Network":"32.0.0.0/3","SubnetLen":24}`,
		v6("fc00::/7"), v6("fd00::/8"), v6("2001:db8::/32"), v6("::10/124"), v6("fe00::/9"),
	} {
		if _, _, err := ParseConfig([]byte(ok)); err != nil {
			t.Errorf("ParseConfig(%s): %v", ok, err)
		}
	}
}

func TestNetworkHolding(t *testing.T) {
	c, _, err := ParseConfig([]byte(`{"Network":"192.168.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/48"}`))
	if err != nil {
		t.Fatal(err)
	}
	v4only, _, _ := ParseConfig([]byte(`{"Network":"192.168.0.0/16"}`))
	for _, tc := range []struct {
		c     *Config
		addr  string
		field string
	}{
		{c, "192.168.50.11", "Network"},
		{c, "::ffff:192.168.50.11", "Network"},
		{c, "10.0.0.1", ""},
		{c, "fd00::1", "IPv6Network"},
		{c, "fd00:1::1", ""},
		{v4only, "fd00::1", ""},
		{v4only, "192.168.0.0", "Network"},
	} {
		field, n, ok := tc.c.NetworkHolding(netip.MustParseAddr(tc.addr))
		if field != tc.field || ok != (tc.field != "") || (ok && !n.Contains(netip.MustParseAddr(tc.addr).Unmap())) {
			t.Errorf("%s in %s: %q %s %v, want %q", tc.addr, tc.c.Network, field, n, ok, tc.field)
		}
	}
	if _, _, ok := c.NetworkHolding(netip.Addr{}); ok {
		t.Error("the invalid address is held")
	}
}
