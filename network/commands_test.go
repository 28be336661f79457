package network

import (
	"bytes"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/flanneld-go/flannel/internal/etcdtest"
	"github.com/flanneld-go/flannel/subnet/etcd"
)

// TestPrintLeasesExplainsEtcdErrors: flanneld leases says what is wrong
// with the etcd flags in the words the daemon uses (etcd.Connect, whose
// cases are tested in subnet/etcd), prints no table, and does not wait
// for an etcd that is down.
func TestPrintLeasesExplainsEtcdErrors(t *testing.T) {
	srv, err := etcdtest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	plain := strings.TrimPrefix(srv.Endpoint, "http://")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := l.Addr().String()
	l.Close()
	for _, tc := range []struct {
		name, ep, want string
		outage         bool
	}{
		{"no port", "http://etcd1", "--etcd-endpoints http://etcd1: give the port too", false},
		{"https:// to a plain etcd", "https://" + plain, "etcd at https://" + plain + " does not speak TLS", false},
		{"etcd down", "http://" + refused, "etcd at http://" + refused + " is unreachable", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := etcd.Config{Endpoints: []string{tc.ep}}
			start := time.Now()
			var out bytes.Buffer
			err := PrintLeases(t.Context(), c, &out)
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("error:\n got %v\nwant %s...", err, tc.want)
			}
			if errors.Is(err, etcd.ErrUnreachable) != tc.outage {
				t.Errorf("errors.Is(err, etcd.ErrUnreachable) = %v, want %v", !tc.outage, tc.outage)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("took %v", d)
			}
			if out.Len() != 0 {
				t.Errorf("printed %q", out.String())
			}
			cli, want := etcd.Connect(t.Context(), c)
			if want == nil {
				cli.Close()
				t.Fatal("etcd.Connect: no error")
			}
			if err.Error() != want.Error() {
				t.Errorf("PrintLeases says %q, etcd.Connect %q", err, want)
			}
		})
	}
}
