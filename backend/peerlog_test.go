package backend

import (
	"bytes"
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	"github.com/flanneld-go/flannel/subnet"
)

func TestPeerLog(t *testing.T) {
	var buf bytes.Buffer
	p := NewPeerLog(slog.New(slog.NewTextHandler(&buf, nil)))
	l := subnet.Lease{Subnet: netip.MustParsePrefix("10.244.2.0/24"), Attrs: subnet.LeaseAttrs{PublicIP: netip.MustParseAddr("192.168.50.12"), BackendType: "udp"}}
	for range 3 {
		if p.OfType(l, "vxlan") {
			t.Fatal("udp lease accepted as vxlan")
		}
	}
	if n := strings.Count(buf.String(), "ignoring peer of another backend type"); n != 1 {
		t.Fatalf("logged %d times, want once:\n%s", n, buf.String())
	}
	p.Warn(l.Key()+"/v6", "a", "problem a")
	p.Warn(l.Key()+"/v6", "b", "problem b") // a new reason is logged
	p.Prune(map[string]bool{})              // the peer left: forget it all
	p.OfType(l, "vxlan")                    // and it came back
	if n := strings.Count(buf.String(), "ignoring peer"); n != 2 || !strings.Contains(buf.String(), "problem b") {
		t.Fatalf("after prune:\n%s", buf.String())
	}
}

func TestCheckOptionNames(t *testing.T) {
	if err := CheckOptionNames([]byte(`{"type":"vxlan","vni":1,"PORT":2}`), "vxlan", "VNI", "Port"); err != nil {
		t.Fatal(err)
	}
	for raw, want := range map[string]string{
		`{"Type":"host-gw","Port":1}`: "Backend.Port: host-gw has no options; remove it",
		`{"Type":"udp","Prot":1}`:     "Backend.Prot: unknown udp option; known options: Port",
		`[1]`:                         "Backend: must be a JSON object",
	} {
		typ := map[bool]string{true: "host-gw", false: "udp"}[strings.Contains(raw, "host-gw")]
		known := []string{"Port"}
		if typ == "host-gw" {
			known = nil
		}
		if err := CheckOptionNames([]byte(raw), typ, known...); err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("%s: %v, want %q", raw, err, want)
		}
	}
}
