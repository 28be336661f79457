package testbed

import (
	"net/netip"
	"os"
	"path/filepath"
	"testing"
)

func TestParseSource(t *testing.T) {
	for _, c := range []struct {
		line string
		want string // "" for no address
	}{
		{"IP 10.244.1.2 > 192.168.50.200: ICMP echo request, id 7, seq 1, length 64", "10.244.1.2"},
		{"IP 192.168.50.11.41234 > 192.168.50.200.5201: Flags [S], seq 1, length 0", "192.168.50.11"},
		{"IP6 fd00:50::11 > fd00:50::200: ICMP6, echo request, id 7, seq 1, length 64", "fd00:50::11"},
		{"IP6 fd00:10:244:1::2.41234 > fd00:50::200.5201: Flags [S], seq 1, length 0", "fd00:10:244:1::2"},
		{"ARP, Request who-has 192.168.50.200 tell 192.168.50.11, length 28", ""},
		{"", ""},
	} {
		got := ""
		if a, ok := parseSource(c.line); ok {
			got = a.String()
		}
		if got != c.want {
			t.Errorf("parseSource(%q) = %q, want %q", c.line, got, c.want)
		}
	}
}

func TestReadPodNet(t *testing.T) {
	path := filepath.Join(t.TempDir(), "subnet.env")
	env := "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n" +
		"FLANNEL_IPV6_NETWORK=fd00:10:244::/56\nFLANNEL_IPV6_SUBNET=\"fd00:10:244:3::1/64\"\n"
	if err := os.WriteFile(path, []byte(env), 0o644); err != nil {
		t.Fatal(err)
	}
	n, err := readPodNet(path)
	if err != nil {
		t.Fatal(err)
	}
	if n.gw4 != netip.MustParsePrefix("10.244.3.1/24") || n.gw6 != netip.MustParsePrefix("fd00:10:244:3::1/64") || n.mtu != 1450 {
		t.Errorf("readPodNet = %+v", n)
	}
}

func TestFreeAddr(t *testing.T) {
	h := &Host{Name: "h1"}
	gw := netip.MustParsePrefix("10.244.3.1/30") // .1 gateway, .2 the only pod address, .3 broadcast
	a, err := h.freeAddr(gw, func(p *Pod) netip.Addr { return p.Addr })
	if err != nil || a != netip.MustParseAddr("10.244.3.2") {
		t.Fatalf("freeAddr = %v, %v", a, err)
	}
	h.Pods = append(h.Pods, &Pod{Addr: a})
	if a, err := h.freeAddr(gw, func(p *Pod) netip.Addr { return p.Addr }); err == nil {
		t.Errorf("freeAddr on a full subnet = %v", a)
	}
}
