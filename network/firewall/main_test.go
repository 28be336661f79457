package firewall

import (
	"testing"

	"github.com/flanneld-go/flannel/internal/netnstest"
)

// TestMain runs the package's tests in a private network namespace, so
// iptables rules and /proc/sys/net writes never reach the host.
func TestMain(m *testing.M) { netnstest.Main(m) }
