package vxlan

import (
	"bytes"
	"context"
	"log/slog"
	"net/netip"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/flanneld-go/flannel/backend"
	"github.com/flanneld-go/flannel/internal/netnstest"
	"github.com/flanneld-go/flannel/subnet"
)

func TestMain(m *testing.M) { netnstest.Main(m) }

func TestOptions(t *testing.T) {
	o, err := parseOptions([]byte(`{"Type":"vxlan"}`))
	if err != nil || o.(Options).VNI != 1 || o.(Options).Port != 0 || o.(Options).Learning {
		t.Fatalf("defaults: %+v %v", o, err)
	}
	o, err = parseOptions([]byte(`{"type":"vxlan","vni":42,"port":4789,"directrouting":true,"GBP":true}`))
	if err != nil || o.(Options).VNI != 42 || o.(Options).Port != 4789 || !o.(Options).DirectRouting || !o.(Options).GBP {
		t.Fatalf("options: %+v %v", o, err)
	}
	// Unknown keys are ignored (OptionWarnings reports them).
	o, err = parseOptions([]byte(`{"Type":"vxlan","VNI":7,"MacPrefix":"0E-2A","DirectRoute":true}`))
	if err != nil || o.(Options).VNI != 7 || o.(Options).DirectRouting {
		t.Fatalf("with unknown keys: %+v %v", o, err)
	}
	for raw, want := range map[string]string{
		`{"Type":"vxlan","VNI":16777216}`: "Backend.VNI: 16777216 is out of range",
		`{"Type":"vxlan","Port":70000}`:   "Backend.Port: 70000 is not a UDP port",
		`{"Type":"vxlan","Vni":"1"}`:      "Backend.VNI: expected a number, got a JSON string",
		`{"Type":"vxlan","MTU":100}`:      "Backend.MTU: 100 is out of range",
	} {
		if _, err := parseOptions([]byte(raw)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", raw, err, want)
		}
	}
}

func TestStableMAC(t *testing.T) {
	a := stableMAC(netip.MustParseAddr("192.168.50.11"), 1, "IPv4")
	if a.String() != stableMAC(netip.MustParseAddr("192.168.50.11"), 1, "IPv4").String() {
		t.Fatal("not stable")
	}
	if a[0]&0x02 == 0 || a[0]&0x01 != 0 {
		t.Errorf("%s is not locally administered unicast", a)
	}
	if a.String() == stableMAC(netip.MustParseAddr("192.168.50.12"), 1, "IPv4").String() ||
		a.String() == stableMAC(netip.MustParseAddr("192.168.50.11"), 2, "IPv4").String() {
		t.Error("different hosts or VNIs share a MAC")
	}
}

// nhid is the nexthop object a route names in `ip route` output.
var nhid = regexp.MustCompile(`nhid [0-9]+ `)

// sh runs cmd and returns its output, the nexthop ids of routes left out
// (they are the dataplane package's business).
func sh(t *testing.T, cmd string) string {
	t.Helper()
	out, err := exec.Command("sh", "-c", cmd).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", cmd, err, out)
	}
	return nhid.ReplaceAllString(string(out), "")
}

// underlay gives the private namespace an external interface ul0
// (192.168.50.11/24, a veth) and removes it and flannel.1 afterwards.
func underlay(t *testing.T) *backend.ExternalInterface {
	t.Helper()
	netnstest.Require(t)
	sh(t, "ip link add ul0 type veth peer name ul0p && ip addr add 192.168.50.11/24 dev ul0 && ip link set ul0 up && ip link set ul0p up")
	t.Cleanup(func() { exec.Command("sh", "-c", "ip link del ul0; ip link del flannel.1").Run() })
	link, err := netlink.LinkByName("ul0")
	if err != nil {
		t.Fatal(err)
	}
	return &backend.ExternalInterface{Name: "ul0", Index: link.Attrs().Index, MTU: 1500,
		Addr: netip.MustParseAddr("192.168.50.11"), PublicIP: netip.MustParseAddr("192.168.50.11")}
}

