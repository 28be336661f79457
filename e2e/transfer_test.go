package e2e_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flanneld-go/flannel/e2e/testbed"
)

// pacedTransfer is a long TCP transfer between two pods, paced so it spans
// what the test does meanwhile; both ends hash what they saw.
type pacedTransfer struct {
	stop         chan struct{}
	done         sync.WaitGroup
	sent, recv   int64
	sentH, recvH [sha256.Size]byte
	sendErr      error
	recvErr      error
}

// startTransfer connects src to a listener in dst and sends pseudo-random
// data, about rate bytes a second, until finish.
func startTransfer(t *testing.T, ctx context.Context, src, dst *testbed.Pod, rate int) *pacedTransfer {
	t.Helper()
	ln, err := dst.Listen("tcp", net.JoinHostPort(dst.Addr.String(), "5001"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	x := &pacedTransfer{stop: make(chan struct{})}
	x.done.Add(2)
	go x.receive(ln)
	c, err := src.Dial(ctx, "tcp", net.JoinHostPort(dst.Addr.String(), "5001"))
	if err != nil {
		t.Fatal(err)
	}
	go x.send(c.(*net.TCPConn), rate)
	return x
}

func (x *pacedTransfer) receive(ln net.Listener) {
	defer x.done.Done()
	c, err := ln.Accept()
	if err != nil {
		x.recvErr = err
		return
	}
	defer c.Close()
	h := sha256.New()
	c.SetDeadline(time.Now().Add(5 * time.Minute))
	x.recv, x.recvErr = io.Copy(h, c)
	copy(x.recvH[:], h.Sum(nil))
}

func (x *pacedTransfer) send(c *net.TCPConn, rate int) {
	defer x.done.Done()
	defer c.Close()
	rng := rand.New(rand.NewPCG(7, 11))
	h := sha256.New()
	buf := make([]byte, rate/100) // every 10 ms
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	c.SetDeadline(time.Now().Add(5 * time.Minute))
	for {
		select {
		case <-x.stop:
			copy(x.sentH[:], h.Sum(nil))
			x.sendErr = c.CloseWrite()
			return
		case <-tick.C:
		}
		for i := range buf {
			buf[i] = byte(rng.Uint32())
		}
		n, err := c.Write(buf)
		h.Write(buf[:n])
		x.sent += int64(n)
		if err != nil {
			x.sendErr = err
			copy(x.sentH[:], h.Sum(nil))
			return
		}
	}
}

// finish stops sending and checks that every byte arrived intact.
func (x *pacedTransfer) finish(t *testing.T) {
	t.Helper()
	close(x.stop)
	x.done.Wait()
	switch {
	case x.sendErr != nil || x.recvErr != nil:
		t.Errorf("TCP transfer broke: send %v, receive %v (%d bytes sent, %d received)", x.sendErr, x.recvErr, x.sent, x.recv)
	case x.sent != x.recv || !bytes.Equal(x.sentH[:], x.recvH[:]):
		t.Errorf("TCP transfer corrupt: %d bytes sent (sha256 %x), %d received (sha256 %x)", x.sent, x.sentH, x.recv, x.recvH)
	case x.sent == 0:
		t.Error("TCP transfer sent nothing")
	default:
		t.Logf("TCP transfer: %d bytes, sha256 %x on both ends", x.sent, x.sentH[:8])
	}
}

// streams are ping streams between pods of every ordered pair of hosts.
type streams struct {
	names []string
	ps    []*pingStream
}

func startMeshStreams(t *testing.T, ctx context.Context, tb *testbed.Testbed, interval string, addr func(*testbed.Pod) netip.Addr) *streams {
	t.Helper()
	s := &streams{}
	for _, a := range tb.Hosts() {
		for _, b := range tb.Hosts() {
			if a == b {
				continue
			}
			src, dst := a.Pods[0], b.Pods[0]
			s.names = append(s.names, fmt.Sprintf("%s -> %s (%s)", src.Name, dst.Name, addr(dst)))
			s.ps = append(s.ps, startPingStreamEvery(t, ctx, src, addr(dst), interval))
		}
	}
	return s
}

// stop ends the streams and fails the test for every lost ping.
func (s *streams) stop(t *testing.T) {
	t.Helper()
	var total int
	for i, p := range s.ps {
		replies, lost := p.stop(t)
		total += replies
		if len(lost) > 0 {
			t.Errorf("pings %s: %d lost of %d (icmp_seq %v, the first after the reply of %s)", s.names[i], len(lost), replies+len(lost), lost,
				p.ReplyTime(lost[0]-1))
		}
		if replies == 0 {
			t.Errorf("pings %s: no reply at all", s.names[i])
		}
	}
	t.Logf("%d ping streams, %d replies", len(s.ps), total)
}

func podAddr4(p *testbed.Pod) netip.Addr { return p.Addr }

// countIn counts the occurrences of s in a host's log.
func countIn(h *testbed.Host, s string) int { return strings.Count(h.Log(), s) }
