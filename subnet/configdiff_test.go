package subnet

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

func mustParse(t testing.TB, doc string) *Config {
	t.Helper()
	cfg, _, err := ParseConfig([]byte(doc))
	if err != nil {
		t.Fatalf("%s: %v", doc, err)
	}
	return cfg
}

// diffText is a diff as "Field: old -> new (live)" lines.
func diffText(ds []ConfigDiff) string {
	var lines []string
	for _, d := range ds {
		live := ""
		if d.Live {
			live = " (live)"
		}
		lines = append(lines, fmt.Sprintf("%s: %q -> %q%s", d.Field, d.Old, d.New, live))
	}
	return strings.Join(lines, "\n")
}

func TestDiffConfig(t *testing.T) {
	const base = `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","VNI":1}}`
	for _, tc := range []struct{ name, old, new, want string }{
		{"same document", base, base, ""},
		{"defaults spelled out, other case and spacing", base,
			`{"network":"10.244.0.0/16", "SubnetLen":24, "SubnetMin":"10.244.1.0", "Backend": {"type":"VXLAN", "vni":1.0}}`, ""},
		{"no Backend is udp", `{"Network":"10.244.0.0/16"}`, `{"Network":"10.244.0.0/16","Backend":{"Type":"udp"}}`, ""},
		{"backend type", base, `{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}`,
			`Backend.Type: "vxlan" -> "host-gw" (live)` + "\n" + `Backend.VNI: "1" -> "" (live)`},
		{"backend options", base, `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","vni":2,"DirectRouting":true,"Nested":{"a":[1]}}}`,
			`Backend.DirectRouting: "" -> "true" (live)` + "\n" + `Backend.Nested: "" -> "{\"a\":[1]}" (live)` + "\n" + `Backend.VNI: "1" -> "2" (live)`},
		{"of options spelled twice the last counts", `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","VNI":1,"vni":2}}`, base,
			`Backend.VNI: "2" -> "1" (live)`},
		{"network: default bounds follow it", base, `{"Network":"10.245.0.0/16","Backend":{"Type":"vxlan","VNI":1}}`,
			`Network: "10.244.0.0/16" -> "10.245.0.0/16"`},
		{"network with a bound set", base, `{"Network":"10.245.0.0/16","SubnetMax":"10.245.9.0","Backend":{"Type":"vxlan","VNI":1}}`,
			`Network: "10.244.0.0/16" -> "10.245.0.0/16"` + "\n" + `SubnetMax: "10.244.255.0" -> "10.245.9.0"`},
		{"bounds", base, `{"Network":"10.244.0.0/16","SubnetMin":"10.244.1.0","SubnetMax":"10.244.9.0","Backend":{"Type":"vxlan","VNI":1}}`,
			`SubnetMax: "10.244.255.0" -> "10.244.9.0"`},
		{"subnet length", base, `{"Network":"10.244.0.0/16","SubnetLen":25,"Backend":{"Type":"vxlan","VNI":1}}`,
			`SubnetLen: "24" -> "25"`},
		{"IPv6 on", base, `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"vxlan","VNI":1}}`,
			`EnableIPv6: "false" -> "true"` + "\n" + `IPv6Network: "" -> "fd00:10:244::/56"` + "\n" + `IPv6SubnetLen: "" -> "64"`},
		{"IPv6 on with a bound", base, `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","IPv6SubnetMin":"fd00:10:244:8::","Backend":{"Type":"vxlan","VNI":1}}`,
			`EnableIPv6: "false" -> "true"` + "\n" + `IPv6Network: "" -> "fd00:10:244::/56"` + "\n" + `IPv6SubnetLen: "" -> "64"` + "\n" +
				`IPv6SubnetMin: "" -> "fd00:10:244:8::"`},
		{"nftables", base, `{"Network":"10.244.0.0/16","EnableNFTables":true,"Backend":{"Type":"vxlan","VNI":1}}`,
			`EnableNFTables: "false" -> "true"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := diffText(DiffConfig(mustParse(t, tc.old), mustParse(t, tc.new))); got != tc.want {
				t.Errorf("diff:\n%s\nwant:\n%s", got, tc.want)
			}
		})
	}
	if d := DiffConfig(nil, mustParse(t, base)); d != nil {
		t.Errorf("with nil: %v", d)
	}
}

func TestConfigDiffAdvice(t *testing.T) {
	for _, tc := range []struct {
		d    ConfigDiff
		want string
	}{
		{ConfigDiff{Field: "Backend.Type", Old: "vxlan", New: "host-gw", Live: true}, ""},
		{ConfigDiff{Field: "Network", Old: "10.244.0.0/16", New: "10.245.0.0/16"},
			"Network cannot change while hosts hold leases: restore it, or drain the cluster, delete the leases (under <prefix>/subnets/) and restart every host"},
		{ConfigDiff{Field: "SubnetMax", Old: "10.244.255.0", New: "10.244.9.0"}, "SubnetMax: restart each host to apply it; a host whose subnet"},
		{ConfigDiff{Field: "EnableIPv6", Old: "false", New: "true"}, "EnableIPv6: restart every host to turn IPv6 on or off"},
		{ConfigDiff{Field: "IPv6Network", Old: "", New: "fd00::/56"}, "IPv6Network comes and goes with EnableIPv6"},
		{ConfigDiff{Field: "IPv6Network", Old: "fd00::/56", New: "fd01::/56"}, "IPv6Network cannot change while hosts hold IPv6 subnets: restore it"},
		{ConfigDiff{Field: "EnableNFTables", Old: "false", New: "true"}, "EnableNFTables: restart each host to change the firewall mode"},
	} {
		got := tc.d.Advice()
		if tc.want == "" && got != "" || !strings.HasPrefix(got, tc.want) {
			t.Errorf("%s: advice %q, want %q...", tc.d.Field, got, tc.want)
		}
	}
	// Every field DiffConfig may report without Live has advice.
	all := DiffConfig(mustParse(t, `{"Network":"10.244.0.0/16"}`),
		mustParse(t, `{"Network":"10.8.0.0/16","SubnetLen":26,"EnableIPv6":true,"IPv6Network":"fd00::/56","EnableNFTables":true}`))
	for _, d := range all {
		if !d.Live && d.Advice() == "" {
			t.Errorf("%s: no advice", d.Field)
		}
	}
}

// FuzzDiffConfig: for any two documents that parse, DiffConfig does not
// panic, finds nothing between a config and itself, and reports the same
// fields in both directions, old and new swapped.
func FuzzDiffConfig(f *testing.F) {
	for _, p := range [][2]string{
		{`{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","VNI":1}}`, `{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}`},
		{`{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","VNI":1,"vni":2}}`, `{"network":"10.244.0.0/16","backend":{"TYPE":"VXLAN","Vni":2}}`},
		{`{"Network":"10.244.0.0/16"}`, `{"Network":"10.8.0.0/16","SubnetLen":26,"EnableIPv6":true,"IPv6Network":"fd00::/56","EnableNFTables":true}`},
		{`{"Network":"10.244.0.0/16","Backend":{"Type":"x","A":{"b":[1,"2",null]},"a":1e308}}`, `{"Network":"10.244.0.0/16","Backend":{"Type":"x","\u00e9":1,"É":2}}`},
	} {
		f.Add(p[0], p[1])
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		ca, _, errA := ParseConfig([]byte(a))
		cb, _, errB := ParseConfig([]byte(b))
		if errA == nil {
			if d := DiffConfig(ca, ca); len(d) != 0 {
				t.Fatalf("%s against itself: %s", a, diffText(d))
			}
			again, _, _ := ParseConfig([]byte(a))
			if d := DiffConfig(ca, again); len(d) != 0 {
				t.Fatalf("%s against a second parse: %s", a, diffText(d))
			}
		}
		if errA != nil || errB != nil {
			return
		}
		ab, ba := DiffConfig(ca, cb), DiffConfig(cb, ca)
		swapped := make([]ConfigDiff, len(ba))
		for i, d := range ba {
			swapped[i] = ConfigDiff{Field: d.Field, Old: d.New, New: d.Old, Live: d.Live}
		}
		if !slices.Equal(ab, swapped) {
			t.Fatalf("not symmetric:\n%s\nthe other way, swapped:\n%s", diffText(ab), diffText(swapped))
		}
		for _, d := range ab {
			if d.Old == d.New {
				t.Fatalf("%s reported with equal values %q", d.Field, d.Old)
			}
			if !d.Live && d.Advice() == "" {
				t.Fatalf("%s: no advice", d.Field)
			}
		}
	})
}
