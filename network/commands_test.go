package network

import (
	"bytes"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/flanneld-go/flannel/internal/etcdtest"
	"github.com/flanneld-go/flannel/subnet"
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

// TestWriteLeaseTable: the table marks each lease with the peer set's
// verdict, judged among the leases (older wins), and has no STATUS column
// without a net-conf.
func TestWriteLeaseTable(t *testing.T) {
	leases := []subnet.Lease{
		lease("10.244.3.0/24", "192.168.50.13", "vxlan", 12, "0e:00:00:00:00:13"),
		lease("10.244.2.0/24", "192.168.50.12", "vxlan", 11, "0e:00:00:00:00:12"),
		lease("10.244.2.0/25", "192.168.50.66", "vxlan", 20, "0e:00:00:00:00:66"),
		lease("10.244.4.0/24", "192.168.50.67", "vxlan", 21, "0e:00:00:00:00:12"),
		lease("10.99.0.0/24", "192.168.50.68", "vxlan", 22, "0e:00:00:00:00:68"),
		lease("10.244.5.0/24", "192.168.50.15", "ipip", 13, ""),
		lease("10.244.6.0/24", "127.0.0.1", "host-gw", 14, ""),
	}
	leases[0].EtcdLeaseID = 7
	leases[0].Expiration = time.Date(2026, 11, 25, 4, 9, 31, 0, time.UTC)
	now := leases[0].Expiration.Add(-24 * time.Hour)
	var out bytes.Buffer
	if err := WriteLeaseTable(&out, leases, mustConfig(t, netconf4), now); err != nil {
		t.Fatal(err)
	}
	want := `SUBNET         PUBLIC IP      BACKEND  VTEP MAC           EXPIRES                            STATUS
10.99.0.0/24   192.168.50.68  vxlan    0e:00:00:00:00:68  reserved                           outside_network
10.244.2.0/24  192.168.50.12  vxlan    0e:00:00:00:00:12  reserved                           ok
10.244.2.0/25  192.168.50.66  vxlan    0e:00:00:00:00:66  reserved                           subnet_length
10.244.3.0/24  192.168.50.13  vxlan    0e:00:00:00:00:13  2026-11-25T04:09:31Z (in 24h0m0s)  ok
10.244.4.0/24  192.168.50.67  vxlan    0e:00:00:00:00:12  reserved                           vtep_mac_duplicate (older: 10.244.2.0-24)
10.244.5.0/24  192.168.50.15  ipip     -                  reserved                           backend_type
10.244.6.0/24  127.0.0.1      host-gw  -                  reserved                           public_ip_invalid
`
	if out.String() != want {
		t.Errorf("table:\n%s\nwant:\n%s", out.String(), want)
	}
	out.Reset()
	if err := WriteLeaseTable(&out, leases[:1], nil, now); err != nil {
		t.Fatal(err)
	}
	if first := strings.SplitN(out.String(), "\n", 2)[0]; strings.Contains(first, "STATUS") {
		t.Errorf("a STATUS column without a net-conf: %q", first)
	}
}

// TestWriteLeaseTableWireGuard: wireguard leases show their public key
// (the only key a lease holds), a malformed one as "invalid" (never its
// text), other backends "-".
func TestWriteLeaseTableWireGuard(t *testing.T) {
	const key = "Cg8le1IOf0PYPBZwa2TEc5eIBz/HxF6Tw9t4D8FUEWo="
	wg := lease("10.244.2.0/24", "192.168.50.12", "wireguard", 11, "")
	wg.Attrs.BackendData = []byte(`{"PublicKey":"` + key + `","Port":51820}`)
	bad := lease("10.244.3.0/24", "192.168.50.13", "wireguard", 12, "")
	bad.Attrs.BackendData = []byte(`{"PublicKey":"line\nbreak\tand tab","Port":51820}`)
	leases := []subnet.Lease{wg, bad, lease("10.244.5.0/24", "192.168.50.15", "host-gw", 13, "")}
	var out bytes.Buffer
	if err := WriteLeaseTable(&out, leases, nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	want := `SUBNET         PUBLIC IP      BACKEND    VTEP MAC  PUBLIC KEY                                    EXPIRES
10.244.2.0/24  192.168.50.12  wireguard  -         ` + key + `  reserved
10.244.3.0/24  192.168.50.13  wireguard  -         invalid                                       reserved
10.244.5.0/24  192.168.50.15  host-gw    -         -                                             reserved
`
	if out.String() != want {
		t.Errorf("table:\n%s\nwant:\n%s", out.String(), want)
	}
}

// TestPrintLeasesMarksConflicts: through etcd, the second key for a
// subnet is the younger by create revision, and is marked, whatever its
// key sorts as; without a net-conf the table says the leases were not
// checked.
func TestPrintLeasesMarksConflicts(t *testing.T) {
	srv, err := etcdtest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	cli, ctx := srv.Client(t), t.Context()
	c := etcd.Config{Endpoints: []string{srv.Endpoint}}
	put := func(k, v string) {
		if _, err := cli.Put(ctx, "/coreos.com/network/"+k, v); err != nil {
			t.Fatal(err)
		}
	}
	// The younger key sorts first: only the create revision can tell.
	put("subnets/10.244.2.0-24&fd00:10:244:9::-64", `{"PublicIP":"192.168.50.66","BackendType":"host-gw"}`)
	put("subnets/10.244.2.0-24", `{"PublicIP":"192.168.50.12","BackendType":"host-gw"}`)
	put("subnets/10.244.2.0-24&fd00:10:244:9::-64", `{"PublicIP":"192.168.50.66","BackendType":"host-gw"}`) // rewritten: still the older key
	var out bytes.Buffer
	if err := PrintLeases(ctx, c, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "leases not checked: ") || !strings.Contains(out.String(), "/coreos.com/network/config") {
		t.Errorf("no note that the leases were not checked:\n%s", out.String())
	}
	put("config", `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"host-gw"}}`)
	out.Reset()
	if err := PrintLeases(ctx, c, &out); err != nil {
		t.Fatal(err)
	}
	t.Logf("flanneld leases:\n%s", out.String())
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 || !strings.HasSuffix(lines[0], "STATUS") ||
		!strings.Contains(lines[1], "192.168.50.12") || !strings.HasSuffix(lines[1], "overlaps_lease (older: 10.244.2.0-24&fd00:10:244:9::-64)") ||
		!strings.Contains(lines[2], "192.168.50.66") || !strings.HasSuffix(lines[2], "  ok") {
		t.Errorf("table:\n%s", out.String())
	}
}

// TestCompareStoredConfig: config check lists each difference from the
// net-conf in etcd, live or with what a restart needs (naming the prefix
// in use); a missing or invalid stored net-conf and the same document
// are one line each.
func TestCompareStoredConfig(t *testing.T) {
	srv, err := etcdtest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	cli, ctx := srv.Client(t), t.Context()
	c := etcd.Config{Endpoints: []string{srv.Endpoint}, Prefix: "/p/net"}
	const stored = `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","VNI":1}}`
	compare := func(doc string) string {
		t.Helper()
		var out bytes.Buffer
		if err := CompareStoredConfig(ctx, c, []byte(doc), &out); err != nil {
			t.Fatal(err)
		}
		return out.String()
	}
	if got, want := compare(stored), "stored net-conf not compared: network config not found at /p/net/config\n"; got != want {
		t.Errorf("no stored net-conf:\n got %q\nwant %q", got, want)
	}
	if _, err := cli.Put(ctx, "/p/net/config", stored); err != nil {
		t.Fatal(err)
	}
	got := compare(`{"Network":"10.245.0.0/16","EnableNFTables":true,"Backend":{"Type":"host-gw"}}`)
	t.Logf("config check:\n%s", got)
	want := `differences from the net-conf stored at /p/net/config (stored -> checked):
  Network: 10.244.0.0/16 -> 10.245.0.0/16: needs a restart: Network cannot change while hosts hold leases: restore it, or drain the cluster, delete the leases (under /p/net/subnets/) and restart every host
  EnableNFTables: false -> true: needs a restart: EnableNFTables: restart each host to change the firewall mode
  Backend.Type: vxlan -> host-gw: applies live
  Backend.VNI: 1 -> (unset): applies live
`
	if got != want {
		t.Errorf("differences:\n%s\nwant:\n%s", got, want)
	}
	if got, want := compare(stored), "stored net-conf at /p/net/config: the same document\n"; got != want {
		t.Errorf("same document: %q, want %q", got, want)
	}
	if got, want := compare(`{"network": "10.244.0.0/16", "backend": {"type": "VXLAN", "vni": 1}}`),
		"stored net-conf at /p/net/config: the same settings, written differently\n"; got != want {
		t.Errorf("same settings: %q, want %q", got, want)
	}
	cli.Put(ctx, "/p/net/config", `{"Network":`)
	if got := compare(stored); !strings.HasPrefix(got, "stored net-conf not compared: invalid net-conf at /p/net/config: ") || strings.Count(got, "\n") != 1 {
		t.Errorf("invalid stored net-conf: %q", got)
	}
}

// TestCompareStoredConfigEtcdDown: an etcd that is down is one line, at
// once: config check works offline.
func TestCompareStoredConfigEtcdDown(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := l.Addr().String()
	l.Close()
	start := time.Now()
	var out bytes.Buffer
	c := etcd.Config{Endpoints: []string{"http://" + refused}}
	if err := CompareStoredConfig(t.Context(), c, []byte(`{"Network":"10.244.0.0/16"}`), &out); err != nil {
		t.Fatal(err)
	}
	if got := out.String(); !strings.HasPrefix(got, "stored net-conf not compared: etcd at http://"+refused+" is unreachable") || strings.Count(got, "\n") != 1 {
		t.Errorf("etcd down: %q", got)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("an etcd that is down took %v", d)
	}
}
