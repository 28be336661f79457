package udp

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/flanneld-go/flannel/internal/netnstest"
)

// The real tunIO and udpIO against the kernel, in a private network
// namespace (root only; the fakes cover the packet loops without it).

func TestMain(m *testing.M) { netnstest.Main(m) }

// TestSocketBatches: a GSO message leaves as datagrams of segSize bytes
// and, with UDP_GRO, arrives as one message with that size; a plain
// message arrives as one datagram; the source address is reported.
func TestSocketBatches(t *testing.T) {
	netnstest.Require(t)
	ctx := context.Background()
	lo := netip.MustParseAddr("127.0.0.1")
	a, err := listenUDP(ctx, netip.AddrPortFrom(lo, 0), false)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := listenUDP(ctx, netip.AddrPortFrom(lo, 0), false)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.enableGRO(); err != nil {
		t.Fatal(err)
	}
	from := a.conn.LocalAddr().(*net.UDPAddr).AddrPort()
	to := b.conn.LocalAddr().(*net.UDPAddr).AddrPort()
	data := pattern(350)
	msgs := []txMsg{
		// Four datagrams (100, 100, 100, 50 bytes) from parts that do not
		// line up with them.
		{bufs: [][]byte{data[:30], data[30:230], data[230:]}, dst: to, segSize: 100},
		{bufs: [][]byte{[]byte("plain")}, dst: to},
	}
	if n, err := a.WriteBatch(msgs); n != 2 || err != nil {
		t.Fatalf("WriteBatch: %d %v", n, err)
	}
	rx := make([]rxMsg, b.BatchSize())
	for i := range rx {
		rx[i].buf = make([]byte, maxPacket)
	}
	var got []rxMsg
	for len(got) < 2 {
		b.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := b.ReadBatch(rx)
		if err != nil {
			t.Fatalf("ReadBatch after %d messages: %v", len(got), err)
		}
		for _, m := range rx[:n] {
			m.buf = bytes.Clone(m.buf[:m.n])
			got = append(got, m)
		}
	}
	if len(got) != 2 {
		t.Fatalf("%d messages, want 2 (GRO keeps the run together)", len(got))
	}
	if g := got[0]; g.src != from || g.segSize != 100 || !bytes.Equal(g.buf, data) {
		t.Errorf("GSO message arrived as %d bytes from %s, segSize %d", g.n, g.src, g.segSize)
	}
	if g := got[1]; g.src != from || g.segSize != 0 || string(g.buf) != "plain" {
		t.Errorf("plain message arrived as %q from %s, segSize %d", g.buf, g.src, g.segSize)
	}
}

// tunForTest opens a TUN device flt0 (10.99.0.1/24, no IPv6: nothing but
// the test's packets goes through it) and removes it afterwards.
func tunForTest(t *testing.T, vnet bool) *tunQueue {
	t.Helper()
	netnstest.Require(t)
	d, err := openTun("flt0", offloadsWanted{vnet: vnet, queues: 1}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.close() })
	if d.vnet != vnet {
		t.Fatalf("vnet header %v, want %v", d.vnet, vnet)
	}
	os.WriteFile("/proc/sys/net/ipv6/conf/flt0/disable_ipv6", []byte("1"), 0o644)
	if out, err := exec.Command("sh", "-c", "ip addr add 10.99.0.1/24 dev flt0 && ip link set flt0 up").CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	return d.queues[0]
}

// TestTunBatches: a packet written as a gather list reaches the kernel,
// whose answer comes back from Read behind a virtio header (an empty one
// on a device without IFF_VNET_HDR).
func TestTunBatches(t *testing.T) {
	for _, vnet := range []bool{true, false} {
		q := tunForTest(t, vnet)
		local, remote := netip.MustParseAddr("10.99.0.1"), netip.MustParseAddr("10.99.0.2")
		echo := icmpEcho(remote, local, 300)
		hdr := make([]byte, vnetHdrLen)
		if n, err := q.Write([][][]byte{{hdr, echo[:20], echo[20:100], echo[100:]}}); n != 1 || err != nil {
			t.Fatalf("vnet %v: Write: %d %v", vnet, n, err)
		}
		bufs := [][]byte{make([]byte, vnetHdrLen+maxPacket), make([]byte, vnetHdrLen+maxPacket)}
		sizes := make([]int, len(bufs))
		for i := range bufs[0][:vnetHdrLen] {
			bufs[0][i] = 0xaa // must be overwritten
		}
		n, err := readTimeout(q, bufs, sizes)
		if err != nil || n != 1 {
			t.Fatalf("vnet %v: Read: %d %v", vnet, n, err)
		}
		var h vnetHdr
		h.decode(bufs[0])
		reply := bufs[0][vnetHdrLen : vnetHdrLen+sizes[0]]
		in, _, ok := decode(reply)
		if !ok || in.src != local || in.dst != remote || in.proto != protoICMP || reply[20] != 0 || h.gsoType != gsoNone {
			t.Fatalf("vnet %v: read % x (header %+v), want an echo reply", vnet, reply[:min(len(reply), 28)], h)
		}
		if !vnet && h != (vnetHdr{}) {
			t.Errorf("no vnet: header %+v, want all zero", h)
		}
		if !bytes.Equal(reply[28:], echo[28:]) {
			t.Errorf("vnet %v: echo payload changed", vnet)
		}
		q.Close() // the device goes with its only queue
		if n, err := q.Read(bufs, sizes, vnetHdrLen); n != 0 || !closedErr(err) {
			t.Errorf("vnet %v: Read after Close: %d %v", vnet, n, err)
		}
	}
}

// readTimeout is q.Read, failing after 5 s (a TUN file has no deadline:
// closing it unblocks the read).
func readTimeout(q *tunQueue, bufs [][]byte, sizes []int) (int, error) {
	timer := time.AfterFunc(5*time.Second, func() { q.Close() })
	defer timer.Stop()
	return q.Read(bufs, sizes, vnetHdrLen)
}
