package subnet

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestParseConfigDefaults(t *testing.T) {
	tests := []struct {
		name, json        string
		network           string
		subnetLen         int
		min, max, backend string
		v6net             string
		v6len             int
		v6min, v6max      string
	}{
		{name: "slash16", json: `{"Network":"10.244.0.0/16"}`, network: "10.244.0.0/16", subnetLen: 24, min: "10.244.1.0", max: "10.244.255.0", backend: "udp"},
		{name: "slash22 still 24", json: `{"Network":"10.0.0.0/22"}`, network: "10.0.0.0/22", subnetLen: 24, min: "10.0.1.0", max: "10.0.3.0", backend: "udp"},
		{name: "slash23 prefix+2", json: `{"Network":"10.0.0.0/23"}`, network: "10.0.0.0/23", subnetLen: 25, min: "10.0.0.128", max: "10.0.1.128", backend: "udp"},
		{name: "slash28", json: `{"Network":"10.0.0.0/28"}`, network: "10.0.0.0/28", subnetLen: 30, min: "10.0.0.4", max: "10.0.0.12", backend: "udp"},
		{name: "keys any case", json: `{"network":"10.1.0.0/16","subnetlen":20,"BACKEND":{"type":"host-gw"}}`, network: "10.1.0.0/16", subnetLen: 20, min: "10.1.16.0", max: "10.1.240.0", backend: "host-gw"},
		{name: "explicit range", json: `{"Network":"10.0.0.0/8","SubnetLen":20,"SubnetMin":"10.10.0.0","SubnetMax":"10.99.0.0","Backend":{"Type":"udp","Port":7890}}`,
			network: "10.0.0.0/8", subnetLen: 20, min: "10.10.0.0", max: "10.99.0.0", backend: "udp"},
		{name: "dual stack", json: `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56"}`,
			network: "10.244.0.0/16", subnetLen: 24, min: "10.244.1.0", max: "10.244.255.0", backend: "udp",
			v6net: "fd00:10:244::/56", v6len: 64, v6min: "fd00:10:244:1::", v6max: "fd00:10:244:ff::"},
		{name: "dual stack small v6", json: `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/120"}`,
			network: "10.244.0.0/16", subnetLen: 24, min: "10.244.1.0", max: "10.244.255.0", backend: "udp",
			v6net: "fd00::/120", v6len: 122, v6min: "fd00::40", v6max: "fd00::c0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, _, err := ParseConfig([]byte(tc.json))
			if err != nil {
				t.Fatalf("ParseConfig: %v", err)
			}
			if c.Network.String() != tc.network || c.SubnetLen != tc.subnetLen || c.SubnetMin.String() != tc.min || c.SubnetMax.String() != tc.max || c.BackendType != tc.backend {
				t.Errorf("got %s len %d min %s max %s backend %s", c.Network, c.SubnetLen, c.SubnetMin, c.SubnetMax, c.BackendType)
			}
			if !c.EnableIPv4 {
				t.Error("EnableIPv4 should default to true")
			}
			if tc.v6net != "" {
				if c.IPv6Network.String() != tc.v6net || c.IPv6SubnetLen != tc.v6len || c.IPv6SubnetMin.String() != tc.v6min || c.IPv6SubnetMax.String() != tc.v6max {
					t.Errorf("v6: got %s len %d min %s max %s", c.IPv6Network, c.IPv6SubnetLen, c.IPv6SubnetMin, c.IPv6SubnetMax)
				}
			} else if c.EnableIPv6 || c.IPv6Network.IsValid() {
				t.Error("IPv6 should be off")
			}
		})
	}
}

