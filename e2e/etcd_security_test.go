package e2e_test

// The control channel secured: etcd over TLS with client certificates, and
// etcd with user names and passwords. Daemons that are set up right get
// leases and their pods reach each other; a daemon with a TLS or password
// mistake exits non-zero within seconds saying what to check, and no
// password ever shows up in a log or in flanneld's output.

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/flanneld-go/flannel/e2e/testbed"
	"github.com/flanneld-go/flannel/internal/testpki"
)

// failFast is how soon a daemon must give up on a mistake that waiting
// cannot fix.
const failFast = 15 * time.Second

// TestEtcdTLS: etcd at https://192.168.50.1:2379 requiring client
// certificates; two hosts with --etcd-cafile/--etcd-certfile/--etcd-keyfile;
// a third host tries each mistake, then rides out an etcd outage.
func TestEtcdTLS(t *testing.T) {
	requireTestbed(t)
	ctx := ctxFor(t, 4*time.Minute)
	tb := testbed.NewT(t, testbed.Options{Hosts: 2, PodsPerHost: 1, EtcdTLS: true})
	ep := tb.EtcdEndpoint()
	if ep != "https://192.168.50.1:2379" {
		t.Fatalf("TLS testbed endpoint %s", ep)
	}
	tlsFlags := tb.EtcdTLSFlags()
	if err := tb.PutNetConfig(ctx, netconf(hostGW)); err != nil {
		t.Fatal(err)
	}
	if err := tb.StartDaemons(ctx, tlsFlags...); err != nil {
		t.Fatal(err)
	}
	pingMesh(t, ctx, tb)
	h1 := tb.Hosts()[0]
	out, err := leases(ctx, tb, h1, tlsFlags...)
	if err != nil || strings.Count(out, "host-gw") != 2 {
		t.Fatalf("flanneld leases over TLS: %v\n%s", err, out)
	}

	pki := tb.EtcdPKI()
	otherCA, err := testpki.NewCA(tb.WorkDir(), "other-ca")
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := otherCA.Issue(tb.WorkDir(), "foreign-client", testpki.CertOptions{Client: true})
	if err != nil {
		t.Fatal(err)
	}
	h3, err := tb.AddHost(ctx, testbed.HostOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		flags []string
		want  string
	}{
		{"wrong CA", []string{"--etcd-cafile", otherCA.File, "--etcd-certfile", pki.Client.Cert, "--etcd-keyfile", pki.Client.Key},
			"etcd at https://192.168.50.1:2379: its TLS certificate failed verification: x509: certificate signed by unknown authority; " +
				"check --etcd-cafile " + otherCA.File + ": it must hold the CA that signed etcd's certificate"},
		{"no client certificate", []string{"--etcd-cafile", pki.CA.File},
			"etcd at https://192.168.50.1:2379 rejected our TLS handshake (remote error: tls: certificate required): " +
				"etcd requires a client certificate: give --etcd-certfile and --etcd-keyfile"},
		{"client certificate of another CA", []string{"--etcd-cafile", pki.CA.File, "--etcd-certfile", foreign.Cert, "--etcd-keyfile", foreign.Key},
			"etcd at https://192.168.50.1:2379 rejected our TLS handshake (remote error: tls: certificate required): " +
				"check --etcd-certfile " + foreign.Cert + " and --etcd-keyfile"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			failingDaemon(t, ctx, h3, nil, tc.flags, tc.want)
			start := time.Now()
			out, err := leases(ctx, tb, h3, tc.flags...)
			if err == nil || !strings.Contains(out, "flanneld: "+tc.want) {
				t.Errorf("flanneld leases: %v\n%s\nwant %q", err, out, tc.want)
			}
			if d := time.Since(start); d > failFast {
				t.Errorf("flanneld leases took %v", d)
			}
		})
	}

	// An etcd that is down is waited for, not reported as a mistake.
	if err := tb.StopEtcd(); err != nil {
		t.Fatal(err)
	}
	mark := len(h3.Log())
	if err := h3.StartDaemon(ctx, tlsFlags...); err != nil {
		t.Fatal(err)
	}
	time.Sleep(8 * time.Second)
	if exited, err := h3.DaemonExited(); exited {
		t.Fatalf("daemon exited (%v) while etcd was down:\n%s", err, h3.Log()[mark:])
	}
	waiting := false
	for line := range strings.Lines(h3.Log()[mark:]) {
		if strings.Contains(line, "waiting for etcd") || strings.Contains(line, "etcd unavailable") {
			t.Logf("while etcd is down: %s", strings.TrimSpace(line))
			waiting = true
			break
		}
	}
	if !waiting {
		t.Errorf("no sign of waiting for etcd in the log:\n%s", h3.Log()[mark:])
	}
	if err := tb.StartEtcd(ctx); err != nil {
		t.Fatal(err)
	}
	if err := h3.AddPods(ctx, 1); err != nil {
		t.Fatal(err)
	}
	pingMesh(t, ctx, tb)
}

