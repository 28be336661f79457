package e2e_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flanneld-go/flannel/e2e/testbed"
)

// TestUpstreamFlags runs the daemon as an upstream unit file would: one
// dash per flag, the net-conf in a file (--net-config-path; etcd holds
// none), --ip-blackhole-route and --ip-masq-fully-random-disable. The
// blackhole for the host's subnet must not take its pods' traffic, the
// masquerade rules lose --random-fully on that host only, a change of the
// file is reported, and a restart without the flag removes the blackhole.
func TestUpstreamFlags(t *testing.T) {
	requireTestbed(t)
	ctx := ctxFor(t, 2*time.Minute)
	tb := testbed.NewT(t, testbed.Options{Hosts: 2})
	h1, h2 := tb.Hosts()[0], tb.Hosts()[1]
	conf := func(h *testbed.Host) string { return filepath.Join(filepath.Dir(h.SubnetFile()), "net-conf.json") }
	for _, h := range tb.Hosts() {
		if err := os.WriteFile(conf(h), []byte(netconf(vxlanBackend)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := h1.StartDaemon(ctx, "-net-config-path="+conf(h1), "-ip-blackhole-route", "-ip-masq", "-ip-masq-fully-random-disable"); err != nil {
		t.Fatal(err)
	}
	if err := h2.StartDaemon(ctx, "-net-config-path", conf(h2), "-ip-masq"); err != nil {
		t.Fatal(err)
	}
	for _, h := range tb.Hosts() {
		if _, err := h.WaitSubnetFile(ctx); err != nil {
			t.Fatalf("%s: %v\n%s", h.Name, err, h.Log())
		}
	}
	if err := tb.AddPodsAll(ctx, 2); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("h1 log:\n%s", h1.Log())
		}
	})
	pingMesh(t, ctx, tb) // h1's own pods too: the blackhole shadows nothing

	sn := leaseSubnet(t, ctx, h1)
	blackhole := func() string {
		out, _ := h1.Exec(ctx, "ip", "route", "show", "type", "blackhole")
		return strings.TrimSpace(out)
	}
	if got, want := blackhole(), "blackhole "+sn.String()+" proto 98 metric 65535"; got != want {
		t.Errorf("h1 blackholes %q, want %q", got, want)
	}
	if out, _ := h1.Exec(ctx, "ip", "route", "get", h1.Pods[0].Addr.String()); !strings.Contains(out, "dev cni0") {
		t.Errorf("h1's route to its own pod: %q", out)
	}
	masq := func(h *testbed.Host) string {
		out, err := h.Exec(ctx, "iptables", "-t", "nat", "-S", "FLANNEL-POSTRTG")
		if err != nil {
			t.Fatalf("%s: %v", h.Name, err)
		}
		return out
	}
	if m := masq(h1); strings.Contains(m, "--random-fully") || !strings.Contains(m, "-j MASQUERADE") {
		t.Errorf("h1 masquerades with --random-fully, or not at all:\n%s", m)
	}
	if m := masq(h2); !strings.Contains(m, "-j MASQUERADE --random-fully") {
		t.Logf("h2 (default) has no --random-fully; this iptables may lack it:\n%s", m)
	}

	// A change of the file is applied live, as one of the etcd key.
	if err := os.WriteFile(conf(h1), []byte(netconf(hostGW)), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "h1 switches to host-gw from its net-conf file", 20*time.Second, func() bool {
		return strings.Contains(h1.Log(), `msg="backend switched" backend=host-gw`)
	})
	os.WriteFile(conf(h1), []byte(netconf(vxlanBackend)), 0o644)
	waitFor(t, "h1 switches back to vxlan", 20*time.Second, func() bool {
		return strings.Contains(h1.Log(), `msg="backend switched" backend=vxlan`)
	})

	// Without the flag, the blackhole goes.
	if err := h1.StopDaemon(); err != nil {
		t.Fatal(err)
	}
	if err := h1.StartDaemon(ctx, "-net-config-path", conf(h1)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the blackhole is removed", 20*time.Second, func() bool { return blackhole() == "" })
	pingMesh(t, ctx, tb)
}
