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

const (
	hostgwConf = `{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}`
	vxlanConf  = `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","VNI":4}}`
)

// startConfigWatch runs WatchConfig from the value the key holds now (as
// the daemon's first read), until the test ends; it fails the test if
// WatchConfig returns an error or leaves its channel open.
func startConfigWatch(t *testing.T, m *Manager, from []byte) <-chan ConfigChange {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan ConfigChange)
	done := make(chan error, 1)
	go func() { done <- m.WatchConfig(ctx, from, ch) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("WatchConfig: %v", err)
		}
		if _, open := <-ch; open {
			t.Error("WatchConfig left its channel open")
		}
	})
	return ch
}

func recvChange(t *testing.T, ch <-chan ConfigChange, within time.Duration) ConfigChange {
	t.Helper()
	select {
	case c := <-ch:
		return c
	case <-time.After(within):
		t.Fatalf("no config change within %v", within)
	}
	return ConfigChange{}
}

func noChange(t *testing.T, ch <-chan ConfigChange) {
	t.Helper()
	select {
	case c := <-ch:
		t.Fatalf("unexpected change %+v (raw %s)", c, c.Raw)
	case <-time.After(300 * time.Millisecond):
	}
}

func mustPut(t *testing.T, cli *clientv3.Client, key, value string) int64 {
	t.Helper()
	resp, err := cli.Put(context.Background(), key, value)
	if err != nil {
		t.Fatal(err)
	}
	return resp.Header.Revision
}

// TestWatchConfig: each new value is one change, parsed; the same bytes
// again are none; an invalid document is a change with the error; a
// delete is Deleted.
func TestWatchConfig(t *testing.T) {
	m, cli, _ := testManager(t, hostgwConf, time.Hour)
	raw, cfg, _, err := m.GetConfigRaw(ctxT(t))
	if err != nil || string(raw) != hostgwConf || cfg.BackendType != "host-gw" {
		t.Fatalf("GetConfigRaw: %q %v %v", raw, cfg, err)
	}
	ch := startConfigWatch(t, m, raw)
	noChange(t, ch)
	mustPut(t, cli, m.ConfigKey(), hostgwConf)
	noChange(t, ch)

	rev := mustPut(t, cli, m.ConfigKey(), vxlanConf)
	c := recvChange(t, ch, 5*time.Second)
	if c.Err != nil || c.Deleted || c.Config == nil || c.Config.BackendType != "vxlan" || string(c.Raw) != vxlanConf || c.Revision != rev {
		t.Fatalf("change to vxlan: %+v (raw %s), want revision %d", c, c.Raw, rev)
	}
	mustPut(t, cli, m.ConfigKey(), vxlanConf)
	noChange(t, ch)

	mustPut(t, cli, m.ConfigKey(), `{"Network":`)
	c = recvChange(t, ch, 5*time.Second)
	if !errors.Is(c.Err, ErrInvalidConfig) || !strings.Contains(c.Err.Error(), m.ConfigKey()) || c.Config != nil || string(c.Raw) != `{"Network":` {
		t.Fatalf("invalid document: %+v", c)
	}
	if raw, _, _, err := m.GetConfigRaw(ctxT(t)); !errors.Is(err, ErrInvalidConfig) || string(raw) != `{"Network":` {
		t.Errorf("GetConfigRaw of an invalid document: %q %v", raw, err)
	}

	if _, err := cli.Delete(context.Background(), m.ConfigKey()); err != nil {
		t.Fatal(err)
	}
	c = recvChange(t, ch, 5*time.Second)
	if !c.Deleted || c.Raw != nil || c.Config != nil || c.Err != nil {
		t.Fatalf("delete: %+v", c)
	}
	mustPut(t, cli, m.ConfigKey(), hostgwConf)
	if c = recvChange(t, ch, 5*time.Second); c.Deleted || c.Config == nil || c.Config.BackendType != "host-gw" {
		t.Fatalf("recreated: %+v", c)
	}
}

