package udp

import (
	"bytes"
	"fmt"
	"io"
	"net/netip"
	"testing"

	"github.com/flanneld-go/flannel/subnet"
)

func BenchmarkChecksum64K(b *testing.B) {
	buf := pattern(65536)
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		checksum(buf, 0)
	}
}

func BenchmarkSplitTCP(b *testing.B) {
	h, super := tsoPacket(pattern(65000), 1420)
	hdr := make([]byte, 128)
	b.SetBytes(int64(len(super)))
	for b.Loop() {
		s, _ := splitTCP(super, h)
		for i := range s.count {
			s.header(super, i, hdr)
		}
	}
}

func BenchmarkCoalesce(b *testing.B) {
	h, super := tsoPacket(pattern(65000), 1420)
	segs := segments(b, super, h)
	co := newCoalescer()
	b.SetBytes(int64(len(super)))
	for b.Loop() {
		co.start(segs[0])
		for _, s := range segs[1:] {
			co.add(s)
		}
		co.finish()
	}
}

// BenchmarkCommit10k: one peer changes among 10,000 dual-stack peers (a
// tenth of them vxlan, accepted but not forwarded to), and the table is
// rebuilt and published: the cost of one incremental pass.
func BenchmarkCommit10k(b *testing.B) {
	x := testBackend(io.Discard)
	var peers []subnet.Lease
	for i := range 10000 {
		typ := TypeName
		if i%10 == 0 {
			typ = "vxlan"
		}
		p := lease(fmt.Sprintf("10.%d.%d.0/24", 100+i/256, i%256), fmt.Sprintf("192.168.%d.%d", i/250, 1+i%250), typ)
		p.IPv6Subnet = netip.MustParsePrefix(fmt.Sprintf("fd00:244:%x::/64", i))
		peers = append(peers, p)
		x.Track(p)
	}
	x.Commit()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		p := peers[i%len(peers)]
		p.Attrs.PublicIP = netip.MustParseAddr(fmt.Sprintf("192.168.100.%d", 1+i%200))
		i++
		x.Track(p)
		x.Commit()
	}
	if n := len(x.table.Load().routes); n != 2*9000 {
		b.Fatalf("%d routes, want 18000", n)
	}
}

// Sinks for the loop benchmarks: they take batches and keep nothing, so
// any allocation measured is the loop's.
type discardTUN struct{ pkts int }

func (d *discardTUN) Read([][]byte, []int, int) (int, error) { return 0, nil }
func (d *discardTUN) Write(pkts [][][]byte) (int, error)     { d.pkts += len(pkts); return len(pkts), nil }
func (d *discardTUN) BatchSize() int                         { return readBatch }
func (d *discardTUN) Close() error                           { return nil }

type discardConn struct{ msgs int }

func (d *discardConn) ReadBatch([]rxMsg) (int, error)    { return 0, nil }
func (d *discardConn) WriteBatch(m []txMsg) (int, error) { d.msgs += len(m); return len(m), nil }
func (d *discardConn) BatchSize() int                    { return recvBatch }
func (d *discardConn) Close() error                      { return nil }

// benchSender is a sender whose first read buffer holds a 64 KB TSO
// super-packet for peer12.
func benchSender(gso bool) (*sender, int) {
	b := testBackend(io.Discard)
	b.gso.Store(gso)
	x := newSender(b, &discardTUN{}, &discardConn{}, &counters{})
	h, super := tsoPacket(pattern(64000), 1420)
	x.sizes[0] = copy(x.bufs[0], withHdr(h, super)) - vnetHdrLen
	return x, len(super)
}

// benchReceiver is a receiver whose first message is a UDP_GRO run of 44
// segments of one flow from peer12; restore puts back the first segment's
// headers, which coalescing rewrites.
func benchReceiver() (x *receiver, restore func(), n int) {
	x = newReceiver(testBackend(io.Discard), &discardTUN{}, &discardConn{}, &counters{}, true)
	segs, _ := flow(44, 1420)
	data := bytes.Join(segs, nil)
	m := &x.msgs[0]
	m.n, m.src, m.segSize = copy(m.buf, data), peer12, len(segs[0])
	return x, func() { copy(m.buf, segs[0][:ipv4HeaderLen+tcpHeaderLen]) }, len(data)
}

func BenchmarkSendSuperPacket(b *testing.B) {
	for _, gso := range []bool{true, false} {
		b.Run(map[bool]string{true: "gso", false: "no-gso"}[gso], func(b *testing.B) {
			x, n := benchSender(gso)
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				x.forward(1)
			}
		})
	}
}

func BenchmarkReceiveGRO(b *testing.B) {
	x, restore, n := benchReceiver()
	b.SetBytes(int64(n))
	b.ReportAllocs()
	for b.Loop() {
		restore()
		x.deliver(1)
	}
}

// TestLoopsAllocateNothing: a wake-up of either loop, batches of offloaded
// traffic included, allocates nothing.
func TestLoopsAllocateNothing(t *testing.T) {
	snd, _ := benchSender(true)
	rcv, restore, _ := benchReceiver()
	if a := testing.AllocsPerRun(100, func() { snd.forward(1) }); a != 0 {
		t.Errorf("sender: %v allocations per wake-up", a)
	}
	if a := testing.AllocsPerRun(100, func() { restore(); rcv.deliver(1) }); a != 0 {
		t.Errorf("receiver: %v allocations per wake-up", a)
	}
	if s := snd.udp.(*discardConn); s.msgs == 0 {
		t.Error("the sender sent nothing")
	}
	if d := rcv.tun.(*discardTUN); d.pkts != 101 {
		t.Errorf("the receiver wrote %d packets in 101 wake-ups, want one super-packet each", d.pkts)
	}
}
