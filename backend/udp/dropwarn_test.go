package udp

import (
	"bytes"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// TestDropWarner: a reason whose counter grew gets one warning line with
// the last offender and the number since the previous line; while it keeps
// growing it is logged again only after dropWarnPeriod; drops of other
// reasons (malformed packets) get no warning of their own.
func TestDropWarner(t *testing.T) {
	var logs bytes.Buffer
	w := &dropWarner{log: slog.New(slog.NewTextHandler(&logs, nil)), port: DefaultPort}
	cs := []*counters{{}, {}}
	wrongPort := netip.AddrPortFrom(peer12.Addr(), 40000)
	now := time.Unix(1000, 0)
	lines := func() []string {
		s := strings.TrimSpace(logs.String())
		logs.Reset()
		if s == "" {
			return nil
		}
		return strings.Split(s, "\n")
	}

	w.check(now, cs)
	if l := lines(); l != nil {
		t.Fatalf("warnings without drops: %q", l)
	}
	cs[0].dropFrom(dropWrongPort, 3, wrongPort, netip.Addr{}, netip.Prefix{})
	cs[1].dropFrom(dropSpoofedSource, 1, peer12, netip.MustParseAddr("10.244.3.9"), netip.MustParsePrefix("10.244.2.0/24"))
	cs[1].drop(dropMalformed)
	w.check(now, cs)
	l := lines()
	if len(l) != 2 {
		t.Fatalf("want one line per reason, got %q", l)
	}
	for i, want := range [][]string{
		{"level=WARN", "reason=wrong_port", "dropped=3", "from=192.168.50.12:40000", "udp_port=8285", "Backend.Port"},
		{"level=WARN", "reason=spoofed_source", "dropped=1", "from=192.168.50.12:8285", "inner_src=10.244.3.9", "peer_subnet=10.244.2.0/24"},
	} {
		for _, s := range want {
			if !strings.Contains(l[i], s) {
				t.Errorf("line %d lacks %q: %s", i, s, l[i])
			}
		}
	}

	// More of the same within the period: counted, not logged.
	cs[1].dropFrom(dropWrongPort, 2, netip.AddrPortFrom(peer12.Addr(), 40001), netip.Addr{}, netip.Prefix{})
	w.check(now.Add(dropWarnPeriod/2), cs)
	if l := lines(); l != nil {
		t.Fatalf("logged again within the period: %q", l)
	}
	// After it: one line with the drops since the last one.
	w.check(now.Add(dropWarnPeriod), cs)
	l = lines()
	if len(l) != 1 || !strings.Contains(l[0], "reason=wrong_port") || !strings.Contains(l[0], "dropped=2") || !strings.Contains(l[0], "from=192.168.50.12:40001") {
		t.Fatalf("after the period: %q", l)
	}
	// Nothing new: nothing logged.
	w.check(now.Add(3*dropWarnPeriod), cs)
	if l := lines(); l != nil {
		t.Fatalf("logged without new drops: %q", l)
	}
}
