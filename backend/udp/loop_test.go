package udp

import (
	"bytes"
	"io"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/flanneld-go/flannel/backend"
	"github.com/flanneld-go/flannel/subnet"
)

// loopTest runs one packet loop (sender or receiver) of a backend whose
// table is testTable(), over a fakeTUN and a fakeConn. Drive it with
// packets on tun.In / conn.In; a marker packet sent last tells when the
// loop has handled everything before it (a loop handles packets in order).
type loopTest struct {
	t    *testing.T
	b    *Backend
	logs bytes.Buffer // read only after stop
	tun  *fakeTUN
	conn *fakeConn
	c    *counters
	done chan error
	ran  bool
}

var (
	peer12   = netip.MustParseAddrPort("192.168.50.12:8285") // 10.244.2.0/24 and fd00:244:0:2::/64
	peer13   = netip.MustParseAddrPort("192.168.50.13:8285") // 10.244.3.0/24
	stranger = netip.MustParseAddrPort("192.168.50.200:8285")
	pod6A    = netip.MustParseAddr("fd00:244:0:1::2") // in our lease
	pod6B    = netip.MustParseAddr("fd00:244:0:2::5") // on peer12
)

func newLoopTest(t *testing.T, vnet bool) *loopTest {
	l := &loopTest{t: t, tun: newFakeTUN(vnet, 16), conn: newFakeConn(16), c: &counters{}, done: make(chan error, 1)}
	l.b = testBackend(&l.logs)
	return l
}

// testBackend is a dual-stack backend that has not touched the kernel,
// with testTable() published and GSO on, logging to logs.
func testBackend(logs io.Writer) *Backend {
	ext := &backend.ExternalInterface{Name: "eth0", MTU: 1500, Addr: netip.MustParseAddr("192.168.50.11")}
	cfg := &subnet.Config{Network: netip.MustParsePrefix("10.244.0.0/16"), EnableIPv6: true, IPv6Network: netip.MustParsePrefix("fd00:244::/56")}
	b := New(ext, cfg, Options{Type: TypeName, Port: DefaultPort}, Tuning{}, slog.New(slog.NewTextHandler(logs, nil)))
	b.table.Store(testTable())
	b.gso.Store(true)
	return b
}

func (l *loopTest) startSender() {
	x := newSender(l.b, l.tun, l.conn, l.c)
	l.start(x.run)
}

func (l *loopTest) startReceiver(coalesce bool) {
	x := newReceiver(l.b, l.tun, l.conn, l.c, coalesce)
	l.start(x.run)
}

func (l *loopTest) start(run func() error) {
	l.ran = true
	go func() { l.done <- run() }()
	l.t.Cleanup(l.stop)
}

// stop closes the fakes and waits for the loop to return: after it the
// counters and the Out channels hold everything the loop did.
func (l *loopTest) stop() {
	if !l.ran {
		return
	}
	l.ran = false
	l.tun.Close()
	l.conn.Close()
	select {
	case err := <-l.done:
		if !closedErr(err) {
			l.t.Errorf("the loop ended with %v, want a closed error", err)
		}
	case <-time.After(5 * time.Second):
		l.t.Fatal("the loop did not return after its descriptors were closed")
	}
}

func (l *loopTest) stats() Stats {
	s := Stats{Drops: make(map[string]uint64, numDrops)}
	l.c.addTo(&s)
	return s
}

// wantDrops checks every drop counter: those not in want must be zero.
func (l *loopTest) wantDrops(want map[string]uint64) {
	l.t.Helper()
	got := l.stats().Drops
	bad := false
	for _, n := range dropNames {
		if got[n] != want[n] {
			l.t.Errorf("drop_%s = %d, want %d", n, got[n], want[n])
			bad = true
		}
	}
	for n := range want {
		if _, ok := got[n]; !ok {
			l.t.Errorf("no drop reason %q", n)
		}
	}
	if bad {
		l.t.Logf("all drops: %v", got)
	}
}

// Markers: an echo request from a pod of ours to peer12's (sender) or
// back (receiver), of a size no other test packet has.
var (
	txMarker = icmpEcho(podA, podB, 77)
	rxMarker = icmpEcho(podB, podA, 77)
)

// sendMarker queues the sender's marker, behind an empty virtio header.
func (l *loopTest) sendMarker() { l.tun.In <- withHdr(vnetHdr{}, txMarker) }

// recvMarker queues the receiver's marker, from peer12.
func (l *loopTest) recvMarker() { l.conn.In <- datagram{addr: peer12, data: rxMarker} }

// sent returns the messages the sender wrote before its marker.
func (l *loopTest) sent() []datagram {
	l.t.Helper()
	return until(l.t, l.conn.Out, func(d datagram) bool { return d.addr == peer12 && bytes.Equal(d.data, txMarker) })
}

// written returns the packets (virtio header, packet) the receiver wrote
// to the TUN before its marker.
func (l *loopTest) written() [][]byte {
	l.t.Helper()
	return until(l.t, l.tun.Out, func(b []byte) bool { return bytes.Equal(b[vnetHdrLen:], rxMarker) })
}

func until[T any](t *testing.T, ch <-chan T, marker func(T) bool) []T {
	t.Helper()
	var out []T
	timeout := time.After(5 * time.Second)
	for {
		select {
		case v := <-ch:
			if marker(v) {
				return out
			}
			out = append(out, v)
		case <-timeout:
			t.Fatalf("no marker after %d outputs", len(out))
		}
	}
}

// drain returns what is left on ch (call after stop).
func drain[T any](ch <-chan T) []T {
	var out []T
	for {
		select {
		case v := <-ch:
			out = append(out, v)
		default:
			return out
		}
	}
}

// datagrams cuts messages into the datagrams the kernel puts on the wire
// (a GSO message into segSize pieces), checking each goes to dst.
func datagrams(t *testing.T, msgs []datagram, dst netip.AddrPort) [][]byte {
	t.Helper()
	var out [][]byte
	for _, m := range msgs {
		if m.addr != dst {
			t.Errorf("message to %s, want %s", m.addr, dst)
		}
		seg := len(m.data)
		if m.segSize > 0 {
			seg = m.segSize
		}
		for off := 0; off < len(m.data); off += seg {
			out = append(out, m.data[off:min(off+seg, len(m.data))])
		}
	}
	return out
}
