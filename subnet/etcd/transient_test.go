package etcd

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

func TestIsTransient(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"timeout", fmt.Errorf("reading: %w", context.DeadlineExceeded), true},
		{"no leader", rpctypes.ErrNoLeader, true},
		// A cluster being restarted, electing, overloaded or full: wait.
		{"server stopped", rpctypes.ErrStopped, true},
		{"leader failure", rpctypes.ErrTimeoutDueToLeaderFail, true},
		{"connection lost", rpctypes.ErrTimeoutDueToConnectionLost, true},
		{"unhealthy", rpctypes.ErrUnhealthy, true},
		{"too many requests", rpctypes.ErrTooManyRequests, true},
		{"no space", fmt.Errorf("creating lease: %w", rpctypes.ErrNoSpace), true},
		{"no space (gRPC)", rpctypes.ErrGRPCNoSpace, true},
		{"canceled", context.Canceled, false},
		{"wrong password", rpctypes.ErrAuthFailed, false},
		{"no credentials", rpctypes.ErrUserEmpty, false},
		{"no permission", rpctypes.ErrPermissionDenied, false},
		{"unknown CA", fmt.Errorf("x: %w", &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}), false},
		{"gRPC handshake failure", errors.New(`rpc error: code = Unavailable desc = connection error: desc = "transport: authentication handshake failed: tls: failed to verify certificate"`), false},
	} {
		if got := isTransient(tc.err); got != tc.want {
			t.Errorf("%s: isTransient(%v) = %v, want %v", tc.name, tc.err, got, tc.want)
		}
	}
}

// TestWaitConfigLogsOutage: with etcd unreachable, WaitConfig says so within
// seconds (the etcd client would otherwise block silently in a read) and
// keeps waiting until its context ends.
func TestWaitConfigLogsOutage(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"http://" + addr}, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	var buf lockedBuffer
	m := NewManager(cli, testPrefix(t), time.Hour, slog.New(slog.NewTextHandler(&buf, nil)))
	ctx, cancel := context.WithTimeout(context.Background(), configReadTimeout+2*time.Second)
	defer cancel()
	_, err = m.WaitConfig(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitConfig = %v, want the context's deadline", err)
	}
	want := `msg="waiting for etcd to read the network config" key=` + m.ConfigKey() + ` error="etcd did not answer a read of ` + m.ConfigKey() + ` within 5s`
	if !strings.Contains(buf.String(), want) {
		t.Errorf("log lacks %s:\n%s", want, buf.String())
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
