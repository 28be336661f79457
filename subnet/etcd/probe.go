package etcd

// The probe of etcd endpoints: what the etcd client would do to connect,
// done by hand so that the failure can be told apart and explained (see
// client.go for why).
//
// What each failure looks like on the wire, and what it becomes:
//
//   - our check of etcd's certificate fails: the handshake returns a
//     *tls.CertificateVerificationError; fatal, check --etcd-cafile (or
//     --etcd-endpoints for a name or IP the certificate is not for);
//   - etcd wants a client certificate and gets none (a certificate of
//     another CA is not even sent): with TLS 1.3 the handshake succeeds and
//     the first read returns "remote error: tls: certificate required"
//     (TLS 1.2: "handshake failure" during the handshake); fatal, check
//     --etcd-certfile/--etcd-keyfile;
//   - etcd rejects our certificate: "remote error: tls: expired
//     certificate" and the like on the first read; fatal, same flags;
//   - http:// to a TLS etcd: EOF after the HTTP/2 preface, and a TLS
//     handshake works; fatal, use https://;
//   - https:// to a plain etcd: EOF during the handshake, and plain HTTP/2
//     works; fatal, use http://;
//   - etcd down: a dial error, or no answer within probeTimeout;
//     ErrUnreachable.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
)

// probeEndpoints probes every endpoint at once. It returns nil when one
// answered; otherwise a fatal error if one endpoint gave one, else an
// ErrUnreachable error.
func probeEndpoints(ctx context.Context, c Config, base *tls.Config) error {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	errs := make([]error, len(c.Endpoints))
	done := make(chan struct{})
	for i, ep := range c.Endpoints {
		go func() {
			defer func() { done <- struct{}{} }()
			errs[i] = probeEndpoint(ctx, c, ep, base)
		}()
	}
	for range c.Endpoints {
		<-done
	}
	// One endpoint that answers is enough, whatever the others said: the
	// client fails over to it.
	for _, err := range errs {
		if err == nil {
			return nil
		}
	}
	var down []error
	for _, err := range errs {
		if !errors.Is(err, ErrUnreachable) {
			return err
		}
		down = append(down, err)
	}
	if len(down) == 1 {
		return down[0]
	}
	msgs := make([]string, len(down))
	for i, err := range down {
		msgs[i] = err.Error()
	}
	return unreachable("%s", strings.Join(msgs, "; "))
}

// h2Hello is the HTTP/2 client preface and an empty SETTINGS frame: etcd
// answers with its SETTINGS frame.
var h2Hello = append([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), 0, 0, 0, 4, 0, 0, 0, 0, 0)

// probeEndpoint connects to ep as the etcd client would and returns nil if
// etcd answered HTTP/2, an ErrUnreachable error if it could not be
// reached, or a fatal error saying what to check.
func probeEndpoint(ctx context.Context, c Config, ep string, base *tls.Config) error {
	s := scheme(ep)
	if s == "unix" || s == "unixs" {
		return nil // not probed: the client reports what goes wrong
	}
	host := hostPort(ep)
	useTLS := s == "https" || s == "" && base != nil
	if !useTLS {
		err := h2Exchange(ctx, host, nil)
		if err == nil || !isClosed(err) {
			return explainPlain(ep, err)
		}
		// etcd closed the connection: a TLS etcd does that to plain text.
		if speaksTLS(ctx, host) {
			return fmt.Errorf("etcd at %s requires TLS: use https:// endpoints, with --etcd-cafile (and --etcd-certfile/--etcd-keyfile if etcd checks client certificates)", ep)
		}
		return unreachable("etcd at %s closed the connection without answering", ep)
	}
	t := &tls.Config{}
	if base != nil {
		t = base.Clone()
	}
	if t.ServerName == "" {
		t.ServerName, _, _ = net.SplitHostPort(host)
	}
	t.NextProtos = []string{"h2"}
	err := h2Exchange(ctx, host, t)
	if err == nil {
		return nil
	}
	var he *handshakeError
	handshake := errors.As(err, &he)
	if isClosed(err) {
		if handshake && h2Exchange(ctx, host, nil) == nil {
			return fmt.Errorf("etcd at %s does not speak TLS (it answered in plain text): use http://%s, or enable TLS in etcd (--cert-file, --key-file)", ep, host)
		}
		return unreachable("etcd at %s closed the connection without answering", ep)
	}
	return explainTLS(c, ep, err, handshake)
}

// handshakeError marks a failed TLS handshake.
type handshakeError struct{ err error }

func (e *handshakeError) Error() string { return e.err.Error() }
func (e *handshakeError) Unwrap() error { return e.err }

