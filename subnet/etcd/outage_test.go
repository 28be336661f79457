package etcd

import (
	"errors"
	"log/slog"
	"strings"
	"testing"
)

// TestOutageLog: one line when the outage starts, none for further
// failures within the minute, one when it ends; nothing while all is well.
func TestOutageLog(t *testing.T) {
	var buf lockedBuffer
	o := NewOutageLog(slog.New(slog.NewTextHandler(&buf, nil)), "watching leases")
	o.OK()
	if o.Failing() || buf.String() != "" {
		t.Fatalf("success without an outage: Failing %v, log %q", o.Failing(), buf.String())
	}
	o.Fail(errors.New("connection refused"))
	o.Fail(errors.New("connection refused"))
	o.Fail(errors.New("connection refused"))
	if !o.Failing() {
		t.Error("not Failing after a failure")
	}
	o.OK()
	o.OK()
	if o.Failing() {
		t.Error("Failing after the recovery")
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 ||
		!strings.Contains(lines[0], `level=WARN msg="etcd unavailable; retrying with backoff" activity="watching leases" error="connection refused"`) ||
		!strings.Contains(lines[1], `level=INFO msg="etcd available again" activity="watching leases"`) ||
		!strings.HasSuffix(lines[1], " attempts=3") {
		t.Errorf("log:\n%s", buf.String())
	}
}
