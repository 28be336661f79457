package etcd

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestKeepaliveSettings: the client pings a quiet connection and gives up
// on it within 30 s in all.
func TestKeepaliveSettings(t *testing.T) {
	cc, err := clientConfig(Config{Endpoints: []string{"http://127.0.0.1:2379"}})
	if err != nil {
		t.Fatal(err)
	}
	if cc.DialKeepAliveTime <= 0 || cc.DialKeepAliveTimeout <= 0 {
		t.Fatalf("keepalive off: time %v timeout %v", cc.DialKeepAliveTime, cc.DialKeepAliveTimeout)
	}
	if d := cc.DialKeepAliveTime + cc.DialKeepAliveTimeout; d > 30*time.Second {
		t.Errorf("a dead connection is noticed only after %v", d)
	}
	if cc.DialKeepAliveTime < 10*time.Second {
		t.Errorf("keepalive time %v: gRPC raises it to 10 s and etcd may refuse pings that frequent", cc.DialKeepAliveTime)
	}
	if cc.PermitWithoutStream {
		t.Error("pings without a stream: etcd's keepalive policy (PermitWithoutStream false) answers them with GOAWAY")
	}
}

// TestKeepaliveReplacesDeadConnection: a connection to etcd that stops
// carrying anything while staying open (a blackhole: no reset, no error)
// is dropped by the keepalive and replaced by a new one, on which reads
// and the watch work again. Without the keepalive the client would wait
// on the dead connection indefinitely. The ping timeout is shortened to
// 1 s; the ping interval is clientConfig's (10 s, gRPC's floor), so this
// takes ~11 s.
func TestKeepaliveReplacesDeadConnection(t *testing.T) {
	if testing.Short() {
		t.Skip("takes ~11 s (gRPC's minimum keepalive interval)")
	}
	t.Parallel()
	bh := newBlackhole(t, strings.TrimPrefix(etcdSrv.Endpoint, "http://"))
	cc, err := clientConfig(Config{Endpoints: []string{"http://" + bh.addr()}})
	if err != nil {
		t.Fatal(err)
	}
	cc.DialKeepAliveTimeout = time.Second // the ping interval stays clientConfig's
	cli, err := clientv3.New(cc)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	key := testPrefix(t) + "/k"
	wch := cli.Watch(ctx, key) // the open stream that keeps the pings going
	if _, err := cli.Put(ctx, key, "before"); err != nil {
		t.Fatal(err)
	}
	if ev := <-wch; len(ev.Events) != 1 {
		t.Fatalf("watch: %+v", ev)
	}
	if n := bh.accepted(); n != 1 {
		t.Fatalf("%d connections before the blackhole, want 1", n)
	}

	start := time.Now()
	bh.freeze()
	for bh.accepted() < 2 {
		if time.Since(start) > 25*time.Second {
			t.Fatal("the dead connection was not replaced within 25 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("dead connection replaced after %v", time.Since(start).Round(100*time.Millisecond))
	rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
	defer rcancel()
	if _, err := cli.Put(rctx, key, "after"); err != nil {
		t.Fatalf("put on the new connection: %v", err)
	}
	select {
	case ev := <-wch:
		if len(ev.Events) != 1 || string(ev.Events[0].Kv.Value) != "after" {
			t.Fatalf("watch after the new connection: %+v %v", ev.Events, ev.Err())
		}
	case <-rctx.Done():
		t.Fatal("the watch did not resume on the new connection")
	}
}

// blackhole is a TCP proxy to target whose connections can be frozen:
// they stay open but carry nothing more, in either direction. Connections
// accepted after the freeze are forwarded normally.
type blackhole struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	n     int // connections accepted
	gen   int // connections numbered below gen are frozen
	conns []net.Conn
}

func newBlackhole(t *testing.T, target string) *blackhole {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &blackhole{ln: ln, target: target}
	t.Cleanup(b.close)
	go b.serve()
	return b
}

func (b *blackhole) addr() string { return b.ln.Addr().String() }

func (b *blackhole) accepted() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.n
}

// freeze stops every connection accepted so far.
func (b *blackhole) freeze() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.gen = b.n
}

func (b *blackhole) isFrozen(id int) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return id < b.gen
}

func (b *blackhole) close() {
	b.ln.Close()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range b.conns {
		c.Close()
	}
}

func (b *blackhole) serve() {
	for {
		c, err := b.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", b.target)
		if err != nil {
			c.Close()
			continue
		}
		b.mu.Lock()
		id := b.n
		b.n++
		b.conns = append(b.conns, c, up)
		b.mu.Unlock()
		go b.pipe(id, up, c)
		go b.pipe(id, c, up)
	}
}

// pipe copies src to dst until either fails or the connection is frozen;
// a frozen connection's sockets stay open (nothing is reset) until close.
func (b *blackhole) pipe(id int, dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if b.isFrozen(id) {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				dst.Close()
			}
			return
		}
	}
}