// TestEtcdAuth: etcd with authentication; one daemon gets its credentials
// from --etcd-username/--etcd-password, another only from
// FLANNELD_ETCD_USERNAME/FLANNELD_ETCD_PASSWORD; a third host tries wrong
// and missing credentials. No password appears in any daemon log or in
// flanneld's output.
func TestEtcdAuth(t *testing.T) {
	requireTestbed(t)
	const (
		rootPW  = "Root-pw-7f3a9"
		pw      = "Flannel-pw-c41e8"
		wrongPW = "Wrong-pw-92b7d"
	)
	ctx := ctxFor(t, 3*time.Minute)
	tb := testbed.NewT(t, testbed.Options{Hosts: 2})
	if err := tb.PutNetConfig(ctx, netconf(hostGW)); err != nil {
		t.Fatal(err)
	}
	if err := tb.AddEtcdUser(ctx, "flannel", pw, "/coreos.com/network/"); err != nil {
		t.Fatal(err)
	}
	if err := tb.EnableEtcdAuth(ctx, rootPW); err != nil {
		t.Fatal(err)
	}
	hosts := tb.Hosts()
	if err := hosts[0].StartDaemon(ctx, "--etcd-username", "flannel", "--etcd-password", pw); err != nil {
		t.Fatal(err)
	}
	if err := hosts[1].StartDaemonEnv(ctx, []string{"FLANNELD_ETCD_USERNAME=flannel", "FLANNELD_ETCD_PASSWORD=" + pw}); err != nil {
		t.Fatal(err)
	}
	for _, h := range hosts {
		if _, err := h.WaitSubnetFile(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := tb.AddPodsAll(ctx, 1); err != nil {
		t.Fatal(err)
	}
	pingMesh(t, ctx, tb)
	var outputs []string
	out, err := leases(ctx, tb, hosts[0], "--etcd-username", "flannel", "--etcd-password", pw)
	if err != nil || strings.Count(out, "host-gw") != 2 {
		t.Fatalf("flanneld leases with a password: %v\n%s", err, out)
	}
	outputs = append(outputs, out)

	h3, err := tb.AddHost(ctx, testbed.HostOptions{})
	if err != nil {
		t.Fatal(err)
	}
	const authFailed = `etcd authentication failed for user "flannel" (etcdserver: authentication failed, invalid user ID or password): ` +
		"check --etcd-username/--etcd-password (or FLANNELD_ETCD_USERNAME/FLANNELD_ETCD_PASSWORD)"
	for _, tc := range []struct {
		name  string
		env   []string
		flags []string
		want  string
	}{
		{"wrong password in the environment", []string{"FLANNELD_ETCD_USERNAME=flannel", "FLANNELD_ETCD_PASSWORD=" + wrongPW}, nil, authFailed},
		{"wrong password on the command line", nil, []string{"--etcd-username", "flannel", "--etcd-password", wrongPW}, authFailed},
		{"no credentials", nil, nil,
			"etcd at http://192.168.50.1:2379 requires authentication (etcdserver: user name is empty): " +
				"give --etcd-username and --etcd-password (or FLANNELD_ETCD_USERNAME and FLANNELD_ETCD_PASSWORD)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			failingDaemon(t, ctx, h3, tc.env, tc.flags, tc.want)
		})
	}
	out, err = leases(ctx, tb, h3, "--etcd-username", "flannel", "--etcd-password", wrongPW)
	if err == nil || !strings.Contains(out, "flanneld: "+authFailed) {
		t.Errorf("flanneld leases with a wrong password: %v\n%s", err, out)
	}
	outputs = append(outputs, out)

	for _, h := range tb.Hosts() {
		outputs = append(outputs, daemonOutput(h.Log()))
	}
	for _, o := range outputs {
		for _, secret := range []string{pw, wrongPW, rootPW} {
			if strings.Contains(o, secret) {
				t.Errorf("a password (%d chars) appears in flanneld output:\n%s", len(secret), o)
			}
		}
	}
}

// failingDaemon starts the daemon on h and checks that it exits non-zero
// within failFast, logging want.
func failingDaemon(t *testing.T, ctx context.Context, h *testbed.Host, env, flags []string, want string) {
	t.Helper()
	mark := len(h.Log())
	start := time.Now()
	if err := h.StartDaemonEnv(ctx, env, flags...); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, failFast)
	defer cancel()
	code, err := h.WaitDaemonExit(wctx)
	if err != nil {
		h.KillDaemon()
		t.Fatalf("daemon still running after %v: %v\n%s", failFast, err, h.Log()[mark:])
	}
	log := h.Log()[mark:]
	if code == 0 {
		t.Errorf("daemon exited 0:\n%s", log)
	}
	if !strings.Contains(log, "flanneld: "+want) {
		t.Errorf("log lacks %q:\n%s", want, log)
	}
	t.Logf("exit %d after %v: %s", code, time.Since(start).Round(time.Millisecond), strings.TrimSpace(log[strings.LastIndex(strings.TrimRight(log, "\n"), "\n")+1:]))
}

// leases runs flanneld leases in h's namespace against the testbed etcd
// and returns its combined output.
func leases(ctx context.Context, tb *testbed.Testbed, h *testbed.Host, flags ...string) (string, error) {
	argv := append([]string{tb.FlanneldBin(), "leases", "--etcd-endpoints", tb.EtcdEndpoint()}, flags...)
	return h.Exec(ctx, argv...)
}

// daemonOutput drops the lines the testbed writes into a daemon log (the
// command line it ran, which may hold --etcd-password), leaving what the
// daemon wrote.
func daemonOutput(log string) string {
	var b strings.Builder
	for line := range strings.Lines(log) {
		if !strings.HasPrefix(line, "=== testbed ") {
			b.WriteString(line)
		}
	}
	return b.String()
}
