package firewall

import (
	"bytes"
	"log/slog"
	"os"
	"strings"
	"testing"

	"github.com/flanneld-go/flannel/internal/netnstest"
)

func TestForwardingEnable(t *testing.T) {
	netnstest.Require(t)
	keys := []string{"/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"}
	for _, k := range keys {
		if err := os.WriteFile(k, []byte("0\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	if err := EnableForwarding(log, false); err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(buf.String(), "enabled forwarding"); got != 1 || !strings.Contains(buf.String(), "sysctl=net.ipv4.ip_forward") {
		t.Errorf("log after enabling IPv4:\n%s", buf.String())
	}
	if b, _ := os.ReadFile(keys[1]); strings.TrimSpace(string(b)) != "0" {
		t.Errorf("IPv6 forwarding set without v6: %q", b)
	}
	if err := EnableForwarding(log, true); err != nil {
		t.Fatal(err)
	}
	if err := EnableForwarding(log, true); err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if b, _ := os.ReadFile(k); strings.TrimSpace(string(b)) != "1" {
			t.Errorf("%s = %q, want 1", k, b)
		}
	}
	if got := strings.Count(buf.String(), "enabled forwarding"); got != 2 {
		t.Errorf("%d log lines, want 2 (each change once):\n%s", got, buf.String())
	}
}
