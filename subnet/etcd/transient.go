package etcd

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"strings"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
)

// isTransient reports errors worth retrying (etcd unreachable, timeouts).
func isTransient(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, context.Canceled) {
		return false
	}
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		// By the gRPC code etcd gives its error: a cluster that is
		// restarting, electing a leader, overloaded or out of space
		// (Unavailable, ResourceExhausted, ...) heals or is healed; one
		// that refuses this request (permission, authentication, a bad
		// argument) does not.
		switch ee.Code() {
		case codes.Unavailable, codes.ResourceExhausted, codes.DeadlineExceeded, codes.Aborted, codes.Internal, codes.Unknown:
			return true
		}
		return false
	}
	// Authentication and permission failures do not heal by retrying.
	if errors.Is(err, rpctypes.ErrAuthFailed) || errors.Is(err, rpctypes.ErrPermissionDenied) ||
		errors.Is(err, rpctypes.ErrGRPCAuthFailed) || errors.Is(err, rpctypes.ErrGRPCPermissionDenied) ||
		errors.Is(err, rpctypes.ErrGRPCUserEmpty) {
		return false
	}
	// Neither do TLS failures: a certificate that fails verification, or a
	// handshake etcd rejects. (The etcd client itself reports them only as
	// a timeout, since requests wait for a ready connection; Connect
	// probes the endpoints before it creates the client to tell them
	// apart, see probe.go. gRPC calls that fail fast name them "authentication
	// handshake failed".)
	var verr *tls.CertificateVerificationError
	var unknownCA x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var invalid x509.CertificateInvalidError
	if errors.As(err, &verr) || errors.As(err, &unknownCA) || errors.As(err, &hostErr) || errors.As(err, &invalid) ||
		strings.Contains(err.Error(), "authentication handshake failed") {
		return false
	}
	return true
}

// IsTransient reports whether err is worth retrying: an etcd that did not
// answer, timed out or lost its leader, as opposed to one that refused us
// (authentication, permission, TLS).
func IsTransient(err error) bool { return isTransient(err) }