func TestParseConfigErrors(t *testing.T) {
	tests := []struct{ name, json, want string }{
		{"not json", `{"Network":`, "not a JSON object"},
		{"array", `[1]`, "not a JSON object"},
		{"bool as string", `{"Network":"10.244.0.0/16","EnableIPv6":"yes"}`, "EnableIPv6: expected true or false, got a JSON string"},
		{"missing network", `{"SubnetLen":24}`, `Network: missing; set it to the pod network in CIDR form, e.g. "Network": "10.244.0.0/16"`},
		{"bad cidr", `{"Network":"10.244.0.0/33"}`, `Network: "10.244.0.0/33" is not a CIDR prefix`},
		{"no length", `{"Network":"10.244.0.0"}`, `Network: "10.244.0.0" is not a CIDR prefix`},
		{"v6 in Network", `{"Network":"fd00::/48"}`, "Network: fd00::/48 is not an IPv4 prefix; IPv6 pod networks go in IPv6Network"},
		{"host bits", `{"Network":"10.244.1.0/16"}`, "Network: 10.244.1.0/16 has bits set beyond its /16 prefix; did you mean 10.244.0.0/16?"},
		{"too small", `{"Network":"10.0.0.0/29"}`, "Network: 10.0.0.0/29 is too small; the smallest usable IPv4 network is a /28"},
		{"subnetlen too big", `{"Network":"10.0.0.0/16","SubnetLen":31}`, "SubnetLen: 31 is out of range; it must be between 18 (the Network's length + 2) and 30"},
		{"subnetlen too small", `{"Network":"10.0.0.0/16","SubnetLen":17}`, "SubnetLen: 17 leaves fewer than 4 subnets in 10.0.0.0/16; use at least 18"},
		{"subnetlen string", `{"Network":"10.0.0.0/16","SubnetLen":"24"}`, "SubnetLen: expected a number, got a JSON string"},
		{"min outside", `{"Network":"10.244.0.0/16","SubnetMin":"10.245.0.0"}`, "SubnetMin: 10.245.0.0 is outside 10.244.0.0/16"},
		{"min unaligned", `{"Network":"10.244.0.0/16","SubnetMin":"10.244.3.5"}`, "SubnetMin: 10.244.3.5 is not the start of a /24 subnet; use 10.244.3.0"},
		{"max garbage", `{"Network":"10.244.0.0/16","SubnetMax":"ten"}`, `SubnetMax: "ten" is not an address`},
		{"max below min", `{"Network":"10.244.0.0/16","SubnetMin":"10.244.9.0","SubnetMax":"10.244.3.0"}`, "SubnetMax (10.244.3.0) is below SubnetMin (10.244.9.0)"},
		{"backend not object", `{"Network":"10.244.0.0/16","Backend":"vxlan"}`, `Backend: must be an object like {"Type": "vxlan"}`},
		{"ipv6 only", `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00::/56"}`, "EnableIPv4: IPv6-only networks are not supported yet"},
		{"v6 missing", `{"Network":"10.244.0.0/16","EnableIPv6":true}`, "IPv6Network: missing while EnableIPv6 is true"},
		{"v6 is v4", `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"10.1.0.0/16"}`, "IPv6Network: 10.1.0.0/16 is not an IPv6 prefix"},
		{"v6 too small", `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/125"}`, "IPv6Network: fd00::/125 is too small; the smallest usable IPv6 network is a /124"},
		{"v6 len too big", `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/56","IPv6SubnetLen":127}`, "IPv6SubnetLen: 127 is out of range; it must be between 58 (the Network's length + 2) and 126"},
		{"v6 len too small", `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/56","IPv6SubnetLen":57}`, "IPv6SubnetLen: 57 leaves fewer than 4 subnets in fd00::/56; use at least 58"},
		{"v6 min unaligned", `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/56","IPv6SubnetMin":"fd00:0:0:3::1"}`, "IPv6SubnetMin: fd00:0:0:3::1 is not the start of a /64 subnet; use fd00:0:0:3::"},
		{"v6 min outside", `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/56","IPv6SubnetMin":"fd01::"}`, "IPv6SubnetMin: fd01:: is outside fd00::/56"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := ParseConfig([]byte(tc.json))
			if err == nil {
				t.Fatalf("no error; want %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q\nwant it to contain %q", err, tc.want)
			}
		})
	}
}

