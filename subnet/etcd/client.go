package etcd

// Connecting to etcd, and saying what is wrong when it cannot work.
//
// The etcd client reports every connection failure the same way. Requests
// wait for a ready connection (grpc.WaitForReady), so a CA that did not sign
// etcd's certificate, a client certificate etcd rejects, an http:// endpoint
// of a TLS etcd and an etcd that is down all end in "context deadline
// exceeded", or in no answer at all without a deadline: the daemon would
// wait forever for a connection that can never work. So before creating the
// client, probeEndpoint (etcdprobe.go) dials each endpoint the way the
// client would (TCP, TLS with the same config, the HTTP/2 preface) and looks
// at what happened:
//
//   - etcd answered: go on;
//   - no connection or no answer (refused, timeout, unknown host): etcd is
//     down, an outage to wait out (ErrUnreachable);
//   - anything else (our or etcd's certificate check failed, TLS on one
//     side only): a fatal error naming the flag to check.
//
// Then the credentials: the client logs in when it is created (a wrong user
// or password is rpctypes.ErrAuthFailed), and one read of the config key
// shows whether etcd wants credentials we did not give (ErrUserEmpty) or our
// user may not read the prefix (ErrPermissionDenied).
//
// The password never goes into an error or a log line.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"

	"github.com/flanneld-go/flannel/internal/backoff"
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

// ErrUnreachable marks errors of an etcd that could not be reached
// (connection refused, no answer, unknown host): waiting may help, unlike
// TLS and authentication errors.
var ErrUnreachable = errors.New("etcd unreachable")

// unreachableError is an ErrUnreachable with what happened.
type unreachableError struct{ msg string }

func (e *unreachableError) Error() string        { return e.msg }
func (e *unreachableError) Is(target error) bool { return target == ErrUnreachable }

func unreachable(format string, args ...any) error {
	return &unreachableError{msg: fmt.Sprintf(format, args...)}
}

const (
	// probeTimeout bounds the probe of one endpoint (all are probed at once).
	probeTimeout = 3 * time.Second
	// checkTimeout bounds the log-in and the first read.
	checkTimeout = 5 * time.Second
)

// NewClient checks the endpoints and credentials and returns a client.
// TLS and authentication problems are errors that say what to check. An
// etcd that cannot be reached is no error: the client is returned and the
// caller waits the outage out. With a user name that is not possible (the
// client must log in when it is created), and the ErrUnreachable error
// is returned; Dial waits instead.
func NewClient(c Config) (*clientv3.Client, error) {
	ctx, cancel := context.WithTimeout(context.Background(), probeTimeout+2*checkTimeout)
	defer cancel()
	cli, err := Connect(ctx, c)
	if err == nil || !errors.Is(err, ErrUnreachable) || c.Username != "" {
		return cli, err
	}
	cc, err := clientConfig(c)
	if err != nil {
		return nil, err
	}
	return newClient(c, cc)
}

// Connect checks the endpoints and credentials and returns a client, or
// an error that says what is wrong. An unreachable etcd is an error that
// matches ErrUnreachable. For commands that must not wait (flanneld
// leases).
func Connect(ctx context.Context, c Config) (*clientv3.Client, error) {
	cc, err := clientConfig(c)
	if err != nil {
		return nil, err
	}
	if err := probeEndpoints(ctx, c, cc.TLS); err != nil {
		return nil, err
	}
	cli, err := newClient(c, cc)
	if err != nil {
		return nil, err
	}
	if err := checkAccess(ctx, cli, c); err != nil {
		cli.Close()
		return nil, err
	}
	return cli, nil
}

