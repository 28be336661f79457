package udp

import (
	"bytes"
	"net"
	"net/netip"
	"os"
	"sync"
)

// Channel-backed fakes of tunIO and udpIO (in the manner of wireguard-go's
// tun/tuntest): a test puts what the kernel would hand over into In and
// takes what the packet loops wrote from Out. Out is buffered generously
// so a loop never blocks on a test that reads late.

// fakeTUN is a tunIO. Packets on In and Out are a virtio_net_hdr followed
// by the packet.
type fakeTUN struct {
	vnet  bool // false: Read gives empty headers, Write must get empty ones
	batch int
	In    chan []byte
	Out   chan []byte
	// writeErr, when set before the loop starts, may refuse a packet.
	writeErr func(pkt []byte) error

	mu        sync.Mutex
	badHeader int // headers written to a device without IFF_VNET_HDR that were not empty
	writes    int // Write calls
	closed    chan struct{}
	closeOnce sync.Once
}

func newFakeTUN(vnet bool, batch int) *fakeTUN {
	return &fakeTUN{vnet: vnet, batch: batch, In: make(chan []byte, 1024), Out: make(chan []byte, 1024), closed: make(chan struct{})}
}

func (f *fakeTUN) BatchSize() int { return f.batch }

func (f *fakeTUN) Close() error {
	f.closeOnce.Do(func() { close(f.closed) })
	return nil
}

// Read blocks for the first packet and takes the others already queued.
func (f *fakeTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	var p []byte
	select {
	case p = <-f.In:
	case <-f.closed:
		return 0, os.ErrClosed
	}
	n := 0
	for {
		hdr := bufs[n][offset-vnetHdrLen : offset]
		copy(hdr, p[:vnetHdrLen])
		if !f.vnet {
			clear(hdr)
		}
		sizes[n] = copy(bufs[n][offset:], p[vnetHdrLen:])
		if n++; n == min(len(bufs), f.batch) {
			return n, nil
		}
		select {
		case p = <-f.In:
		default:
			return n, nil
		}
	}
}

// Write joins each packet's parts, as writev does.
func (f *fakeTUN) Write(pkts [][][]byte) (int, error) {
	f.mu.Lock()
	f.writes++
	if !f.vnet {
		for _, p := range pkts {
			if !bytes.Equal(p[0], make([]byte, vnetHdrLen)) {
				f.badHeader++
			}
		}
	}
	f.mu.Unlock()
	for i, p := range pkts {
		b := bytes.Join(p, nil)
		if f.writeErr != nil {
			if err := f.writeErr(b[vnetHdrLen:]); err != nil {
				return i, err
			}
		}
		if !send(f.Out, b, f.closed) {
			return i, os.ErrClosed
		}
	}
	return len(pkts), nil
}

// datagram is one message on a fakeConn: from (In) or to (Out) addr, a
// run of segSize-byte datagrams when segSize > 0.
type datagram struct {
	addr    netip.AddrPort
	data    []byte
	segSize int
}

// fakeConn is a udpIO.
type fakeConn struct {
	batch int
	In    chan datagram
	Out   chan datagram
	// sendErr, when set before the loop starts, may refuse a message.
	sendErr func(d datagram) error

	closed    chan struct{}
	closeOnce sync.Once
}

func newFakeConn(batch int) *fakeConn {
	return &fakeConn{batch: batch, In: make(chan datagram, 1024), Out: make(chan datagram, 1024), closed: make(chan struct{})}
}

func (f *fakeConn) BatchSize() int { return f.batch }

func (f *fakeConn) Close() error {
	f.closeOnce.Do(func() { close(f.closed) })
	return nil
}

func (f *fakeConn) ReadBatch(msgs []rxMsg) (int, error) {
	var d datagram
	select {
	case d = <-f.In:
	case <-f.closed:
		return 0, net.ErrClosed
	}
	n := 0
	for {
		m := &msgs[n]
		m.n = copy(m.buf, d.data)
		m.src, m.segSize = d.addr, d.segSize
		if n++; n == min(len(msgs), f.batch) {
			return n, nil
		}
		select {
		case d = <-f.In:
		default:
			return n, nil
		}
	}
}

func (f *fakeConn) WriteBatch(msgs []txMsg) (int, error) {
	for i, m := range msgs {
		d := datagram{addr: m.dst, data: bytes.Join(m.bufs, nil), segSize: m.segSize}
		if f.sendErr != nil {
			if err := f.sendErr(d); err != nil {
				return i, err
			}
		}
		if !send(f.Out, d, f.closed) {
			return i, net.ErrClosed
		}
	}
	return len(msgs), nil
}

// send puts v on ch unless closed is closed first; a free slot wins over
// a close, so what was written before a Close is never lost.
func send[T any](ch chan<- T, v T, closed <-chan struct{}) bool {
	select {
	case ch <- v:
		return true
	default:
	}
	select {
	case ch <- v:
		return true
	case <-closed:
		return false
	}
}

var (
	_ tunIO = (*fakeTUN)(nil)
	_ udpIO = (*fakeConn)(nil)
)