func TestParseConfigWarnings(t *testing.T) {
	_, w, err := ParseConfig([]byte(`{"Network":"10.244.0.0/16","Netwrok":"x","IPv6Network":"fd00::/56","Networks":["10.1.0.0/16"]}`))
	if err != nil {
		t.Fatal(err)
	}
	all := strings.Join(w, "\n")
	for _, want := range []string{`unknown field "Netwrok" is ignored; the closest known field is "Network"`, "IPv6 settings are present but EnableIPv6 is false", `field "Networks": multiple networks are not supported`} {
		if !strings.Contains(all, want) {
			t.Errorf("warnings %q lack %q", all, want)
		}
	}
}

func TestParseConfigNFTables(t *testing.T) {
	for doc, want := range map[string]bool{
		`{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`:                        false,
		`{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"},"EnableNFTables":true}`:  true,
		`{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"},"enablenftables":true}`:  true, // keys match without case, as upstream's
		`{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"},"EnableNFTables":false}`: false,
	} {
		c, w, err := ParseConfig([]byte(doc))
		if err != nil {
			t.Fatalf("%s: %v", doc, err)
		}
		if len(w) > 0 {
			t.Errorf("%s: warnings %q, want none", doc, w)
		}
		if c.EnableNFTables != want {
			t.Errorf("%s: EnableNFTables = %v, want %v", doc, c.EnableNFTables, want)
		}
		out, err := c.Effective(nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Contains(string(out), `"EnableNFTables": true`); got != want {
			t.Errorf("%s: effective config %s, EnableNFTables shown %v, want %v", doc, out, got, want)
		}
	}
	if _, _, err := ParseConfig([]byte(`{"Network":"10.244.0.0/16","EnableNFTables":"yes"}`)); err == nil || !strings.Contains(err.Error(), "EnableNFTables") {
		t.Errorf("EnableNFTables of the wrong type: %v, want an error naming the field", err)
	}
}

func TestSubnetFits(t *testing.T) {
	c, _, err := ParseConfig([]byte(`{"Network":"10.244.0.0/16","SubnetMin":"10.244.10.0","SubnetMax":"10.244.20.0","EnableIPv6":true,"IPv6Network":"fd00::/56"}`))
	if err != nil {
		t.Fatal(err)
	}
	for s, want := range map[string]bool{
		"10.244.10.0/24": true, "10.244.20.0/24": true, "10.244.9.0/24": false, "10.244.21.0/24": false,
		"10.244.15.0/25": false, "10.245.15.0/24": false, "fd00:0:0:5::/64": true, "fd00:0:0:0::/64": false, "fd00:0:0:5::/80": false,
	} {
		if got := c.SubnetFits(netip.MustParsePrefix(s)); got != want {
			t.Errorf("SubnetFits(%s) = %v, want %v", s, got, want)
		}
	}
}

func TestEffective(t *testing.T) {
	c, _, err := ParseConfig([]byte(`{"Network":"10.244.0.0/16"}`))
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.Effective(nil)
	if err != nil {
		t.Fatal(err)
	}
	want := `{
  "EnableIPv4": true,
  "EnableIPv6": false,
  "Network": "10.244.0.0/16",
  "SubnetLen": 24,
  "SubnetMin": "10.244.1.0",
  "SubnetMax": "10.244.255.0",
  "Backend": {
    "Type": "udp"
  }
}`
	if string(out) != want {
		t.Errorf("got\n%s\nwant\n%s", out, want)
	}
}

// TestBackendType: upstream's rule for Backend.Type (parseBackendType and
// the backend manager's lookup): no Backend means udp, said in a warning;
// the type is matched in lower case; a Backend naming no type is refused.
func TestBackendType(t *testing.T) {
	for _, c := range []struct {
		name, backend string // the Backend field's JSON, "" for none
		want, err     string
		defaultNote   bool
	}{
		{name: "absent", backend: "", want: "udp", defaultNote: true},
		{name: "vxlan", backend: `{"Type":"vxlan"}`, want: "vxlan"},
		{name: "upper case", backend: `{"Type":"VXLAN"}`, want: "vxlan"},
		{name: "mixed case key and value", backend: `{"type":"Host-GW"}`, want: "host-gw"},
		{name: "udp named", backend: `{"Type":"udp","Port":8285}`, want: "udp"},
		{name: "unknown kept for the registry", backend: `{"Type":"WireGuard"}`, want: "wireguard"},
		{name: "no type", backend: `{"VNI":4}`, err: "Backend.Type: missing"},
		{name: "empty object", backend: `{}`, err: "Backend.Type: missing"},
		{name: "empty type", backend: `{"Type":""}`, err: "Backend.Type: missing"},
		{name: "null", backend: `null`, err: "Backend.Type: missing"},
		{name: "type not a string", backend: `{"Type":1}`, err: "Backend.Type: expected a string, got a JSON number"},
		{name: "string", backend: `"vxlan"`, err: "Backend: must be an object"},
	} {
		t.Run(c.name, func(t *testing.T) {
			doc := `{"Network":"10.244.0.0/16"}`
			if c.backend != "" {
				doc = `{"Network":"10.244.0.0/16","Backend":` + c.backend + `}`
			}
			cfg, w, err := ParseConfig([]byte(doc))
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("error %v, want %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.BackendType != c.want {
				t.Errorf("BackendType %q, want %q", cfg.BackendType, c.want)
			}
			if got := slices.Contains(w, DefaultBackendWarning); got != c.defaultNote {
				t.Errorf("default-backend warning present %v, want %v (warnings %q)", got, c.defaultNote, w)
			}
		})
	}
}

// TestUnknownFieldWarnings: one line per unknown field, naming the closest
// known one; upstream fields we do not implement get their own reason.
func TestUnknownFieldWarnings(t *testing.T) {
	_, w, err := ParseConfig([]byte(`{"Network":"10.244.0.0/16","SubnetLn":20,"enableipv7":true,"Networks":[],"Backend":{"Type":"udp"}}`))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		`field "Networks": multiple networks are not supported; only Network is used`,
		`unknown field "SubnetLn" is ignored; the closest known field is "SubnetLen"`,
		`unknown field "enableipv7" is ignored; the closest known field is "EnableIPv4"`,
	}
	if !slices.Equal(w, want) {
		t.Errorf("warnings\n%q\nwant\n%q", w, want)
	}
}