// TestDeviceLifecycle runs against the real kernel in a private namespace:
// idempotent adoption, re-creation when incompatible, self-healing after
// deletion, and the entries for a peer.
func TestDeviceLifecycle(t *testing.T) {
	ext := underlay(t)
	cfg, _, _ := subnet.ParseConfig([]byte(`{"Network":"10.244.0.0/16"}`))
	var logs bytes.Buffer
	newB := func() *VXLAN {
		opts, _ := parseOptions([]byte(`{"Type":"vxlan"}`))
		b, err := newBackend(backend.Params{Ext: ext, Config: cfg, Options: opts, Log: slog.New(slog.NewTextHandler(&logs, nil))})
		if err != nil {
			t.Fatal(err)
		}
		return b.(*VXLAN)
	}
	ctx := context.Background()
	b := newB()
	attrs, err := b.Prepare(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mac := stableMAC(ext.PublicIP, 1, "IPv4").String()
	if string(attrs.BackendData) != `{"VNI":1,"VtepMAC":"`+mac+`"}` {
		t.Errorf("BackendData %s", attrs.BackendData)
	}
	own := subnet.Lease{Subnet: netip.MustParsePrefix("10.244.3.0/24")}
	mtu, err := b.Start(ctx, own)
	if err != nil || mtu != 1450 {
		t.Fatalf("Start: %d %v", mtu, err)
	}
	d := sh(t, "ip -d link show flannel.1")
	for _, want := range []string{"mtu 1450", "link/ether " + mac, "vxlan id 1 local 192.168.50.11 dev ul0", "dstport 8472", "nolearning"} {
		if !strings.Contains(d, want) {
			t.Errorf("device lacks %q:\n%s", want, d)
		}
	}
	if a := sh(t, "ip addr show dev flannel.1"); !strings.Contains(a, "inet 10.244.3.0/32") {
		t.Errorf("address: %s", a)
	}
	idx := b.fams[0].index

	// A restart adopts the device as it is: same index (no flap), same MAC.
	logs.Reset()
	b2 := newB()
	if _, err := b2.Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	if b2.fams[0].index != idx || strings.Contains(logs.String(), "created") {
		t.Errorf("restart re-created the device (index %d -> %d): %s", idx, b2.fams[0].index, logs.String())
	}
	b2.Start(ctx, own)

	// A peer: neighbour, FDB, route.
	peer := subnet.Lease{Subnet: netip.MustParsePrefix("10.244.2.0/24"), Attrs: subnet.LeaseAttrs{
		PublicIP: netip.MustParseAddr("192.168.50.12"), BackendType: "vxlan", BackendData: []byte(`{"VNI":1,"VtepMAC":"0a:00:00:00:00:02"}`)}}
	if _, err := b2.Reconcile(ctx, []subnet.Lease{peer}); err != nil {
		t.Fatal(err)
	}
	check := func(when string) {
		t.Helper()
		if n := sh(t, "ip neigh show dev flannel.1"); !strings.Contains(n, "10.244.2.0 lladdr 0a:00:00:00:00:02 PERMANENT") {
			t.Errorf("%s: neigh: %s", when, n)
		}
		if f := sh(t, "bridge fdb show dev flannel.1"); !strings.Contains(f, "0a:00:00:00:00:02 dst 192.168.50.12 self permanent") {
			t.Errorf("%s: fdb: %s", when, f)
		}
		if r := sh(t, "ip route show 10.244.2.0/24"); !strings.Contains(r, "10.244.2.0/24 via 10.244.2.0 dev flannel.1 proto 98 onlink") {
			t.Errorf("%s: route: %s", when, r)
		}
	}
	check("first reconcile")

	// Deleted by hand: everything comes back, device included.
	sh(t, "ip link del flannel.1")
	if _, err := b2.Reconcile(ctx, []subnet.Lease{peer}); err != nil {
		t.Fatal(err)
	}
	check("after the device was deleted")
	if a := sh(t, "ip -d link show flannel.1"); !strings.Contains(a, mac) {
		t.Errorf("re-created device lost its MAC: %s", a)
	}

	// An incompatible device (other port) is re-created with a reason.
	sh(t, "ip link del flannel.1 && ip link add flannel.1 type vxlan id 1 dstport 4789 local 192.168.50.11 dev ul0")
	logs.Reset()
	b3 := newB()
	if _, err := b3.Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "port 4789, want 8472") {
		t.Errorf("no reason logged: %s", logs.String())
	}

	// The peer leaves: all three entries go.
	b3.Start(ctx, own)
	if _, err := b3.Reconcile(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if out := sh(t, "ip neigh show dev flannel.1 nud permanent; bridge fdb show dev flannel.1 | grep dst; ip route show proto 98"); strings.TrimSpace(out) != "" {
		t.Errorf("entries left after the peer left:\n%s", out)
	}
}

// TestDirectRoutingPeerMoves: a peer that moves onto our segment switches
// from tunnel entries to a direct route, and back, leaving nothing of the
// other kind.
func TestDirectRoutingPeerMoves(t *testing.T) {
	ext := underlay(t)
	cfg, _, _ := subnet.ParseConfig([]byte(`{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","DirectRouting":true}}`))
	opts, _ := parseOptions([]byte(`{"Type":"vxlan","DirectRouting":true}`))
	be, _ := newBackend(backend.Params{Ext: ext, Config: cfg, Options: opts, Log: slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil))})
	b := be.(*VXLAN)
	ctx := context.Background()
	if _, err := b.Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Start(ctx, subnet.Lease{Subnet: netip.MustParsePrefix("10.244.3.0/24")}); err != nil {
		t.Fatal(err)
	}
	peerAt := func(ip string) subnet.Lease {
		return subnet.Lease{Subnet: netip.MustParsePrefix("10.244.2.0/24"), Attrs: subnet.LeaseAttrs{
			PublicIP: netip.MustParseAddr(ip), BackendType: "vxlan", BackendData: []byte(`{"VNI":1,"VtepMAC":"0a:00:00:00:00:02"}`)}}
	}
	state := func() string {
		return sh(t, "ip route show proto 98; ip neigh show dev flannel.1 nud permanent; bridge fdb show dev flannel.1 | grep dst || true")
	}
	// Behind a router: the tunnel.
	if _, err := b.Reconcile(ctx, []subnet.Lease{peerAt("192.168.60.12")}); err != nil {
		t.Fatal(err)
	}
	s := state()
	if !strings.Contains(s, "10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink") || !strings.Contains(s, "dst 192.168.60.12") || !strings.Contains(s, "10.244.2.0 lladdr") {
		t.Fatalf("tunnel entries:\n%s", s)
	}
	// On our segment now: a direct route and no tunnel entries.
	if _, err := b.Reconcile(ctx, []subnet.Lease{peerAt("192.168.50.12")}); err != nil {
		t.Fatal(err)
	}
	if s := strings.TrimSpace(state()); s != "10.244.2.0/24 via 192.168.50.12 dev ul0" {
		t.Fatalf("after moving onto the segment:\n%s", s)
	}
	// And back behind the router.
	if _, err := b.Reconcile(ctx, []subnet.Lease{peerAt("192.168.60.12")}); err != nil {
		t.Fatal(err)
	}
	if s := state(); strings.Contains(s, "dev ul0") || !strings.Contains(s, "dst 192.168.60.12") {
		t.Fatalf("after moving away:\n%s", s)
	}
}

