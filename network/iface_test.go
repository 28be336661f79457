package network

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/flanneld-go/flannel/internal/netnstest"
)

func sh(t *testing.T, cmds ...string) {
	t.Helper()
	for _, c := range cmds {
		if out, err := exec.Command("sh", "-c", c).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v: %s", c, err, out)
		}
	}
}

func TestFindExternal(t *testing.T) {
	netnstest.Require(t)
	sh(t,
		"ip link add ul0 type veth peer name ul0p", "ip link add ul1 type veth peer name ul1p",
		"ip addr add 192.168.50.11/24 dev ul0", "ip addr add fd00:50::11/64 dev ul0 nodad",
		"ip addr add 10.9.0.5/16 dev ul1",
		"ip link add ul2 type veth peer name ul2p", "ip addr add fd00:70::2/64 dev ul2 nodad", // no IPv4 address
		"for l in ul0 ul0p ul1 ul1p ul2 ul2p; do ip link set $l up; done",
		"ip route add default via 10.9.0.1 dev ul1",
	)
	t.Cleanup(func() { exec.Command("sh", "-c", "ip link del ul0; ip link del ul1; ip link del ul2").Run() })
	h := &netlink.Handle{}
	tests := []struct {
		name       string
		o          IfaceOptions
		iface, pub string
		pub6       string
		err        string
	}{
		{name: "default route", o: IfaceOptions{}, iface: "ul1", pub: "10.9.0.5"},
		{name: "by name", o: IfaceOptions{Iface: []string{"nope", "ul0"}}, iface: "ul0", pub: "192.168.50.11"},
		{name: "by address", o: IfaceOptions{Iface: []string{"10.9.0.5"}}, iface: "ul1", pub: "10.9.0.5"},
		{name: "regex on address", o: IfaceOptions{IfaceRegex: []string{`^192\.168\.`}}, iface: "ul0", pub: "192.168.50.11"},
		{name: "regex on name", o: IfaceOptions{IfaceRegex: []string{`^ul1$`}}, iface: "ul1", pub: "10.9.0.5"},
		{name: "regexes in order", o: IfaceOptions{IfaceRegex: []string{`^172\.`, `^ul0$`, `^ul1$`}}, iface: "ul0", pub: "192.168.50.11"},
		{name: "can reach", o: IfaceOptions{CanReach: "192.168.50.200"}, iface: "ul0", pub: "192.168.50.11"},
		{name: "public ip override", o: IfaceOptions{Iface: []string{"ul0"}, PublicIP: "203.0.113.7"}, iface: "ul0", pub: "203.0.113.7"},
		{name: "dual stack", o: IfaceOptions{Iface: []string{"ul0"}, IPv6: true}, iface: "ul0", pub: "192.168.50.11", pub6: "fd00:50::11"},
		// Upstream's fall-through: every --iface, then every --iface-regex,
		// then --iface-can-reach; an interface without the addresses the
		// network needs does not count as a match.
		{name: "iface falls through to regex", o: IfaceOptions{Iface: []string{"eth9", "10.1.1.1"}, IfaceRegex: []string{`^ul1$`}}, iface: "ul1", pub: "10.9.0.5"},
		{name: "iface without IPv4 falls through", o: IfaceOptions{Iface: []string{"ul2", "ul0"}}, iface: "ul0", pub: "192.168.50.11"},
		{name: "iface without IPv6 falls through (dual stack)", o: IfaceOptions{Iface: []string{"ul1"}, IfaceRegex: []string{"^ul0$"}, IPv6: true},
			iface: "ul0", pub: "192.168.50.11", pub6: "fd00:50::11"},
		{name: "bad regex falls through", o: IfaceOptions{IfaceRegex: []string{`(`, `^ul1$`}}, iface: "ul1", pub: "10.9.0.5"},
		{name: "regexes fall through to can-reach", o: IfaceOptions{IfaceRegex: []string{`^172\.`}, CanReach: "192.168.50.9"}, iface: "ul0", pub: "192.168.50.11"},
		// With only --public-ip: the interface holding it, not the default route's.
		{name: "public ip only", o: IfaceOptions{PublicIP: "192.168.50.11"}, iface: "ul0", pub: "192.168.50.11"},
		{name: "public ipv6 only, dual stack", o: IfaceOptions{PublicIPv6: "fd00:50::11", IPv6: true}, iface: "ul0", pub: "192.168.50.11", pub6: "fd00:50::11"},
		{name: "public ipv6 only, IPv4 network: default route", o: IfaceOptions{PublicIPv6: "fd00:50::11"}, iface: "ul1", pub: "10.9.0.5"},
		{name: "public ip on no interface", o: IfaceOptions{PublicIP: "203.0.113.7"},
			err: "--public-ip 203.0.113.7 is on no interface of this host, and no --iface, --iface-regex or --iface-can-reach chooses one (upstream flanneld refuses this too); add --iface ul1 (the default route's interface) or the interface that carries the traffic"},
		{name: "no match", o: IfaceOptions{Iface: []string{"eth9"}}, err: "--iface eth9: no interface has that name or address; interfaces: lo [no global addresses]"},
		{name: "nothing matches", o: IfaceOptions{Iface: []string{"eth9"}, IfaceRegex: []string{`^172\.`}, CanReach: "bogus"},
			err: "--iface eth9: no interface has that name or address; --iface-regex ^172\\.: no interface address or name matches; --iface-can-reach bogus: not an IP address; interfaces: lo"},
		{name: "no v6", o: IfaceOptions{Iface: []string{"ul1"}, IPv6: true}, err: "--iface ul1: EnableIPv6 is set but interface ul1 has no global IPv6 address (it has: 10.9.0.5/16)"},
		{name: "bad public ip", o: IfaceOptions{Iface: []string{"ul0"}, PublicIP: "fd00::1"}, err: `--public-ip "fd00::1" is not an IPv4 address`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ext, err := FindExternal(h, tc.o, nil)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if ext.Name != tc.iface || ext.PublicIP.String() != tc.pub {
				t.Errorf("got %s %s, want %s %s", ext.Name, ext.PublicIP, tc.iface, tc.pub)
			}
			if tc.pub6 != "" && ext.PublicIPv6.String() != tc.pub6 {
				t.Errorf("v6 %s, want %s", ext.PublicIPv6, tc.pub6)
			}
			if tc.pub6 == "" && ext.PublicIPv6.IsValid() {
				t.Errorf("IPv6 address %s returned with IPv6 off", ext.PublicIPv6)
			}
			if ext.MTU != 1500 || ext.Index == 0 {
				t.Errorf("mtu %d index %d", ext.MTU, ext.Index)
			}
		})
	}
}
