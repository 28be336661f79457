package network

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flanneld-go/flannel/backend"
	"github.com/flanneld-go/flannel/internal/etcdtest"
	"github.com/flanneld-go/flannel/subnet"
	"github.com/flanneld-go/flannel/subnet/etcd"
)

func TestDeriveHostID(t *testing.T) {
	mac1, _ := net.ParseMAC("52:54:00:12:34:56")
	mac2, _ := net.ParseMAC("52:54:00:12:34:57")
	const mid = "4c4c4544004a3510804bb4c04f4e4d32"
	id := DeriveHostID(mid, mac1)
	if !regexp.MustCompile(`^[0-9a-f]{16}$`).MatchString(id) {
		t.Fatalf("identity %q is not 16 hex digits", id)
	}
	if DeriveHostID(mid, mac1) != id {
		t.Error("the derivation is not deterministic")
	}
	for what, other := range map[string]string{
		"another MAC (a cloned image, a namespace host)": DeriveHostID(mid, mac2),
		"another machine ID":                             DeriveHostID("0123456789abcdef0123456789abcdef", mac1),
		"no MAC":                                         DeriveHostID(mid, nil),
	} {
		if other == id {
			t.Errorf("%s gives the same identity %s", what, id)
		}
	}
	if strings.Contains(id, mid[:8]) {
		t.Error("the identity shows the machine ID")
	}
}

func TestHostIdentity(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "machine-id")
	os.WriteFile(file, []byte("4c4c4544004a3510804bb4c04f4e4d32\n"), 0o644)
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, nil, 0o644)
	mac, _ := net.ParseMAC("52:54:00:12:34:56")
	for _, tc := range []struct {
		name, flag, file string
		mac              net.HardwareAddr
		id, source, err  string
	}{
		{"flag", "node-7.example.com", file, mac, "node-7.example.com", "set by --host-id", ""},
		{"bad flag", "node 7", file, mac, "", "", `--host-id "node 7": use 1 to 64 letters, digits and . _ : -`},
		{"machine ID and MAC", "", file, mac, DeriveHostID("4c4c4544004a3510804bb4c04f4e4d32", mac),
			"derived from " + file + " and the MAC address of eth0", ""},
		{"MAC only", "", filepath.Join(dir, "missing"), mac, DeriveHostID("", mac), "derived from the MAC address of eth0", ""},
		{"machine ID only", "", file, nil, DeriveHostID("4c4c4544004a3510804bb4c04f4e4d32", nil), "derived from " + file, ""},
		{"neither", "", empty, nil, "", "none: " + empty + " is missing or empty and eth0 has no MAC address", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, source, err := HostIdentity(tc.flag, tc.file, "eth0", tc.mac)
			if tc.err != "" {
				if err == nil || err.Error() != tc.err {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || id != tc.id || source != tc.source {
				t.Fatalf("got %q %q %v, want %q %q", id, source, err, tc.id, tc.source)
			}
		})
	}
}

// acquireEngine is an engine for tests of its acquisition alone, with
// short rounds.
func acquireEngine(t *testing.T, cli *clientv3.Client, cfg *subnet.Config, hostID string) *Engine {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	sm := etcd.NewManager(cli, "/coreos.com/network", time.Hour, log)
	ip := netip.MustParseAddr("192.168.50.11")
	ext := &backend.ExternalInterface{Name: "eth0", Index: 2, MTU: 1500, Addr: ip, PublicIP: ip}
	e := NewEngine(Config{Log: log, HostID: hostID}, sm, cfg, ext, &recordingBackend{})
	e.attrs = subnet.LeaseAttrs{PublicIP: ip, PublicIPv6: netip.MustParseAddr("fd00:50::11"), BackendType: "test", HostID: hostID}
	e.acquireTimeout = 300 * time.Millisecond
	return e
}

// While another writer changes the subnet table between every read and
// write, acquisition rounds end in lost races: /readyz says so, and after lostRaceRounds the
// engine gives up with an error that is not an etcd outage.
func TestAcquireGivesUpAfterLostRaces(t *testing.T) {
	srv, err := etcdtest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	// Dual-stack: creation needs the whole table unchanged since the read.
	cfg, _, _ := subnet.ParseConfig([]byte(`{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/56"}`))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cli := srv.Client(t)
	etcdtest.Interfere(cli, "/coreos.com/network/subnets/churn")
	e := acquireEngine(t, cli, cfg, "host-a")
	done := make(chan error, 1)
	go func() { _, err := e.acquire(ctx, subnet.Hint{}); done <- err }()
	eventually(t, "/readyz names the lost races", 5*time.Second, func() bool {
		r := e.health.Ready()
		return r != nil && strings.Contains(r.Error(), "lease: acquiring a lease: lost the race for a subnet (round 1 of 3)")
	})
	select {
	case err = <-done:
	case <-ctx.Done():
		t.Fatal("acquisition did not give up")
	}
	if !errors.Is(err, etcd.ErrLostRaces) || !strings.Contains(err.Error(), "giving up after 3 rounds") {
		t.Fatalf("got %v", err)
	}
	if r := e.health.Ready(); r == nil || !strings.Contains(r.Error(), "lease: acquiring a lease: gave up: ") {
		t.Errorf("/readyz after giving up: %v", r)
	}
}

// With etcd gone, acquisition waits, and /readyz says etcd is unreachable.
func TestAcquireWaitsForEtcd(t *testing.T) {
	srv, err := etcdtest.Start()
	if err != nil {
		t.Fatal(err)
	}
	cfg, _, _ := subnet.ParseConfig([]byte(`{"Network":"10.244.0.0/16"}`))
	e := acquireEngine(t, srv.Client(t), cfg, "host-a")
	srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { _, err := e.acquire(ctx, subnet.Hint{}); done <- err }()
	eventually(t, "/readyz names the outage", 5*time.Second, func() bool {
		r := e.health.Ready()
		return r != nil && strings.Contains(r.Error(), "lease: acquiring a lease: etcd unreachable: ")
	})
	select {
	case err := <-done:
		t.Fatalf("acquisition stopped during an outage: %v", err)
	case <-time.After(time.Second):
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("after cancel: %v", err)
	}
}

