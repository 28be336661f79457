package etcd

// How to reach etcd: the flags as a Config, checked and turned into the
// etcd client's config before anything is dialled, so that a mistake in
// them is reported with the flag to fix.

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
)

// Config is how to reach etcd. Password is never logged: String and
// LogValue leave it out.
type Config struct {
	Endpoints []string
	Prefix    string
	CAFile    string
	CertFile  string
	KeyFile   string
	Username  string
	Password  string
}

// String describes c without the password.
func (c Config) String() string {
	pw := ""
	if c.Password != "" {
		pw = "(redacted)"
	}
	return fmt.Sprintf("{Endpoints:%v Prefix:%s CAFile:%s CertFile:%s KeyFile:%s Username:%s Password:%s}",
		c.Endpoints, c.Prefix, c.CAFile, c.CertFile, c.KeyFile, c.Username, pw)
}

// GoString is String, so that %#v does not print the password either.
func (c Config) GoString() string { return c.String() }

// LogValue is c for log/slog, without the password.
func (c Config) LogValue() slog.Value { return slog.StringValue(c.String()) }

// The gRPC keepalive of the etcd connection. While a stream is open (the
// lease watch always is), the client pings etcd after keepAliveTime
// without a frame from it, and drops the connection and dials again when
// no answer comes within keepAliveTimeout (gRPC also makes that the
// socket's TCP_USER_TIMEOUT): a dead connection is replaced within 20 s,
// not after the kernel's TCP retransmission timeout (about 15 minutes) or
// never (a watch with nothing to send). gRPC pings no more often than
// every 10 s; etcd refuses pings more frequent than its
// --grpc-keepalive-min-time (5 s by default). Without a stream the client
// does not ping: etcd's keepalive policy would take that for abuse.
const (
	keepAliveTime    = 10 * time.Second
	keepAliveTimeout = 10 * time.Second
)

// clientConfig validates c and builds the etcd client's config.
func clientConfig(c Config) (clientv3.Config, error) {
	cc := clientv3.Config{
		Endpoints:   c.Endpoints,
		DialTimeout: checkTimeout,
		Username:    c.Username,
		Password:    c.Password,
		// The client's own logger prints a line per retry; outages are
		// reported by the daemon instead, once.
		Logger: zap.NewNop(),
		// A connection that died silently (etcd's host gone without a
		// reset, a firewall or NAT that forgot it) is noticed by the
		// keepalive: see keepAliveTime.
		DialKeepAliveTime:    keepAliveTime,
		DialKeepAliveTimeout: keepAliveTimeout,
		// gRPC's reconnect backoff grows to 120 s: after a minute-long
		// outage the daemon would notice etcd's return only tens of
		// seconds late. Cap it at 5 s.
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           grpcbackoff.Config{BaseDelay: time.Second, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 5 * time.Second},
			MinConnectTimeout: 5 * time.Second,
		})},
	}
	if len(c.Endpoints) == 0 {
		return cc, errors.New("--etcd-endpoints is empty; give at least one, e.g. http://127.0.0.1:2379")
	}
	if c.Username != "" && c.Password == "" {
		return cc, fmt.Errorf("--etcd-username %q is given without a password: give --etcd-password (or FLANNELD_ETCD_PASSWORD)", c.Username)
	}
	if c.Username == "" && c.Password != "" {
		return cc, errors.New("an etcd password is given without a user name: give --etcd-username (or FLANNELD_ETCD_USERNAME)")
	}
	schemes, err := endpointSchemes(c.Endpoints)
	if err != nil {
		return cc, err
	}
	tlsFlags := tlsFlagsGiven(c)
	if tlsFlags == "" {
		return cc, nil
	}
	if ep, plain := schemes["http"]; plain {
		return cc, fmt.Errorf("%s given but the etcd endpoint %s is http://: the etcd client would ignore them and talk in plain text; use https:// endpoints", tlsFlags, ep)
	}
	if cc.TLS, err = tlsConfig(c); err != nil {
		return cc, err
	}
	return cc, nil
}

// endpointSchemes checks the scheme and port of every endpoint and
// returns, for http and https, an endpoint that uses it.
func endpointSchemes(eps []string) (map[string]string, error) {
	schemes := map[string]string{}
	for _, ep := range eps {
		s := scheme(ep)
		switch s {
		case "http", "https", "unix", "unixs", "":
		default:
			return nil, fmt.Errorf("--etcd-endpoints %s: unknown scheme %q; use http:// or https://", ep, s)
		}
		if s == "http" || s == "https" {
			schemes[s] = ep
			if u, err := url.Parse(ep); err != nil || u.Port() == "" {
				return nil, fmt.Errorf("--etcd-endpoints %s: give the port too, e.g. %s://HOST:2379 (etcd's client port)", ep, s)
			}
		}
	}
	if len(schemes) > 1 {
		return nil, fmt.Errorf("--etcd-endpoints mixes http:// and https:// (%s, %s): the etcd client uses the first endpoint's scheme for all; make them all https://",
			schemes["http"], schemes["https"])
	}
	return schemes, nil
}

// tlsFlagsGiven names the TLS flags that are set, e.g. "--etcd-cafile and
// --etcd-certfile", or returns "".
func tlsFlagsGiven(c Config) string {
	var given []string
	for _, f := range []struct{ name, v string }{{"--etcd-cafile", c.CAFile}, {"--etcd-certfile", c.CertFile}, {"--etcd-keyfile", c.KeyFile}} {
		if f.v != "" {
			given = append(given, f.name)
		}
	}
	switch len(given) {
	case 0:
		return ""
	case 1:
		return given[0]
	}
	return strings.Join(given[:len(given)-1], ", ") + " and " + given[len(given)-1]
}

func tlsConfig(c Config) (*tls.Config, error) {
	t := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("--etcd-cafile: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--etcd-cafile %s: no PEM certificate found in it", c.CAFile)
		}
		t.RootCAs = pool
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return nil, errors.New("--etcd-certfile and --etcd-keyfile go together: give both or neither")
	}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("loading --etcd-certfile %s / --etcd-keyfile %s: %w", c.CertFile, c.KeyFile, err)
		}
		t.Certificates = []tls.Certificate{cert}
	}
	return t, nil
}

// scheme returns the URL scheme of an endpoint, "" for host:port.
func scheme(ep string) string {
	if s, _, ok := strings.Cut(ep, "://"); ok {
		return s
	}
	if strings.HasPrefix(ep, "unix:") || strings.HasPrefix(ep, "unixs:") {
		s, _, _ := strings.Cut(ep, ":")
		return s
	}
	return ""
}

// hostPort returns the host:port of an http(s) endpoint or a bare one.
func hostPort(ep string) string {
	if u, err := url.Parse(ep); err == nil && u.Host != "" {
		return u.Host
	}
	return ep
}
