package etcd

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flanneld-go/flannel/internal/etcdtest"
	"github.com/flanneld-go/flannel/internal/testpki"
)

// Errors in the TLS flags are found before anything is dialled.
func TestEtcdTLSConfigErrors(t *testing.T) {
	dir := t.TempDir()
	set, err := testpki.NewSet(dir, netip.MustParseAddr("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	notPEM := filepath.Join(dir, "not-pem.txt")
	if err := os.WriteFile(notPEM, []byte("this is not a certificate\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.pem")
	ep := []string{"https://127.0.0.1:2379"}
	for _, tc := range []struct {
		name string
		c    Config
		want string
	}{
		{"cert without key", Config{Endpoints: ep, CertFile: set.Client.Cert},
			"--etcd-certfile and --etcd-keyfile go together: give both or neither"},
		{"key without cert", Config{Endpoints: ep, KeyFile: set.Client.Key},
			"--etcd-certfile and --etcd-keyfile go together: give both or neither"},
		{"unreadable CA", Config{Endpoints: ep, CAFile: missing},
			"--etcd-cafile: open " + missing + ": no such file or directory"},
		{"CA without PEM", Config{Endpoints: ep, CAFile: notPEM},
			"--etcd-cafile " + notPEM + ": no PEM certificate found in it"},
		{"key that does not match", Config{Endpoints: ep, CertFile: set.Client.Cert, KeyFile: set.Server.Key},
			"loading --etcd-certfile " + set.Client.Cert + " / --etcd-keyfile " + set.Server.Key + ": tls: private key does not match public key"},
		{"certificate file without PEM", Config{Endpoints: ep, CertFile: notPEM, KeyFile: set.Client.Key},
			"loading --etcd-certfile " + notPEM + " / --etcd-keyfile " + set.Client.Key + ": tls: failed to find any PEM data in certificate input"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cli, err := NewClient(tc.c)
			if err == nil {
				cli.Close()
				t.Fatal("no error")
			}
			if err.Error() != tc.want {
				t.Errorf("error:\n got %s\nwant %s", err, tc.want)
			}
		})
	}
}

// Errors in the endpoints and credentials are found before anything is
// dialled, and never show the password.
func TestEtcdConfigErrors(t *testing.T) {
	const pw = "pa55-w0rd-xyz"
	for _, tc := range []struct {
		name string
		c    Config
		want string
	}{
		{"no endpoints", Config{}, "--etcd-endpoints is empty; give at least one, e.g. http://127.0.0.1:2379"},
		{"user without password", Config{Endpoints: []string{"http://127.0.0.1:2379"}, Username: "flannel"},
			`--etcd-username "flannel" is given without a password: give --etcd-password (or FLANNELD_ETCD_PASSWORD)`},
		{"password without user", Config{Endpoints: []string{"http://127.0.0.1:2379"}, Password: pw},
			"an etcd password is given without a user name: give --etcd-username (or FLANNELD_ETCD_USERNAME)"},
		{"TLS flags with http", Config{Endpoints: []string{"http://127.0.0.1:2379"}, CAFile: "/ca.pem", CertFile: "/c.pem", KeyFile: "/k.pem"},
			"--etcd-cafile, --etcd-certfile and --etcd-keyfile given but the etcd endpoint http://127.0.0.1:2379 is http://: " +
				"the etcd client would ignore them and talk in plain text; use https:// endpoints"},
		{"mixed schemes", Config{Endpoints: []string{"https://10.0.0.1:2379", "http://10.0.0.2:2379"}},
			"--etcd-endpoints mixes http:// and https:// (http://10.0.0.2:2379, https://10.0.0.1:2379): the etcd client uses the first endpoint's scheme for all; make them all https://"},
		{"no port", Config{Endpoints: []string{"http://etcd1"}},
			"--etcd-endpoints http://etcd1: give the port too, e.g. http://HOST:2379 (etcd's client port)"},
		{"unknown scheme", Config{Endpoints: []string{"etcd://10.0.0.1:2379"}},
			`--etcd-endpoints etcd://10.0.0.1:2379: unknown scheme "etcd"; use http:// or https://`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cli, err := NewClient(tc.c)
			if err == nil {
				cli.Close()
				t.Fatal("no error")
			}
			if err.Error() != tc.want {
				t.Errorf("error:\n got %s\nwant %s", err, tc.want)
			}
		})
	}
}

func TestEtcdConfigRedactsPassword(t *testing.T) {
	const pw = "pa55-w0rd-xyz"
	c := Config{Endpoints: []string{"http://127.0.0.1:2379"}, Username: "flannel", Password: pw}
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("config", "etcd", c)
	for _, s := range []string{fmt.Sprint(c), fmt.Sprintf("%+v", c), fmt.Sprintf("%#v", c), fmt.Sprintf("%v", &c), buf.String()} {
		if strings.Contains(s, pw) {
			t.Errorf("password shown: %s", s)
		}
		if !strings.Contains(s, "Username:flannel") {
			t.Errorf("user name missing: %s", s)
		}
	}
}

// pki is a CA with server and client certificates, another CA with a
// client certificate, and an expired client certificate.
type pki struct {
	*testpki.Set
	otherCA       *testpki.CA
	foreignClient testpki.Pair
	expiredClient testpki.Pair
	wrongIPServer testpki.Pair
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	dir := t.TempDir()
	set, err := testpki.NewSet(dir, netip.MustParseAddr("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	p := &pki{Set: set}
	if p.otherCA, err = testpki.NewCA(dir, "other-ca"); err != nil {
		t.Fatal(err)
	}
	if p.foreignClient, err = p.otherCA.Issue(dir, "foreign-client", testpki.CertOptions{Client: true}); err != nil {
		t.Fatal(err)
	}
	if p.expiredClient, err = set.CA.Issue(dir, "expired-client", testpki.CertOptions{Client: true, NotAfter: time.Now().Add(-time.Minute)}); err != nil {
		t.Fatal(err)
	}
	if p.wrongIPServer, err = set.CA.Issue(dir, "wrong-ip-server", testpki.CertOptions{Server: true, IPs: []netip.Addr{netip.MustParseAddr("10.9.9.9")}}); err != nil {
		t.Fatal(err)
	}
	return p
}

func startEtcd(t *testing.T, f *etcdtest.TLSFiles) *etcdtest.Server {
	t.Helper()
	var srv *etcdtest.Server
	var err error
	if f != nil {
		srv, err = etcdtest.StartTLS(*f)
	} else {
		srv, err = etcdtest.Start()
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	return srv
}

// hostOf returns the host:port of an endpoint URL.
func hostOf(ep string) string { return ep[strings.Index(ep, "://")+3:] }

// TestConnectEtcdTLS: what an operator sees for each TLS mistake. Each is
// reported within seconds, says what to check, and is not an outage.
func TestConnectEtcdTLS(t *testing.T) {
	p := newPKI(t)
	tlsSrv := startEtcd(t, &etcdtest.TLSFiles{CertFile: p.Server.Cert, KeyFile: p.Server.Key, TrustedCAFile: p.CA.File})
	plainSrv := startEtcd(t, nil)
	good := Config{Endpoints: []string{tlsSrv.Endpoint}, CAFile: p.CA.File, CertFile: p.Client.Cert, KeyFile: p.Client.Key}

	cli, err := Connect(t.Context(), good)
	if err != nil {
		t.Fatalf("good TLS config: %v", err)
	}
	if _, err := cli.Put(t.Context(), "/coreos.com/network/config", "{}"); err != nil {
		t.Fatalf("put over TLS: %v", err)
	}
	cli.Close()

	// A TLS server with a certificate for another address.
	wrongIP := serveTLS(t, p.wrongIPServer)

	with := func(f func(c *Config)) Config {
		c := good
		c.Endpoints = append([]string(nil), good.Endpoints...)
		f(&c)
		return c
	}
	for _, tc := range []struct {
		name string
		c    Config
		want string
	}{
		{"wrong CA", with(func(c *Config) { c.CAFile = p.otherCA.File }),
			"etcd at " + tlsSrv.Endpoint + ": its TLS certificate failed verification: x509: certificate signed by unknown authority; " +
				"check --etcd-cafile " + p.otherCA.File + ": it must hold the CA that signed etcd's certificate"},
		{"no CA (system roots)", with(func(c *Config) { c.CAFile = "" }),
			"etcd at " + tlsSrv.Endpoint + ": its TLS certificate failed verification: x509: certificate signed by unknown authority; " +
				"the system's CAs do not trust etcd's certificate: give the CA that signed it with --etcd-cafile"},
		{"no client certificate", with(func(c *Config) { c.CertFile, c.KeyFile = "", "" }),
			"etcd at " + tlsSrv.Endpoint + " rejected our TLS handshake (remote error: tls: certificate required): " +
				"etcd requires a client certificate: give --etcd-certfile and --etcd-keyfile with a certificate signed by the CA in etcd's --trusted-ca-file"},
		{"client certificate of another CA", with(func(c *Config) { c.CertFile, c.KeyFile = p.foreignClient.Cert, p.foreignClient.Key }),
			"etcd at " + tlsSrv.Endpoint + " rejected our TLS handshake (remote error: tls: certificate required): " +
				"check --etcd-certfile " + p.foreignClient.Cert + " and --etcd-keyfile: etcd accepts a client certificate only if it is signed by the CA in its --trusted-ca-file and not expired " +
				"(one signed by another CA is not even sent)"},
		{"expired client certificate", with(func(c *Config) { c.CertFile, c.KeyFile = p.expiredClient.Cert, p.expiredClient.Key }),
			"etcd at " + tlsSrv.Endpoint + " rejected our TLS handshake (remote error: tls: expired certificate): check --etcd-certfile " + p.expiredClient.Cert},
		{"server certificate for another address", with(func(c *Config) { c.Endpoints = []string{"https://" + wrongIP} }),
			"etcd at https://" + wrongIP + ": its TLS certificate failed verification: x509: certificate is valid for 10.9.9.9, not 127.0.0.1; " +
				"check --etcd-endpoints: the address must be one of the names or IPs etcd's certificate is issued for"},
		{"http:// to a TLS etcd", Config{Endpoints: []string{"http://" + hostOf(tlsSrv.Endpoint)}},
			"etcd at http://" + hostOf(tlsSrv.Endpoint) + " requires TLS: use https:// endpoints, with --etcd-cafile (and --etcd-certfile/--etcd-keyfile if etcd checks client certificates)"},
		{"https:// to a plain etcd", with(func(c *Config) { c.Endpoints = []string{"https://" + hostOf(plainSrv.Endpoint)} }),
			"etcd at https://" + hostOf(plainSrv.Endpoint) + " does not speak TLS (it answered in plain text): use http://" + hostOf(plainSrv.Endpoint) + ", or enable TLS in etcd (--cert-file, --key-file)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			cli, err := Connect(t.Context(), tc.c)
			if err == nil {
				cli.Close()
				t.Fatal("no error")
			}
			if !strings.HasPrefix(err.Error(), tc.want) {
				t.Errorf("error:\n got %s\nwant %s", err, tc.want)
			}
			if errors.Is(err, ErrUnreachable) {
				t.Errorf("reported as an outage: %v", err)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("took %v", d)
			}
			// The daemon's client says the same (and flanneld leases,
			// see network's TestPrintLeasesExplainsEtcdErrors).
			if cli, err2 := NewClient(tc.c); err2 == nil || err2.Error() != err.Error() {
				if cli != nil {
					cli.Close()
				}
				t.Errorf("NewClient: %v", err2)
			}
		})
	}
}

// serveTLS runs a TLS server with the given certificate that accepts
// handshakes and closes; it returns its host:port.
func serveTLS(t *testing.T, p testpki.Pair) string {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(p.Cert, p.Key)
	if err != nil {
		t.Fatal(err)
	}
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.(*tls.Conn).Handshake()
			}()
		}
	}()
	return l.Addr().String()
}