// Dial is Connect that waits while etcd is unreachable, logging the
// outage, until ctx is done. TLS and authentication problems are returned
// at once.
func Dial(ctx context.Context, c Config, log *slog.Logger) (*clientv3.Client, error) {
	outage := NewOutageLog(log, "connecting to etcd")
	retry := backoff.New(time.Second, 10*time.Second)
	for {
		cli, err := Connect(ctx, c)
		if err == nil {
			outage.OK()
			return cli, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if !errors.Is(err, ErrUnreachable) {
			return nil, err
		}
		outage.Fail(err)
		if err := retry.Wait(ctx); err != nil {
			return nil, err
		}
	}
}

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
	schemes := map[string]string{}
	for _, ep := range c.Endpoints {
		s := scheme(ep)
		switch s {
		case "http", "https", "unix", "unixs", "":
		default:
			return cc, fmt.Errorf("--etcd-endpoints %s: unknown scheme %q; use http:// or https://", ep, s)
		}
		if s == "http" || s == "https" {
			schemes[s] = ep
			if u, err := url.Parse(ep); err != nil || u.Port() == "" {
				return cc, fmt.Errorf("--etcd-endpoints %s: give the port too, e.g. %s://HOST:2379 (etcd's client port)", ep, s)
			}
		}
	}
	if len(schemes) > 1 {
		return cc, fmt.Errorf("--etcd-endpoints mixes http:// and https:// (%s, %s): the etcd client uses the first endpoint's scheme for all; make them all https://",
			schemes["http"], schemes["https"])
	}
	tlsFlags := tlsFlagsGiven(c)
	if tlsFlags == "" {
		return cc, nil
	}
	if ep, plain := schemes["http"]; plain {
		return cc, fmt.Errorf("%s given but the etcd endpoint %s is http://: the etcd client would ignore them and talk in plain text; use https:// endpoints", tlsFlags, ep)
	}
	t, err := tlsConfig(c)
	if err != nil {
		return cc, err
	}
	cc.TLS = t
	return cc, nil
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

// newClient creates the client; with a user name it logs in.
func newClient(c Config, cc clientv3.Config) (*clientv3.Client, error) {
	cli, err := clientv3.New(cc)
	switch {
	case err == nil:
		return cli, nil
	case errors.Is(err, rpctypes.ErrAuthFailed):
		return nil, fmt.Errorf("etcd authentication failed for user %q (%v): check --etcd-username/--etcd-password (or FLANNELD_ETCD_USERNAME/FLANNELD_ETCD_PASSWORD)", c.Username, err)
	case errors.Is(err, context.DeadlineExceeded):
		return nil, unreachable("etcd at %s did not answer the log-in of user %q within %v", strings.Join(c.Endpoints, ","), c.Username, checkTimeout)
	}
	return nil, fmt.Errorf("connecting to etcd at %s: %w", strings.Join(c.Endpoints, ","), err)
}

// checkAccess reads the config key once (its count only), to find out
// early that etcd wants credentials or that our user may not read it.
func checkAccess(ctx context.Context, cli *clientv3.Client, c Config) error {
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	prefix := c.Prefix
	if prefix == "" {
		prefix = DefaultPrefix
	}
	prefix = strings.TrimSuffix(prefix, "/")
	key := prefix + "/config"
	_, err := cli.Get(ctx, key, clientv3.WithCountOnly())
	eps := strings.Join(c.Endpoints, ",")
	switch {
	case err == nil:
		return nil
	case errors.Is(err, rpctypes.ErrUserEmpty):
		return fmt.Errorf("etcd at %s requires authentication (%v): give --etcd-username and --etcd-password (or FLANNELD_ETCD_USERNAME and FLANNELD_ETCD_PASSWORD)", eps, err)
	case errors.Is(err, rpctypes.ErrPermissionDenied):
		who := fmt.Sprintf("etcd user %q", c.Username)
		if c.Username == "" {
			who = "the etcd user of our client certificate's common name"
		}
		return fmt.Errorf("%s may not read %s (%v): grant it read and write on the prefix, e.g. etcdctl role grant-permission --prefix ROLE readwrite %s/ && etcdctl user grant-role USER ROLE",
			who, key, err, prefix)
	case errors.Is(err, context.DeadlineExceeded):
		return unreachable("etcd at %s did not answer a read of %s within %v", eps, key, checkTimeout)
	}
	// Anything else (no leader, ...) is for the caller's retries.
	return nil
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
