package e2e_test

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flanneld-go/flannel/e2e/testbed"
)

// TestUDPForgedDatagrams: from a peer host, datagrams sent from another
// port than the backend's, and datagrams from the backend port whose
// inner source lies outside that peer's subnet, never reach a pod (the
// pod's UDP counters see only the one genuine datagram sent after them);
// each kind is counted by reason on /metrics and warned about once, and
// pings between the pods go on without loss meanwhile.
func TestUDPForgedDatagrams(t *testing.T) {
	requireTestbed(t)
	ctx := ctxFor(t, 2*time.Minute)
	tb := newCluster(t, ctx, udpBackend, 2, 1, testbed.Options{}, "--healthz-port", "9100")
	h1, h2 := tb.Hosts()[0], tb.Hosts()[1]
	p1, p2 := h1.Pods[0], h2.Pods[0]
	if err := p1.WaitPing(ctx, p2.Addr); err != nil {
		t.Fatal(err)
	}
	sn1, sn2 := leaseSubnet(t, ctx, h1), leaseSubnet(t, ctx, h2)
	// Forged inner sources: another pod address of h1's own subnet, and
	// one of the Network that no host holds.
	a := sn1.Addr().As4()
	a[3] = 77
	spoofed := []netip.Addr{netip.AddrFrom4(a)}
	for _, a := range []string{"10.244.255.250", "10.244.254.250"} {
		if addr := netip.MustParseAddr(a); !sn1.Contains(addr) && !sn2.Contains(addr) && len(spoofed) < 2 {
			spoofed = append(spoofed, addr)
		}
	}
	pinged := make(chan error, 1)
	go func() { pinged <- p2.Ping(ctx, p1.Addr, 30) }()

	before := podUDPCounter(t, ctx, p1, "NoPorts")
	bin := probeBin(t)
	wire := netip.AddrPortFrom(h1.Addr, 8285).String()
	genuine := udp4Packet(p2.Addr, p1.Addr, 9, "forged?")
	// From h2's address, an ephemeral port: wrong_port.
	if out, err := h2.Exec(ctx, bin, "udp", wire, genuine, genuine, genuine, genuine, genuine); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	// From h2's address and port 8285, with forged inner sources: spoofed_source.
	var forged []string
	for range 3 {
		for _, src := range spoofed {
			forged = append(forged, udp4Packet(src, p1.Addr, 9, "forged?"))
		}
	}
	from := netip.AddrPortFrom(h2.Addr, 8285).String()
	if out, err := h2.Exec(ctx, append([]string{bin, "rawudp", from, wire}, forged...)...); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	metric := func(reason string) string { return fmt.Sprintf("flannel_udp_drops_total{reason=%q}", reason) }
	want := map[string]int{metric("wrong_port"): 5, metric("spoofed_source"): len(forged)}
	waitFor(t, "h1 counts the forged datagrams on /metrics", 15*time.Second, func() bool {
		_, body := get(ctx, h1, "/metrics")
		for k, v := range want {
			if !strings.Contains(body, k+" "+strconv.Itoa(v)+"\n") {
				return false
			}
		}
		return true
	})
	// The genuine one, from the same port as the forged ones, reaches p1
	// (and bumps its NoPorts counter: nothing listens on port 9).
	if out, err := h2.Exec(ctx, bin, "rawudp", from, wire, genuine); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	waitFor(t, "the genuine datagram reaches p1", 10*time.Second, func() bool {
		return podUDPCounter(t, ctx, p1, "NoPorts") > before
	})
	if got := podUDPCounter(t, ctx, p1, "NoPorts"); got != before+1 {
		t.Errorf("p1 received %d datagrams for port 9, want only the genuine one", got-before)
	}
	// One warning per kind, naming the sender and the forged source.
	waitFor(t, "h1 warns about both kinds", 15*time.Second, func() bool {
		return strings.Contains(h1.Log(), "reason=wrong_port") && strings.Contains(h1.Log(), "reason=spoofed_source")
	})
	for reason, attrs := range map[string][]string{
		"wrong_port":     {"from=" + h2.Addr.String() + ":", "udp_port=8285"},
		"spoofed_source": {"from=" + from, "inner_src=" + spoofed[len(spoofed)-1].String(), "peer_subnet=" + sn2.String()},
	} {
		var lines []string
		for line := range strings.Lines(h1.Log()) {
			if strings.Contains(line, "level=WARN") && strings.Contains(line, "reason="+reason+" ") {
				lines = append(lines, line)
			}
		}
		if len(lines) != 1 {
			t.Errorf("%d warnings for %s, want 1:\n%s", len(lines), reason, strings.Join(lines, ""))
			continue
		}
		for _, a := range attrs {
			if !strings.Contains(lines[0], a) {
				t.Errorf("the %s warning lacks %q: %s", reason, a, lines[0])
			}
		}
	}
	if err := <-pinged; err != nil {
		t.Errorf("pings p2 -> p1 while forged datagrams arrived: %v", err)
	}
	if err := p1.Ping(ctx, p2.Addr, 3); err != nil {
		t.Errorf("pings p1 -> p2 after the forged datagrams: %v", err)
	}
}

// podUDPCounter reads one field of the Udp line of /proc/net/snmp in a
// pod's namespace.
func podUDPCounter(t *testing.T, ctx context.Context, p *testbed.Pod, field string) int {
	t.Helper()
	out, err := p.Exec(ctx, "cat", "/proc/net/snmp")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "Udp:" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		for i, n := range names {
			if n == field && i < len(f) {
				v, err := strconv.Atoi(f[i])
				if err != nil {
					t.Fatal(err)
				}
				return v
			}
		}
	}
	t.Fatalf("no Udp %s in /proc/net/snmp of %s:\n%s", field, p.Name, out)
	return 0
}

// udp4Packet renders an IPv4 UDP packet from src to dst:port carrying
// payload, with valid checksums (it must be able to reach a pod), in hex.
func udp4Packet(src, dst netip.Addr, port uint16, payload string) string {
	b := make([]byte, 28+len(payload))
	b[0], b[6], b[8], b[9] = 0x45, 0x40, 64, 17
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	s, d := src.As4(), dst.As4()
	copy(b[12:], s[:])
	copy(b[16:], d[:])
	binary.BigEndian.PutUint16(b[10:], inetChecksum(b[:20]))
	u := b[20:]
	binary.BigEndian.PutUint16(u[0:], 40000)
	binary.BigEndian.PutUint16(u[2:], port)
	binary.BigEndian.PutUint16(u[4:], uint16(len(u)))
	copy(u[8:], payload)
	ph := append(append([]byte{}, b[12:20]...), 0, 17, byte(len(u)>>8), byte(len(u)))
	c := inetChecksum(append(ph, u...))
	if c == 0 {
		c = 0xffff // zero means "no checksum"
	}
	binary.BigEndian.PutUint16(u[6:], c)
	return hex.EncodeToString(b)
}

// inetChecksum is the Internet checksum of b (RFC 1071).
func inetChecksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return ^uint16(s)
}