// TestConnectEtcdUnreachable: an etcd that is down or does not answer is
// an outage (ErrUnreachable), reported quickly; the daemon's client is
// created anyway and waits it out.
func TestConnectEtcdUnreachable(t *testing.T) {
	refused := freeAddr(t)
	silent := silentListener(t)
	for _, tc := range []struct {
		name string
		ep   string
		want string
	}{
		{"connection refused", "http://" + refused, "etcd at http://" + refused + " is unreachable: dial tcp " + refused + ": connect: connection refused"},
		{"connection refused, https", "https://" + refused, "etcd at https://" + refused + " is unreachable: dial tcp " + refused + ": connect: connection refused"},
		{"no answer", "http://" + silent, "etcd at http://" + silent + " accepted the connection but did not answer within 3s"},
		{"no answer, https", "https://" + silent, "etcd at https://" + silent + " accepted the connection but did not answer within 3s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Config{Endpoints: []string{tc.ep}}
			start := time.Now()
			_, err := Connect(t.Context(), c)
			if !errors.Is(err, ErrUnreachable) || !strings.HasPrefix(err.Error(), tc.want) {
				t.Errorf("error:\n got %v\nwant %s... (ErrUnreachable)", err, tc.want)
			}
			if d := time.Since(start); d > probeTimeout+time.Second {
				t.Errorf("took %v", d)
			}
			cli, err := NewClient(c)
			if err != nil {
				t.Fatalf("NewClient must leave outages to the caller: %v", err)
			}
			cli.Close()
		})
	}
	// With credentials the client must log in to exist.
	_, err := NewClient(Config{Endpoints: []string{"http://" + refused}, Username: "flannel", Password: "x"})
	if !errors.Is(err, ErrUnreachable) {
		t.Errorf("with credentials: %v", err)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// silentListener accepts connections and never answers.
func silentListener(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	return l.Addr().String()
}

// TestConnectEtcdAuth: user name and password mistakes, against an etcd
// with authentication enabled. The password never appears in an error.
func TestConnectEtcdAuth(t *testing.T) {
	const (
		rootPW  = "r00t-pw-abc"
		goodPW  = "s3cret-flannel-pw"
		wrongPW = "wr0ng-guess-pw"
	)
	srv := startEtcd(t, nil)
	root := srv.Client(t)
	ctx := t.Context()
	steps := []func() error{
		func() error { _, err := root.UserAdd(ctx, "root", rootPW); return err },
		func() error { _, err := root.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := root.UserAdd(ctx, "flannel", goodPW); return err },
		func() error { _, err := root.RoleAdd(ctx, "flannel"); return err },
		func() error {
			_, err := root.RoleGrantPermission(ctx, "flannel", "/coreos.com/network/", clientv3.GetPrefixRangeEnd("/coreos.com/network/"),
				clientv3.PermissionType(clientv3.PermReadWrite))
			return err
		},
		func() error { _, err := root.UserGrantRole(ctx, "flannel", "flannel"); return err },
		func() error { _, err := root.UserAdd(ctx, "nobody", goodPW); return err },
		func() error { _, err := root.AuthEnable(ctx); return err },
	}
	for i, step := range steps {
		if err := step(); err != nil {
			t.Fatalf("auth setup step %d: %v", i, err)
		}
	}
	ep := []string{srv.Endpoint}

	cli, err := Connect(ctx, Config{Endpoints: ep, Username: "flannel", Password: goodPW})
	if err != nil {
		t.Fatalf("right password: %v", err)
	}
	if _, err := cli.Put(ctx, "/coreos.com/network/config", "{}"); err != nil {
		t.Fatalf("put as flannel: %v", err)
	}
	cli.Close()

	for _, tc := range []struct {
		name string
		c    Config
		want string
	}{
		{"wrong password", Config{Endpoints: ep, Username: "flannel", Password: wrongPW},
			`etcd authentication failed for user "flannel" (etcdserver: authentication failed, invalid user ID or password): ` +
				"check --etcd-username/--etcd-password (or FLANNELD_ETCD_USERNAME/FLANNELD_ETCD_PASSWORD)"},
		{"unknown user", Config{Endpoints: ep, Username: "flanel", Password: goodPW},
			`etcd authentication failed for user "flanel" (etcdserver: authentication failed, invalid user ID or password)`},
		{"no credentials", Config{Endpoints: ep},
			"etcd at " + srv.Endpoint + " requires authentication (etcdserver: user name is empty): give --etcd-username and --etcd-password (or FLANNELD_ETCD_USERNAME and FLANNELD_ETCD_PASSWORD)"},
		{"no permission", Config{Endpoints: ep, Username: "nobody", Password: goodPW},
			`etcd user "nobody" may not read /coreos.com/network/config (etcdserver: permission denied): grant it read and write on the prefix, ` +
				"e.g. etcdctl role grant-permission --prefix ROLE readwrite /coreos.com/network/ && etcdctl user grant-role USER ROLE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			cli, err := Connect(ctx, tc.c)
			if err == nil {
				cli.Close()
				t.Fatal("no error")
			}
			if !strings.HasPrefix(err.Error(), tc.want) {
				t.Errorf("error:\n got %s\nwant %s", err, tc.want)
			}
			for _, pw := range []string{goodPW, wrongPW, rootPW} {
				if strings.Contains(err.Error(), pw) {
					t.Errorf("error shows a password: %s", err)
				}
			}
			if errors.Is(err, ErrUnreachable) {
				t.Errorf("reported as an outage: %v", err)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("took %v", d)
			}
			if cli, err2 := NewClient(tc.c); err2 == nil || err2.Error() != err.Error() {
				if cli != nil {
					cli.Close()
				}
				t.Errorf("NewClient: %v", err2)
			}
		})
	}
}

