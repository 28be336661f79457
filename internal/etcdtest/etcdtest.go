// Package etcdtest runs a real etcd server inside the test process
// (go.etcd.io/etcd/server/v3/embed) for tests of code that talks to etcd.
// No mock: the same server code that runs in production.
package etcdtest

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Server is a running embedded etcd.
type Server struct {
	Endpoint string
	etcd     *embed.Etcd
	dir      string
}

// Start runs an etcd listening on a free loopback port, with its data in a
// temporary directory. Call Close when done.
func Start() (*Server, error) { return start(nil) }

// TLSFiles are the PEM files of an etcd serving TLS.
type TLSFiles struct {
	CertFile, KeyFile string // server certificate (for 127.0.0.1) and key
	TrustedCAFile     string // CA that signs the accepted client certificates
}

// StartTLS is Start with an https:// client URL that requires a client
// certificate signed by TrustedCAFile, as "etcd --cert-file --key-file
// --trusted-ca-file --client-cert-auth". Server.Client does not work with
// it: connect with the client under test.
func StartTLS(f TLSFiles) (*Server, error) {
	return start(&transport.TLSInfo{CertFile: f.CertFile, KeyFile: f.KeyFile, TrustedCAFile: f.TrustedCAFile, ClientCertAuth: true})
}

func start(tlsInfo *transport.TLSInfo) (*Server, error) {
	dir, err := os.MkdirTemp("", "etcdtest-")
	if err != nil {
		return nil, err
	}
	cfg := embed.NewConfig()
	cfg.Name = "test"
	cfg.Dir = filepath.Join(dir, "data")
	cfg.LogLevel = "error"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	clientURL, err := freeURL()
	if err != nil {
		return nil, err
	}
	if tlsInfo != nil {
		clientURL.Scheme = "https"
		cfg.ClientTLSInfo = *tlsInfo
	}
	peerURL, err := freeURL()
	if err != nil {
		return nil, err
	}
	cfg.ListenClientUrls = []url.URL{*clientURL}
	cfg.AdvertiseClientUrls = []url.URL{*clientURL}
	cfg.ListenPeerUrls = []url.URL{*peerURL}
	cfg.AdvertisePeerUrls = []url.URL{*peerURL}
	cfg.InitialCluster = cfg.Name + "=" + peerURL.String()
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("starting embedded etcd: %w", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		e.Close()
		os.RemoveAll(dir)
		return nil, fmt.Errorf("embedded etcd did not become ready in 30s")
	}
	return &Server{Endpoint: clientURL.String(), etcd: e, dir: dir}, nil
}

// Close stops the server and removes its data.
func (s *Server) Close() {
	s.etcd.Close()
	os.RemoveAll(s.dir)
}

// Client returns a new client of the server, closed with the test.
func (s *Server) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{s.Endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatalf("etcd client: %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func freeURL() (*url.URL, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := l.Addr().String()
	l.Close()
	return url.Parse("http://" + addr)
}
