package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flanneld-go/flannel/backend/udp"
	"github.com/flanneld-go/flannel/internal/etcdtest"
)

// parse runs the root command's flag handling (without running the daemon)
// and returns the flags it ended with.
func parse(t *testing.T, env map[string]string, args ...string) (*cobra.Command, error) {
	t.Helper()
	for k, v := range env {
		t.Setenv(k, v)
	}
	cmd := newRootCmd(&bytes.Buffer{}, &bytes.Buffer{})
	cmd.RunE = func(*cobra.Command, []string) error { return nil }
	cmd.SetArgs(args)
	return cmd, cmd.Execute()
}

func flagValue(t *testing.T, cmd *cobra.Command, name string) string {
	t.Helper()
	f := cmd.Flags().Lookup(name)
	if f == nil {
		t.Fatalf("no flag %s", name)
	}
	return f.Value.String()
}

func TestFlagDefaults(t *testing.T) {
	cmd, err := parse(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{
		"etcd-endpoints": "[http://127.0.0.1:4001,http://127.0.0.1:2379]", "etcd-prefix": "/coreos.com/network",
		"subnet-file": "/run/flannel/subnet.env", "subnet-lease-renew-margin": "60", "ip-masq": "false",
		"iptables-resync": "5", "iptables-forward-rules": "true", "healthz-port": "0", "iface": "[]",
		"etcd-cafile": "", "etcd-certfile": "", "etcd-keyfile": "", "etcd-username": "", "etcd-password": "",
		"iface-regex": "[]", "iface-can-reach": "", "public-ip": "", "public-ipv6": "", "healthz-ip": "0.0.0.0",
		"host-id":                      "",
		"ip-masq-fully-random-disable": "false", "ip-blackhole-route": "false", "net-config-path": "",
	} {
		if got := flagValue(t, cmd, name); got != want {
			t.Errorf("--%s default %q, want %q", name, got, want)
		}
	}
}

func TestEnvironmentAndCommandLinePrecedence(t *testing.T) {
	cmd, err := parse(t, map[string]string{
		"FLANNELD_ETCD_ENDPOINTS":            "http://10.0.0.1:2379,http://10.0.0.2:2379",
		"FLANNELD_IFACE":                     "eth1,192.168.1.5",
		"FLANNELD_IP_MASQ":                   "true",
		"FLANNELD_SUBNET_LEASE_RENEW_MARGIN": "30",
		"FLANNELD_IPTABLES_FORWARD_RULES":    "false",
		"FLANNELD_PUBLIC_IP":                 "203.0.113.9",
		"FLANNELD_ETCD_PREFIX":               "/from/env",
		"FLANNELD_HOST_ID":                   "node-7",
	}, "--etcd-prefix", "/from/cli")
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{
		"etcd-endpoints": "[http://10.0.0.1:2379,http://10.0.0.2:2379]", "iface": "[eth1,192.168.1.5]",
		"ip-masq": "true", "subnet-lease-renew-margin": "30", "iptables-forward-rules": "false",
		"public-ip": "203.0.113.9", "etcd-prefix": "/from/cli", "host-id": "node-7",
	} {
		if got := flagValue(t, cmd, name); got != want {
			t.Errorf("--%s = %q, want %q", name, got, want)
		}
	}
	cmd, err = parse(t, map[string]string{"FLANNELD_VERSION": "true"})
	if err != nil || flagValue(t, cmd, "version") != "false" {
		t.Errorf("FLANNELD_VERSION must not be bound: %v", err)
	}
	if _, err := parse(t, map[string]string{"FLANNELD_IP_MASQ": "maybe"}); err == nil || !strings.Contains(err.Error(), `FLANNELD_IP_MASQ="maybe"`) {
		t.Errorf("bad env value: %v", err)
	}
}

// TestUDPTuning: the udp backend's variables become its Tuning; a bad
// period is reported and leaves the default, as it always did.
func TestUDPTuning(t *testing.T) {
	for _, c := range []struct {
		env  map[string]string
		want udp.Tuning
		err  string
	}{
		{env: nil, want: udp.Tuning{}},
		{env: map[string]string{"FLANNEL_UDP_OFFLOAD": "off"}, want: udp.Tuning{NoOffload: true}},
		{env: map[string]string{"FLANNEL_UDP_OFFLOAD": "on"}, want: udp.Tuning{}},
		{env: map[string]string{"FLANNEL_UDP_LOG_PERIOD": "10s"}, want: udp.Tuning{LogPeriod: 10 * time.Second}},
		{env: map[string]string{"FLANNEL_UDP_OFFLOAD": "off", "FLANNEL_UDP_LOG_PERIOD": "1m30s"}, want: udp.Tuning{NoOffload: true, LogPeriod: 90 * time.Second}},
		{env: map[string]string{"FLANNEL_UDP_LOG_PERIOD": "10"}, want: udp.Tuning{}, err: `FLANNEL_UDP_LOG_PERIOD="10": time: missing unit`},
		{env: map[string]string{"FLANNEL_UDP_LOG_PERIOD": "-5s"}, want: udp.Tuning{}, err: `FLANNEL_UDP_LOG_PERIOD="-5s": not positive`},
	} {
		got, err := udpTuning(func(k string) string { return c.env[k] })
		if got != c.want {
			t.Errorf("%v: %+v, want %+v", c.env, got, c.want)
		}
		if (err == nil) != (c.err == "") || err != nil && !strings.Contains(err.Error(), c.err) {
			t.Errorf("%v: error %v, want %q", c.env, err, c.err)
		}
	}
}

func TestRenewMarginLimits(t *testing.T) {
	for _, v := range []string{"0", "1440"} {
		cmd := newRootCmd(&bytes.Buffer{}, &bytes.Buffer{})
		cmd.SetArgs([]string{"--subnet-lease-renew-margin", v})
		err := cmd.ExecuteContext(context.Background())
		if err == nil || !strings.Contains(err.Error(), "must be between 1 and 1439 minutes") {
			t.Errorf("margin %s: %v", v, err)
		}
	}
}

func run(t *testing.T, stdin string, args ...string) (string, string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	cmd := newRootCmd(&out, &errb)
	cmd.SetArgs(args)
	if stdin != "" {
		f := filepath.Join(t.TempDir(), "stdin")
		os.WriteFile(f, []byte(stdin), 0o644)
		r, _ := os.Open(f)
		defer r.Close()
		old := os.Stdin
		os.Stdin = r
		defer func() { os.Stdin = old }()
	}
	err := cmd.Execute()
	return out.String(), errb.String(), err
}

func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"version"}, {"--version"}} {
		out, _, err := run(t, "", args...)
		if err != nil || strings.TrimSpace(out) != version {
			t.Errorf("%v: %q %v", args, out, err)
		}
	}
}