// TestDialEtcdWaitsForEtcd: Dial logs the outage once and connects
// when etcd comes up, with credentials too.
func TestDialEtcdWaitsForEtcd(t *testing.T) {
	srv := startEtcd(t, nil)
	front := freeAddr(t)
	var logBuf lockedBuffer
	log := slog.New(slog.NewTextHandler(&logBuf, nil))
	type result struct {
		cli *clientv3.Client
		err error
	}
	res := make(chan result, 1)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	go func() {
		cli, err := Dial(ctx, Config{Endpoints: []string{"http://" + front}, Username: "u", Password: "p"}, log)
		res <- result{cli, err}
	}()
	time.Sleep(2 * time.Second)
	select {
	case r := <-res:
		t.Fatalf("Dial returned while etcd was down: %v", r.err)
	default:
	}
	// etcd "comes up": a proxy on the address Dial dials. Auth is not
	// enabled, which the client accepts with credentials.
	proxy(t, front, hostOf(srv.Endpoint))
	r := <-res
	if r.err != nil {
		t.Fatalf("Dial: %v", r.err)
	}
	defer r.cli.Close()
	if _, err := r.cli.Get(ctx, "/x"); err != nil {
		t.Fatal(err)
	}
	out := logBuf.String()
	if !strings.Contains(out, "etcd unavailable; retrying with backoff") || !strings.Contains(out, "connection refused") ||
		!strings.Contains(out, "etcd available again") {
		t.Errorf("log:\n%s", out)
	}
	if strings.Count(out, "etcd unavailable") != 1 {
		t.Errorf("the outage is logged more than once:\n%s", out)
	}

	// A TLS or authentication problem is returned at once, not waited out.
	_, err := Dial(ctx, Config{Endpoints: []string{"https://" + hostOf(srv.Endpoint)}}, log)
	if err == nil || !strings.Contains(err.Error(), "does not speak TLS") {
		t.Errorf("Dial to a plain etcd over https: %v", err)
	}
}

// proxy forwards connections on listen to target until the test ends.
func proxy(t *testing.T, listen, target string) {
	t.Helper()
	l, err := net.Listen("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				u, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer u.Close()
				go io.Copy(u, c)
				io.Copy(c, u)
			}()
		}
	}()
}

// TestConnectAnyEndpoint: one endpoint that answers is enough, even when
// another gives an error that would be fatal alone (upstream's default
// endpoints put 127.0.0.1:4001 first, where something else may listen).
func TestConnectAnyEndpoint(t *testing.T) {
	tlsOnly := httptest.NewTLSServer(http.NotFoundHandler())
	defer tlsOnly.Close()
	bad := "http://" + tlsOnly.Listener.Addr().String()
	if _, err := Connect(t.Context(), Config{Endpoints: []string{bad}}); err == nil || errors.Is(err, ErrUnreachable) {
		t.Fatalf("alone, %s must be a fatal error: %v", bad, err)
	}
	cli, err := Connect(t.Context(), Config{Endpoints: []string{bad, etcdSrv.Endpoint}})
	if err != nil {
		t.Fatalf("with a good endpoint after it: %v", err)
	}
	cli.Close()
}