// TestForeignDeviceHoldsVNI: another VXLAN device with our VNI and port
// makes the kernel refuse ours (EEXIST). Setup fails with an error naming
// that device and what to do, and leaves it alone; the same holds when
// the daemon re-creates its device while running.
func TestForeignDeviceHoldsVNI(t *testing.T) {
	ext := underlay(t)
	sh(t, "ip link add foreign0 type vxlan id 1 dstport 8472 dev ul0")
	t.Cleanup(func() { exec.Command("ip", "link", "del", "foreign0").Run() })
	cfg, _, _ := subnet.ParseConfig([]byte(`{"Network":"10.244.0.0/16"}`))
	opts, _ := parseOptions([]byte(`{"Type":"vxlan"}`))
	be, err := newBackend(backend.Params{Ext: ext, Config: cfg, Options: opts, Log: slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil))})
	if err != nil {
		t.Fatal(err)
	}
	_, err = be.Prepare(context.Background())
	want := "cannot create VXLAN device flannel.1: the VXLAN device foreign0 (VNI 1, port 8472) holds that VNI and port"
	t.Logf("Prepare: %v", err)
	if err == nil || !strings.HasPrefix(err.Error(), want) || !strings.Contains(err.Error(), "ip link del foreign0") {
		t.Fatalf("Prepare:\n got %v\nwant %s... with ip link del foreign0", err, want)
	}
	if out := sh(t, "ip -d link show foreign0"); !strings.Contains(out, "vxlan id 1 dev ul0") {
		t.Errorf("the foreign device was changed:\n%s", out)
	}
	if _, err := netlink.LinkByName("flannel.1"); err == nil {
		t.Error("flannel.1 exists")
	}

	// Our device, then deleted while running while a foreign one takes
	// the VNI: the reconcile says so too.
	sh(t, "ip link del foreign0")
	if _, err := be.Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	sh(t, "ip link del flannel.1 && ip link add foreign0 type vxlan id 1 dstport 8472 dev ul0")
	if _, err := be.Reconcile(context.Background(), nil); err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("Reconcile:\n got %v\nwant %s...", err, want)
	}
}