func TestConfigCheck(t *testing.T) {
	file := filepath.Join(t.TempDir(), "net-conf.json")
	os.WriteFile(file, []byte(`{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"},"Bogus":1}`), 0o644)
	out, errOut, err := run(t, "", "config", "check", file)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, `"SubnetMin": "10.244.1.0"`) || !strings.Contains(out, `"Type": "host-gw"`) {
		t.Errorf("effective config:\n%s", out)
	}
	if !strings.Contains(errOut, `warning: unknown field "Bogus" is ignored`) {
		t.Errorf("warnings: %q", errOut)
	}
	// On whatever host the test runs, the check against its interface
	// (network.CheckConfigOnHost, tested in network) says what it did.
	if !strings.Contains(errOut, "this host: ") {
		t.Errorf("no word on the check against this host: %q", errOut)
	}
	_, errOut, err = run(t, "", "config", "check", "--this-host=false", "--compare-stored=false", file)
	if err != nil || strings.Contains(errOut, "this host") || strings.Contains(errOut, "stored net-conf") {
		t.Errorf("--this-host=false --compare-stored=false: %v %q", err, errOut)
	}
	for conf, want := range map[string]string{
		`{"Network":"0.0.0.0/0"}`: "Network: 0.0.0.0/0 is the default route",
		`{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"::/0"}`: "IPv6Network: ::/0 is the default route",
	} {
		if _, _, err := run(t, conf, "config", "check", "--this-host=false", "-"); err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("%s: %v, want %s...", conf, err, want)
		}
	}
	_, _, err = run(t, `{"Network":"10.244.0.0/16","SubnetMin":"10.244.0.7"}`, "config", "check", "-")
	if err == nil || err.Error() != "SubnetMin: 10.244.0.7 is not the start of a /24 subnet; use 10.244.0.0" {
		t.Errorf("bad config: %v", err)
	}
	_, _, err = run(t, `{"Network":"10.244.0.0/16","Backend":{"Type":"ipip"}}`, "config", "check", "-")
	if err == nil || !strings.Contains(err.Error(), `unknown backend type "ipip"; known types: host-gw`) {
		t.Errorf("unknown backend: %v", err)
	}
}

