package network

import (
	"net/netip"
	"os/exec"
	"strings"
	"testing"

	"github.com/flanneld-go/flannel/backend"
	"github.com/flanneld-go/flannel/internal/netnstest"
)

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

// TestCheckExternal: a Network (or IPv6Network) holding the advertised
// address or any address of the external interface is refused, naming the
// address, the interface, the field and what to do.
func TestCheckExternal(t *testing.T) {
	ext := &backend.ExternalInterface{Name: "eth0", Index: 2, MTU: 1500,
		Addr: netip.MustParseAddr("192.168.50.11"), PublicIP: netip.MustParseAddr("192.168.50.11")}
	natted := *ext
	natted.PublicIP = netip.MustParseAddr("10.244.7.1")
	dual := *ext
	dual.Addr6, dual.PublicIPv6 = netip.MustParseAddr("fd00:50::11"), netip.MustParseAddr("fd00:50::11")
	const dualConf = `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/16"}`
	for _, tc := range []struct {
		name    string
		conf    string
		ext     *backend.ExternalInterface
		ifAddrs []netip.Addr
		want    string // "" for no error
	}{
		{"disjoint", `{"Network":"10.244.0.0/16"}`, ext, addrs("192.168.50.11"), ""},
		{"holds the interface address", `{"Network":"192.168.0.0/16"}`, ext, addrs("192.168.50.11"),
			"net-conf Network 192.168.0.0/16 holds 192.168.50.11, the address of the external interface eth0, advertised to the other hosts as PublicIP: " +
				"the routes for the pod network would capture the traffic between the hosts; change Network to a range that holds no host address, " +
				"or choose an external interface outside it with --iface"},
		{"holds a secondary address", `{"Network":"10.0.0.0/8"}`, ext, addrs("192.168.50.11", "10.9.0.5"),
			"net-conf Network 10.0.0.0/8 holds 10.9.0.5, an address of the external interface eth0:"},
		{"holds --public-ip", `{"Network":"10.244.0.0/16"}`, &natted, addrs("192.168.50.11"),
			"net-conf Network 10.244.0.0/16 holds 10.244.7.1, this host's PublicIP (set with --public-ip), advertised to the other hosts as PublicIP:"},
		{"v6 ignored when off", `{"Network":"10.244.0.0/16","IPv6Network":"fd00::/16"}`, ext, addrs("192.168.50.11", "fd00:50::11"), ""},
		{"holds the IPv6 address", dualConf, &dual, addrs("192.168.50.11", "fd00:50::11"),
			"net-conf IPv6Network fd00::/16 holds fd00:50::11, the address of the external interface eth0, advertised to the other hosts as PublicIPv6:"},
		{"holds another IPv6 address", dualConf, ext, addrs("192.168.50.11", "fd00:99::1"),
			"net-conf IPv6Network fd00::/16 holds fd00:99::1, an address of the external interface eth0: "},
		{"dual disjoint", `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd10::/48"}`, &dual, addrs("192.168.50.11", "fd00:50::11"), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkExternal(mustConfig(t, tc.conf), tc.ext, tc.ifAddrs)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.want)):
				t.Fatalf("error:\n got %v\nwant %s...", err, tc.want)
			}
		})
	}
}

// TestCheckConfigOnHost: flanneld config check, run on a host, chooses the
// external interface as the daemon does and refuses a Network holding its
// address; with no interface to choose it says the check was skipped.
func TestCheckConfigOnHost(t *testing.T) {
	netnstest.Require(t)
	// No default route yet: nothing to choose.
	note, err := CheckConfigOnHost([]byte(`{"Network":"192.168.0.0/16"}`), IfaceOptions{})
	if err != nil || !strings.HasPrefix(note, "not checked against this host's addresses: no default route") {
		t.Fatalf("without an interface: %q %v", note, err)
	}
	sh(t, "ip link add ul0 type veth peer name ul0p", "ip addr add 192.168.50.11/24 dev ul0",
		"ip addr add fd00:50::11/64 dev ul0 nodad", "ip link set ul0 up", "ip link set ul0p up",
		"ip route add default via 192.168.50.1 dev ul0")
	t.Cleanup(func() { exec.Command("ip", "link", "del", "ul0").Run() })

	_, err = CheckConfigOnHost([]byte(`{"Network":"192.168.0.0/16"}`), IfaceOptions{})
	if err == nil || !strings.HasPrefix(err.Error(), "net-conf Network 192.168.0.0/16 holds 192.168.50.11, the address of the external interface ul0") {
		t.Errorf("holding the address: %v", err)
	}
	_, err = CheckConfigOnHost([]byte(`{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/16"}`), IfaceOptions{Iface: []string{"ul0"}})
	if err == nil || !strings.HasPrefix(err.Error(), "net-conf IPv6Network fd00::/16 holds fd00:50::11, the address of the external interface ul0") {
		t.Errorf("holding the IPv6 address: %v", err)
	}
	note, err = CheckConfigOnHost([]byte(`{"Network":"10.244.0.0/16"}`), IfaceOptions{})
	if err != nil || note != "no host address in the pod network: checked this host's external interface ul0 (192.168.50.11)" {
		t.Errorf("a good net-conf: %q %v", note, err)
	}
	if _, err := CheckConfigOnHost([]byte(`{"Network":"10.244.0.0/16"}`), IfaceOptions{Iface: []string{"ul0"}, PublicIP: "10.244.0.9"}); err == nil ||
		!strings.Contains(err.Error(), "holds 10.244.0.9, this host's PublicIP (set with --public-ip)") {
		t.Errorf("--public-ip inside the Network: %v", err)
	}
}
