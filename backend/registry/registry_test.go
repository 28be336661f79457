package registry

import (
	"strings"
	"testing"
)

func TestRegistry(t *testing.T) {
	if got := strings.Join(Names(), ","); got != "host-gw,udp,vxlan" {
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
	if _, err := Lookup("ipip"); err == nil || err.Error() != `Backend.Type: unknown backend type "ipip"; known types: host-gw, udp, vxlan` {
		t.Errorf("unknown type: %v", err)
	}
}
