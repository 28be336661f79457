package registry

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

func TestRegistry(t *testing.T) {
	if got := strings.Join(Names(), ","); got != "host-gw,udp,vxlan,wireguard" {
		t.Errorf("Names() = %s", got)
	}
	for _, n := range Names() {
		bt, err := Lookup(n)
		if err != nil || bt.Name != n || bt.New == nil || bt.ParseOptions == nil {
			t.Errorf("Lookup(%s) = %+v, %v", n, bt, err)
		}
		if _, err := bt.ParseOptions([]byte(`{"Type":"` + n + `"}`)); err != nil {
			t.Errorf("%s rejects its defaults: %v", n, err)
		}
	}
	if _, err := Lookup("ipip"); err == nil || err.Error() != `Backend.Type: unknown backend type "ipip"; known types: host-gw, udp, vxlan, wireguard` {
		t.Errorf("unknown type: %v", err)
	}
}

// TestOptionWarnings: keys a backend does not read are ignored, as
// upstream ignores them, with one warning line each naming the closest
// option (or saying the key is one of upstream's Windows nodes).
func TestOptionWarnings(t *testing.T) {
	for _, c := range []struct {
		raw  string
		want []string
	}{
		{`{"Type":"vxlan","VNI":4,"directrouting":true}`, nil},
		{`{"Type":"vxlan","VNI":4096,"Name":"flannel.4096","MacPrefix":"0E-2A"}`, []string{
			"Backend.MacPrefix: an option of upstream's Windows nodes; ignored here",
			"Backend.Name: an option of upstream's Windows nodes; ignored here",
		}},
		{`{"Type":"vxlan","DirectRoute":true,"VIN":2}`, []string{
			`Backend.DirectRoute: unknown vxlan option, ignored; the closest known option is "DirectRouting"`,
			`Backend.VIN: unknown vxlan option, ignored; the closest known option is "VNI"`,
		}},
		{`{"Type":"udp","Prot":8285}`, []string{`Backend.Prot: unknown udp option, ignored; the closest known option is "Port"`}},
		{`{"Type":"host-gw","DirectRouting":true}`, []string{"Backend.DirectRouting: host-gw has no options; ignored"}},
		{`{"Type":"host-gw","DNSServerList":"10.0.0.10"}`, []string{"Backend.DNSServerList: an option of upstream's Windows nodes; ignored here"}},
		{`[1]`, nil},
	} {
		typ := "vxlan"
		for _, n := range Names() {
			if strings.Contains(c.raw, `"`+n+`"`) {
				typ = n
			}
		}
		bt, _ := Lookup(typ)
		if got := bt.OptionWarnings([]byte(c.raw)); !slices.Equal(got, c.want) {
			t.Errorf("%s: %q, want %q", c.raw, got, c.want)
		}
		if _, err := bt.ParseOptions([]byte(c.raw)); err != nil && c.raw != `[1]` {
			t.Errorf("%s: unknown keys refused: %v", c.raw, err)
		}
	}
}

// FuzzOptions: every backend's option reading takes any Backend object
// without panicking, warns at most once per key, and never warns of Type
// or of an option it reads.
func FuzzOptions(f *testing.F) {
	for _, s := range []string{`{"Type":"vxlan","VNI":4,"MacPrefix":"0E-2A"}`, `{"type":"udp","port":9,"Prot":1}`, `{"Type":"host-gw","x":null}`, `[]`, `{"VNI":"x"}`, `{`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		var keys map[string]json.RawMessage
		isObject := json.Unmarshal(raw, &keys) == nil
		for _, n := range Names() {
			bt, _ := Lookup(n)
			w := bt.OptionWarnings(raw)
			if !isObject && len(w) > 0 || len(w) > len(keys) {
				t.Fatalf("%s: %d warnings for %d keys of %q", n, len(w), len(keys), raw)
			}
			for _, line := range w {
				if strings.HasPrefix(strings.ToLower(line), "backend.type:") {
					t.Fatalf("%s: warned of Type: %q", n, line)
				}
			}
			bt.ParseOptions(raw) // any result, no panic
		}
	})
}