// h2Exchange dials host (with TLS when t is not nil), sends the HTTP/2
// preface and reads the first frame header, which must be SETTINGS.
func h2Exchange(ctx context.Context, host string, t *tls.Config) error {
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", host)
	if err != nil {
		return err
	}
	defer raw.Close()
	if dl, ok := ctx.Deadline(); ok {
		raw.SetDeadline(dl)
	}
	conn := raw
	if t != nil {
		tc := tls.Client(raw, t)
		if err := tc.HandshakeContext(ctx); err != nil {
			return &handshakeError{err}
		}
		conn = tc
	}
	if _, err := conn.Write(h2Hello); err != nil {
		return err
	}
	var hdr [9]byte
	if _, err := io.ReadFull(conn, hdr[:]); err != nil {
		return err
	}
	if hdr[3] != 4 { // frame type SETTINGS
		return fmt.Errorf("not an HTTP/2 server (it answered %q)", hdr[:])
	}
	return nil
}

// speaksTLS reports whether host completes a TLS handshake (certificates
// not checked).
func speaksTLS(ctx context.Context, host string) bool {
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", host)
	if err != nil {
		return false
	}
	defer raw.Close()
	if dl, ok := ctx.Deadline(); ok {
		raw.SetDeadline(dl)
	}
	tc := tls.Client(raw, &tls.Config{InsecureSkipVerify: true})
	err = tc.HandshakeContext(ctx)
	return err == nil || isRemoteAlert(err)
}

// explainPlain classifies the result of a plain-text probe.
func explainPlain(ep string, err error) error {
	if err == nil {
		return nil
	}
	if isDown(err) {
		return downError(ep, err)
	}
	return fmt.Errorf("etcd at %s: %w; check --etcd-endpoints (etcd's client URL)", ep, err)
}

// explainTLS classifies a failed TLS probe.
func explainTLS(c Config, ep string, err error, handshake bool) error {
	if isDown(err) {
		return downError(ep, err)
	}
	var verr *tls.CertificateVerificationError
	if errors.As(err, &verr) {
		var (
			unknownCA x509.UnknownAuthorityError
			host      x509.HostnameError
			invalid   x509.CertificateInvalidError
		)
		var hint string
		switch {
		case errors.As(err, &unknownCA) && c.CAFile != "":
			hint = fmt.Sprintf("check --etcd-cafile %s: it must hold the CA that signed etcd's certificate", c.CAFile)
		case errors.As(err, &unknownCA):
			hint = "the system's CAs do not trust etcd's certificate: give the CA that signed it with --etcd-cafile"
		case errors.As(err, &host):
			hint = "check --etcd-endpoints: the address must be one of the names or IPs etcd's certificate is issued for (its subject alternative names)"
		case errors.As(err, &invalid):
			hint = "etcd's certificate is not valid (expired, not yet valid, or not for serving): renew it, and check the clock of this host"
		default:
			hint = "check --etcd-cafile and etcd's certificate"
		}
		return fmt.Errorf("etcd at %s: its TLS certificate failed verification: %v; %s", ep, verr.Err, hint)
	}
	if isRemoteAlert(err) {
		return fmt.Errorf("etcd at %s rejected our TLS handshake (%v): %s", ep, err, clientCertHint(c))
	}
	var rec tls.RecordHeaderError
	if errors.As(err, &rec) {
		return fmt.Errorf("etcd at %s does not speak TLS (%v): use http://, or check --etcd-endpoints", ep, err)
	}
	if handshake {
		return fmt.Errorf("TLS handshake with etcd at %s failed: %v; check --etcd-cafile, --etcd-certfile and --etcd-keyfile", ep, err)
	}
	return fmt.Errorf("etcd at %s: %w; check --etcd-endpoints (etcd's client URL)", ep, err)
}

// clientCertHint says what to check when etcd rejects our handshake, which
// is almost always about the client certificate.
func clientCertHint(c Config) string {
	if c.CertFile == "" {
		return "etcd requires a client certificate: give --etcd-certfile and --etcd-keyfile with a certificate signed by the CA in etcd's --trusted-ca-file"
	}
	return fmt.Sprintf("check --etcd-certfile %s and --etcd-keyfile: etcd accepts a client certificate only if it is signed by the CA in its --trusted-ca-file and not expired "+
		"(one signed by another CA is not even sent)", c.CertFile)
}

// isRemoteAlert reports whether err is a TLS alert sent by the peer, such
// as "remote error: tls: certificate required".
func isRemoteAlert(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "remote error"
}

// downError describes an etcd that is down: no connection, or no answer.
func downError(ep string, err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "dial" {
		return unreachable("etcd at %s is unreachable: %v", ep, err)
	}
	return unreachable("etcd at %s accepted the connection but did not answer within %v", ep, probeTimeout)
}

// isDown reports errors of a peer that is not there or not answering.
func isDown(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return true
	}
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "dial"
}

// isClosed reports a connection closed by the peer.
func isClosed(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)
}