// TestConfigCheckComparesStored: config check compares the document with
// the net-conf in etcd (network.CompareStoredConfig, tested in network).
func TestConfigCheckComparesStored(t *testing.T) {
	srv, err := etcdtest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	cli := srv.Client(t)
	if _, err := cli.Put(context.Background(), "/coreos.com/network/config", `{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}`); err != nil {
		t.Fatal(err)
	}
	_, errOut, err := run(t, `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`, "config", "check", "--this-host=false", "--etcd-endpoints", srv.Endpoint, "-")
	want := "differences from the net-conf stored at /coreos.com/network/config (stored -> checked):\n  Backend.Type: host-gw -> vxlan: applies live\n"
	if err != nil || errOut != want {
		t.Errorf("config check: %v, stderr:\n%s\nwant:\n%s", err, errOut, want)
	}
}

func TestLeasesCommand(t *testing.T) {
	srv, err := etcdtest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	cli := srv.Client(t)
	ctx := context.Background()
	grant, _ := cli.Grant(ctx, 3600)
	_, err = cli.Put(ctx, "/coreos.com/network/subnets/10.244.3.0-24", `{"PublicIP":"192.168.50.11","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0a:58:0a:f4:03:00"}}`, clientv3.WithLease(grant.ID))
	if err != nil {
		t.Fatal(err)
	}
	cli.Put(ctx, "/coreos.com/network/subnets/10.244.9.0-24", `{"PublicIP":"192.168.50.99","PublicIPv6":null,"BackendType":"host-gw"}`)
	cli.Put(ctx, "/coreos.com/network/subnets/junk", `x`)
	out, _, err := run(t, "", "leases", "--etcd-endpoints", srv.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 || lines[3] != "leases not checked: network config not found at /coreos.com/network/config" {
		t.Fatalf("without a net-conf, output:\n%s", out)
	}
	if !strings.HasPrefix(lines[0], "SUBNET         PUBLIC IP      BACKEND  VTEP MAC           EXPIRES") {
		t.Errorf("header %q", lines[0])
	}
	if !strings.HasPrefix(lines[1], "10.244.3.0/24  192.168.50.11  vxlan    0a:58:0a:f4:03:00  ") || !strings.HasSuffix(lines[1], "(in 1h0m0s)") {
		t.Errorf("leased line %q", lines[1])
	}
	if lines[2] != "10.244.9.0/24  192.168.50.99  host-gw  -                  reserved" {
		t.Errorf("reserved line %q", lines[2])
	}

	// With a net-conf, each lease gets a STATUS: the /24 outside the
	// network is rejected by every host.
	cli.Put(ctx, "/coreos.com/network/config", `{"Network":"10.244.0.0/21","Backend":{"Type":"vxlan"}}`)
	out, _, err = run(t, "", "leases", "--etcd-endpoints", srv.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	lines = strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasSuffix(lines[0], "STATUS") {
		t.Fatalf("with a net-conf, output:\n%s", out)
	}
	if !strings.HasSuffix(lines[1], " ok") {
		t.Errorf("valid lease %q, want status ok", lines[1])
	}
	if !strings.Contains(lines[2], "reserved") || !strings.HasSuffix(lines[2], " outside_network") {
		t.Errorf("lease outside the network %q, want it rejected", lines[2])
	}
}