// TestWatchConfigFromBaseline: a change made after the caller's read but
// before the watch started is reported first; nothing is reported when the
// key holds the baseline. A nil baseline is a missing key.
func TestWatchConfigFromBaseline(t *testing.T) {
	m, cli, _ := testManager(t, hostgwConf, time.Hour)
	raw, _, err := m.WaitConfigRaw(ctxT(t))
	if err != nil || string(raw) != hostgwConf {
		t.Fatalf("WaitConfigRaw: %q %v", raw, err)
	}
	rev := mustPut(t, cli, m.ConfigKey(), vxlanConf)
	ch := startConfigWatch(t, m, raw)
	if c := recvChange(t, ch, 5*time.Second); c.Config == nil || c.Config.BackendType != "vxlan" || c.Revision != rev {
		t.Fatalf("first change %+v, want vxlan at revision %d", c, rev)
	}
	noChange(t, ch)

	empty := NewManager(cli, testPrefix(t), time.Hour, quiet)
	ch = startConfigWatch(t, empty, nil)
	noChange(t, ch)
	mustPut(t, cli, empty.ConfigKey(), vxlanConf)
	if c := recvChange(t, ch, 5*time.Second); c.Config == nil || c.Deleted {
		t.Fatalf("first value of a missing key: %+v", c)
	}
}

// TestWatchConfigAfterCompaction: a watch from a compacted revision
// returns at once, so that WatchConfig re-reads the key.
func TestWatchConfigAfterCompaction(t *testing.T) {
	m, cli, _ := testManager(t, hostgwConf, time.Hour)
	old := mustPut(t, cli, m.ConfigKey(), vxlanConf)
	now := mustPut(t, cli, m.ConfigKey(), hostgwConf)
	if _, err := cli.Compact(context.Background(), now); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out := make(chan ConfigChange, 1)
	last := configState{present: true, raw: []byte(vxlanConf)}
	m.watchConfigFrom(ctx, old, &last, out)
	if ctx.Err() != nil {
		t.Fatal("watchConfigFrom did not return on a compaction")
	}
	if len(out) != 0 {
		t.Fatalf("a change from a compacted watch: %+v", <-out)
	}
}

// TestWatchConfigSurvivesOutage: etcd goes away; meanwhile the net-conf
// changes and the history is compacted; when etcd is back the new value
// is reported once, by a re-established watch.
func TestWatchConfigSurvivesOutage(t *testing.T) {
	px := newCutProxy(t, strings.TrimPrefix(etcdSrv.Endpoint, "http://"))
	cc, err := clientConfig(Config{Endpoints: []string{"http://" + px.addr}})
	if err != nil {
		t.Fatal(err)
	}
	cli, err := clientv3.New(cc)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	direct := etcdSrv.Client(t)
	m := NewManager(cli, testPrefix(t), time.Hour, quiet)
	mustPut(t, direct, m.ConfigKey(), hostgwConf)
	ch := startConfigWatch(t, m, []byte(hostgwConf))
	noChange(t, ch)

	px.cut()
	rev := mustPut(t, direct, m.ConfigKey(), vxlanConf)
	// Compact past the change, so that the watch cannot simply resume.
	past := mustPut(t, direct, m.ConfigKey()+"-other", "x")
	if _, err := direct.Compact(context.Background(), past); err != nil {
		t.Fatal(err)
	}
	noChange(t, ch)
	px.restore(t)
	c := recvChange(t, ch, 30*time.Second)
	if c.Config == nil || c.Config.BackendType != "vxlan" || c.Revision != rev {
		t.Fatalf("change after the outage: %+v, want vxlan at %d", c, rev)
	}
	if m.ConfigWatchRestarts() == 0 {
		t.Error("the watch was not re-established")
	}
	noChange(t, ch)
}

// cutProxy forwards connections to target; cut closes them all and stops
// listening (etcd is down), restore listens again on the same address.
type cutProxy struct {
	addr, target string
	mu           sync.Mutex
	ln           net.Listener
	conns        []net.Conn
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	p := &cutProxy{target: target}
	p.listen(t, "127.0.0.1:0")
	p.addr = p.ln.Addr().String()
	t.Cleanup(p.cut)
	return p
}

func (p *cutProxy) listen(t *testing.T, addr string) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go p.serve(ln)
}

func (p *cutProxy) restore(t *testing.T) { p.listen(t, p.addr) }

func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ln.Close()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func (p *cutProxy) serve(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, up)
		p.mu.Unlock()
		go func() { io.Copy(up, c); up.Close() }()
		go func() { io.Copy(c, up); c.Close() }()
	}
}