// Another host's lease for our PublicIP stops the engine at once, with
// where our identity comes from.
func TestAcquireStopsOnHostConflict(t *testing.T) {
	srv, err := etcdtest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	cfg, _, _ := subnet.ParseConfig([]byte(`{"Network":"10.244.0.0/16"}`))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	first := acquireEngine(t, srv.Client(t), cfg, "host-a")
	first.attrs.PublicIPv6 = netip.Addr{}
	l, err := first.acquire(ctx, subnet.Hint{})
	if err != nil {
		t.Fatal(err)
	}
	second := acquireEngine(t, srv.Client(t), cfg, "host-b")
	second.attrs.PublicIPv6 = netip.Addr{}
	second.hostIDSource = "derived from /etc/machine-id and the MAC address of eth0"
	start := time.Now()
	_, err = second.acquire(ctx, subnet.Hint{})
	if !errors.Is(err, etcd.ErrHostConflict) || time.Since(start) > 2*time.Second {
		t.Fatalf("got %v after %v, want a host conflict at once", err, time.Since(start))
	}
	for _, want := range []string{"belongs to host host-a, this host is host-b", l.Subnet.String(), "192.168.50.11",
		"etcdctl del /coreos.com/network/subnets/" + l.Key(), "(this host's identity host-b is derived from /etc/machine-id and the MAC address of eth0)"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

// Which failures stop the acquisition and which are waited out.
func TestAcquireFailedSortsErrors(t *testing.T) {
	e := NewEngine(Config{Log: slog.New(slog.NewTextHandler(io.Discard, nil))}, nil, nil, &backend.ExternalInterface{}, &recordingBackend{})
	outage := etcd.NewOutageLog(e.log, "acquiring a lease")
	races := 0
	for _, tc := range []struct {
		name       string
		err        error
		fatal      string // "" when retried
		reason     string
		racesAfter int
	}{
		{"etcd down", context.DeadlineExceeded, "", "etcd unreachable: context deadline exceeded", 0},
		{"no free subnet", fmt.Errorf("%w in 10.0.0.0/28", subnet.ErrNoFreeSubnet), "no free subnet in 10.0.0.0/28", "", 0},
		{"permission denied", fmt.Errorf("creating lease k: %w", rpctypes.ErrPermissionDenied),
			"acquiring a lease: etcd refused the request; check the etcd user's permissions on the prefix: creating lease k: etcdserver: permission denied", "", 0},
		{"lost races, round 1", etcd.ErrLostRaces, "", "lost the race for a subnet (round 1 of 3): lost the race for a subnet", 1},
		{"lost races, round 2", etcd.ErrLostRaces, "", "lost the race for a subnet (round 2 of 3): lost the race for a subnet", 2},
		{"lost races, round 3", etcd.ErrLostRaces, "acquiring a lease: giving up after 3 rounds: lost the race for a subnet", "", 3},
	} {
		reason, fatal := e.acquireFailed(tc.err, &races, outage)
		gotFatal := ""
		if fatal != nil {
			gotFatal = fatal.Error()
		}
		if gotFatal != tc.fatal || reason != tc.reason || races != tc.racesAfter {
			t.Errorf("%s: reason %q, fatal %v, races %d; want %q, %q, %d", tc.name, reason, fatal, races, tc.reason, tc.fatal, tc.racesAfter)
		}
	}
}

// The engine writes its HostID into its lease, and keeps it when it
// acquires the lease again after an operator deleted it.
func TestEngineKeepsHostIDAcrossReacquire(t *testing.T) {
	srv, err := etcdtest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	cli := srv.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	netconf := `{"Network":"10.244.0.0/16","Backend":{"Type":"test"}}`
	cli.Put(ctx, "/coreos.com/network/config", netconf)
	cfg, _, _ := subnet.ParseConfig([]byte(netconf))
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	sm := etcd.NewManager(cli, "/coreos.com/network", time.Hour, log)
	ip := netip.MustParseAddr("192.168.50.11")
	ready := make(chan struct{})
	e := NewEngine(Config{Log: log, HostID: "host-a", SubnetFile: filepath.Join(t.TempDir(), "subnet.env"), Ready: func() { close(ready) }},
		sm, cfg, &backend.ExternalInterface{Name: "eth0", Index: 2, MTU: 1500, Addr: ip, PublicIP: ip}, &recordingBackend{})
	e.enableForwarding = func(*slog.Logger, bool) error { return nil }
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- e.Run(rctx) }()
	defer func() { stop(); <-done }()
	select {
	case <-ready:
	case err := <-done:
		t.Fatal(err)
	case <-ctx.Done():
		t.Fatal("not ready")
	}
	key := "/coreos.com/network/subnets/" + e.Lease().Key()
	hostID := func() string {
		r, err := cli.Get(ctx, key)
		if err != nil || len(r.Kvs) != 1 {
			return ""
		}
		var a subnet.LeaseAttrs
		if json.Unmarshal(r.Kvs[0].Value, &a) != nil {
			return ""
		}
		return a.HostID
	}
	if got := hostID(); got != "host-a" {
		t.Fatalf("lease HostID %q", got)
	}
	cli.Delete(ctx, key)
	eventually(t, "re-acquired with the HostID", 5*time.Second, func() bool { return hostID() == "host-a" })
}
