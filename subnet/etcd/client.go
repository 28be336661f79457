package etcd

// Connecting to etcd, and saying what is wrong when it cannot work.
//
// The etcd client reports every connection failure the same way. Requests
// wait for a ready connection (grpc.WaitForReady), so a CA that did not sign
// etcd's certificate, a client certificate etcd rejects, an http:// endpoint
// of a TLS etcd and an etcd that is down all end in "context deadline
// exceeded", or in no answer at all without a deadline: the daemon would
// wait forever for a connection that can never work. So before creating the
// client, probeEndpoint (probe.go) dials each endpoint the way the
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
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flanneld-go/flannel/internal/backoff"
)

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