// FuzzParseConfigBounds: any document either parses into a config whose bounds
// fit its network, or is refused with an error; it never panics.
func FuzzParseConfigBounds(f *testing.F) {
	for _, s := range []string{
		`{"Network":"10.244.0.0/16"}`,
		`{"Network":"10.244.0.0/16","Backend":{"Type":"VXLAN","VNI":4}}`,
		`{"Network":"10.0.0.0/28","SubnetLen":30,"Backend":null}`,
		`{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/56","IPv6SubnetLen":64}`,
		`{"network":"10.1.0.0/16","subnetmin":"10.1.3.0/24","Bogus":1,"Backend":{}}`,
		`[]`, `{"Network":`, `{"Backend":"udp"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, _, err := ParseConfig(data)
		if err != nil {
			if cfg != nil {
				t.Fatalf("a config with an error: %+v", cfg)
			}
			return
		}
		lo, _ := cfg.SubnetMin.Prefix(cfg.SubnetLen)
		hi, _ := cfg.SubnetMax.Prefix(cfg.SubnetLen)
		if !cfg.SubnetFits(lo) || !cfg.SubnetFits(hi) || cfg.BackendType == "" || cfg.BackendType != strings.ToLower(cfg.BackendType) {
			t.Fatalf("accepted an inconsistent config: %+v", cfg)
		}
		if _, err := cfg.Effective(nil); err != nil {
			t.Fatalf("Effective: %v", err)
		}
	})
}
