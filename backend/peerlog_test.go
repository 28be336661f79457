package backend

import (
	"bytes"
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	"github.com/flanneld-go/flannel/subnet"
)

func TestPeerLogReport(t *testing.T) {
	var buf bytes.Buffer
	p := NewPeerLog(slog.New(slog.NewTextHandler(&buf, nil)))
	l := subnet.Lease{Subnet: netip.MustParsePrefix("10.244.2.0/24"), Attrs: subnet.LeaseAttrs{PublicIP: netip.MustParseAddr("192.168.50.12"), BackendType: "udp"}}
	s := Skip{Peer: l, Reason: "l2:192.168.50.12", Msg: "peer is not on this host's L2 segment",
		Attrs: []any{"peer_subnet", l.String(), "peer_backend", l.Attrs.BackendType}}
	for range 3 {
		p.Report([]Skip{s})
	}
	if n := strings.Count(buf.String(), "peer is not on this host's L2 segment"); n != 1 {
		t.Fatalf("logged %d times, want once:\n%s", n, buf.String())
	}
	if !strings.Contains(buf.String(), "peer_subnet=10.244.2.0/24") || !strings.Contains(buf.String(), "peer_backend=udp") {
		t.Errorf("the line lacks the peer:\n%s", buf.String())
	}
	a := Skip{Peer: l, Aspect: "v6", Reason: "a", Msg: "problem a"}
	b := Skip{Peer: l, Aspect: "v6", Reason: "b", Msg: "problem b"}
	p.Report([]Skip{s, a})
	p.Report([]Skip{s, b}) // a new reason is logged
	p.Report(nil)          // the peer left or was fixed: forget it all
	p.Report([]Skip{s})    // and it came back
	out := buf.String()
	if strings.Count(out, "not on this host's L2 segment") != 2 || !strings.Contains(out, "problem a") || !strings.Contains(out, "problem b") {
		t.Fatalf("after the problems went and came back:\n%s", out)
	}
}
