package firewall

import (
	"net/netip"
	"testing"
)

func TestRuleConfigValidate(t *testing.T) {
	mp := netip.MustParsePrefix
	for _, tc := range []struct {
		name string
		cfg  RuleConfig
		ok   bool
	}{
		{"v4", RuleConfig{Network: mp("10.244.0.0/16"), Subnet: mp("10.244.3.0/24")}, true},
		{"v4 gateway form", RuleConfig{Network: mp("10.244.0.0/16"), Subnet: mp("10.244.3.1/24")}, true},
		{"dual", RuleConfig{Network: mp("10.244.0.0/16"), Subnet: mp("10.244.3.0/24"),
			IPv6Network: mp("fd00::/56"), IPv6Subnet: mp("fd00:0:0:3::/64")}, true},
		{"no v4", RuleConfig{IPv6Network: mp("fd00::/56"), IPv6Subnet: mp("fd00:0:0:3::/64")}, false},
		{"subnet outside", RuleConfig{Network: mp("10.244.0.0/16"), Subnet: mp("10.245.3.0/24")}, false},
		{"subnet wider", RuleConfig{Network: mp("10.244.0.0/16"), Subnet: mp("10.0.0.0/8")}, false},
		{"v6 in v4 fields", RuleConfig{Network: mp("fd00::/56"), Subnet: mp("fd00:0:0:3::/64")}, false},
		{"v6 half set", RuleConfig{Network: mp("10.244.0.0/16"), Subnet: mp("10.244.3.0/24"), IPv6Network: mp("fd00::/56")}, false},
		{"v4 in v6 fields", RuleConfig{Network: mp("10.244.0.0/16"), Subnet: mp("10.244.3.0/24"),
			IPv6Network: mp("10.0.0.0/8"), IPv6Subnet: mp("10.0.0.0/24")}, false},
	} {
		if err := tc.cfg.validate(); (err == nil) != tc.ok {
			t.Errorf("%s: validate() = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}
