package firewall

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestRuleSpecs(t *testing.T) {
	mp := netip.MustParsePrefix
	for _, tc := range []struct {
		name string
		spec chainSpec
		jump string
		want []string
	}{{
		name: "masq v4",
		spec: masqSpec(mp("10.244.0.0/16"), mp("10.244.3.0/24"), multicastV4, true, true),
		jump: `-m comment --comment "flanneld masq" -j FLANNEL-POSTRTG`,
		want: []string{
			`-m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN`,
			`-s 10.244.3.0/24 -d 10.244.0.0/16 -m comment --comment "flanneld masq" -j RETURN`,
			`-s 10.244.0.0/16 -d 10.244.3.0/24 -m comment --comment "flanneld masq" -j RETURN`,
			`! -s 10.244.0.0/16 -d 10.244.3.0/24 -m comment --comment "flanneld masq" -j RETURN`,
			`-s 10.244.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully`,
			`! -s 10.244.0.0/16 -d 10.244.0.0/16 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully`,
		},
	}, {
		name: "masq v4, subnet given as its gateway address, old iptables",
		spec: masqSpec(mp("10.244.0.0/16"), mp("10.244.3.1/24"), multicastV4, false, true),
		jump: `-m comment --comment "flanneld masq" -j FLANNEL-POSTRTG`,
		want: []string{
			`-m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN`,
			`-s 10.244.3.0/24 -d 10.244.0.0/16 -m comment --comment "flanneld masq" -j RETURN`,
			`-s 10.244.0.0/16 -d 10.244.3.0/24 -m comment --comment "flanneld masq" -j RETURN`,
			`! -s 10.244.0.0/16 -d 10.244.3.0/24 -m comment --comment "flanneld masq" -j RETURN`,
			`-s 10.244.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "flanneld masq" -j MASQUERADE`,
			`! -s 10.244.0.0/16 -d 10.244.0.0/16 -m comment --comment "flanneld masq" -j MASQUERADE`,
		},
	}, {
		name: "masq v6",
		spec: masqSpec(mp("fd00:10:244::/56"), mp("fd00:10:244:3::/64"), multicastV6, true, true),
		jump: `-m comment --comment "flanneld masq" -j FLANNEL-POSTRTG`,
		want: []string{
			`-m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN`,
			`-s fd00:10:244:3::/64 -d fd00:10:244::/56 -m comment --comment "flanneld masq" -j RETURN`,
			`-s fd00:10:244::/56 -d fd00:10:244:3::/64 -m comment --comment "flanneld masq" -j RETURN`,
			`! -s fd00:10:244::/56 -d fd00:10:244:3::/64 -m comment --comment "flanneld masq" -j RETURN`,
			`-s fd00:10:244::/56 ! -d ff00::/8 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully`,
			`! -s fd00:10:244::/56 -d fd00:10:244::/56 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully`,
		},
	}, {
		name: "masq off",
		spec: masqSpec(netip.Prefix{}, netip.Prefix{}, multicastV4, true, false),
		jump: `-m comment --comment "flanneld masq" -j FLANNEL-POSTRTG`,
	}, {
		name: "forward v4",
		spec: forwardSpec(mp("10.244.0.0/16"), true),
		jump: `-m comment --comment "flanneld forward" -j FLANNEL-FWD`,
		want: []string{
			`-s 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT`,
			`-d 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT`,
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ruleKey(tc.spec.jump); got != tc.jump {
				t.Errorf("jump:\n got %s\nwant %s", got, tc.jump)
			}
			if got := ruleKeys(tc.spec.rules); !slices.Equal(got, tc.want) {
				t.Errorf("rules:\n got %s\nwant %s", strings.Join(got, "\n     "), strings.Join(tc.want, "\n     "))
			}
		})
	}
}
