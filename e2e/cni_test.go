package e2e_test

// The real flannel CNI plugin on top of the daemon. Pod namespaces are not
// wired by the testbed: cnitool, run in the host namespace like a container
// runtime, executes the flannel plugin (containernetworking/plugins v0.9.1,
// the subnet.env contract of flannel-io/cni-plugin), which reads the subnet
// file flanneld wrote and delegates to bridge (cni0, the veth, MTU) and
// host-local (addresses from FLANNEL_SUBNET and FLANNEL_IPV6_SUBNET).

import (
	"context"
	"encoding/json"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flanneld-go/flannel/e2e/testbed"
)

const cniNetwork = "cbr0"

// cniConflist is the configuration a flannel deployment installs
// (kube-flannel's cni-conf.json without portmap), with the plugins' state
// directories in the host's CNI directory: flannel's saved delegate
// configurations in flannel/, host-local's reservations in networks/.
// flannel v0.9.1 refuses "ipam" inside "delegate" but starts the delegate's
// ipam from its own top-level "ipam", adding ranges and routes.
func cniConflist(t *testing.T, h *testbed.Host) string {
	t.Helper()
	conf := map[string]any{
		"cniVersion": "0.3.1",
		"name":       cniNetwork,
		"plugins": []map[string]any{{
			"type":       "flannel",
			"subnetFile": h.SubnetFile(),
			"dataDir":    filepath.Join(h.CNIDir(), "flannel"),
			"ipam":       map[string]any{"dataDir": filepath.Join(h.CNIDir(), "networks")},
			"delegate":   map[string]any{"isDefaultGateway": true, "hairpinMode": true},
		}},
	}
	b, err := json.Marshal(conf)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// cniResult is the part of a CNI 0.3.1 result the test checks.
type cniResult struct {
	CNIVersion string `json:"cniVersion"`
	Interfaces []struct {
		Name    string `json:"name"`
		Sandbox string `json:"sandbox"`
	} `json:"interfaces"`
	IPs []struct {
		Address netip.Prefix `json:"address"`
		Gateway netip.Addr   `json:"gateway"`
	} `json:"ips"`
}

func TestCNIFlannel(t *testing.T) {
	for _, tc := range []struct {
		backend string
		mtu     int
	}{
		{"host-gw", 1500},
		{"vxlan", 1450},
	} {
		t.Run(tc.backend, func(t *testing.T) {
			cniSuite(t, netconf(`{"Type":"`+tc.backend+`"}`), testbed.Options{}, tc.mtu)
		})
	}
}

func TestCNIFlannelDualStack(t *testing.T) {
	cniSuite(t, `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"host-gw"}}`,
		testbed.Options{IPv6: true}, 1500)
}

// cniSuite: on 2 hosts running flanneld with netConf, one pod per host set
// up by the flannel CNI plugin gets its addresses from its host's lease, a
// bridge cni0 with the gateway and the lease's MTU, and reaches the other
// host's pod. DEL frees the address: the reservation disappears and ADD can
// take the same address again.
func cniSuite(t *testing.T, netConf string, opts testbed.Options, wantMTU int) {
	requireTestbed(t)
	ctx := ctxFor(t, 2*time.Minute)
	start := time.Now()
	var tb *testbed.Testbed
	var pods []*testbed.CNIPod
	checkNoLeftovers(t, &tb, &pods)
	opts.Hosts = 2
	tb = testbed.NewT(t, opts)
	if err := tb.PutNetConfig(ctx, netConf); err != nil {
		t.Fatal(err)
	}
	if err := tb.StartDaemons(ctx); err != nil {
		t.Fatal(err)
	}
	hosts := tb.Hosts()
	envs := make([]map[string]string, len(hosts))
	for i, h := range hosts {
		env, err := h.WaitSubnetFile(ctx)
		if err != nil {
			t.Fatal(err)
		}
		envs[i] = env
		if opts.IPv6 && env["FLANNEL_IPV6_SUBNET"] == "" {
			t.Fatalf("%s: IPv6 is enabled but the subnet file has no FLANNEL_IPV6_SUBNET:\n%v", h.Name, env)
		}
		if err := h.WriteCNIConfig(cniNetwork, cniConflist(t, h)); err != nil {
			t.Fatal(err)
		}
		added := time.Now()
		p, err := h.AddCNIPod(ctx, cniNetwork)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: cnitool add took %v; result: %s", p.Name, time.Since(added).Round(time.Millisecond), strings.Join(strings.Fields(p.Result), " "))
		pods = append(pods, p)
		checkCNIPod(t, p, env, wantMTU)
	}

	pingPods := func() {
		t.Helper()
		defer func(start time.Time) {
			t.Logf("pods reach each other (both directions) after %v", time.Since(start).Round(time.Millisecond))
		}(time.Now())
		for _, pair := range [][2]*testbed.CNIPod{{pods[0], pods[1]}, {pods[1], pods[0]}} {
			src, dst := pair[0], pair[1]
			for _, a := range []netip.Addr{dst.Addr, dst.Addr6} {
				if !a.IsValid() {
					continue
				}
				if err := src.WaitPing(ctx, a); err != nil {
					t.Fatalf("pod %s -> pod %s (%s): %v", src.Name, dst.Name, a, err)
				}
				if err := src.Ping(ctx, a, 3); err != nil {
					t.Fatalf("pod %s -> pod %s (%s): %v", src.Name, dst.Name, a, err)
				}
			}
		}
	}
	pingPods()

	// While a pod holds its address, another pod asking for it is refused;
	// after DEL its reservation is gone and ADD can take it again.
	p, h := pods[0], hosts[0]
	old, old6 := p.Addr, p.Addr6
	if _, err := h.AddCNIPod(ctx, cniNetwork, "CNI_ARGS=IgnoreUnknown=1;IP="+old.String()); err == nil || !strings.Contains(err.Error(), "not available") {
		t.Fatalf("a second pod asking for %s, held by %s: err %v, want \"not available\"", old, p.Name, err)
	}
	if err := p.Del(ctx); err != nil {
		t.Fatal(err)
	}
	for _, a := range []netip.Addr{old, old6} {
		if !a.IsValid() {
			continue
		}
		if _, err := os.Stat(reservation(p, a)); !os.IsNotExist(err) {
			t.Errorf("after cnitool del the reservation of %s is still there (%v)", a, err)
		}
	}
	if _, err := os.Stat(cnitoolCache(p)); !os.IsNotExist(err) {
		t.Errorf("after cnitool del cnitool's cached result %s is still there (%v)", cnitoolCache(p), err)
	}
	if out, err := p.Exec(ctx, "ip", "link", "show", "eth0"); err == nil {
		t.Errorf("after cnitool del the pod still has eth0:\n%s", out)
	}
	if err := p.Add(ctx, "CNI_ARGS=IgnoreUnknown=1;IP="+old.String()); err != nil {
		t.Fatal(err)
	}
	if p.Addr != old {
		t.Fatalf("ADD asking for the released %s got %s", old, p.Addr)
	}
	checkCNIPod(t, p, envs[0], wantMTU)
	pingPods()
	t.Logf("%s released %s and got it back; %v in all", p.Name, old, time.Since(start).Round(time.Millisecond))
	for _, h := range hosts {
		if strings.Contains(h.Log(), "level=ERROR") {
			t.Errorf("%s logged errors:\n%s", h.Name, h.Log())
		}
	}
}

// checkCNIPod checks a pod against its host's subnet file: one address per
// family of the file, inside the lease, with the lease's first address as
// gateway on cni0 and as the default route; eth0's MTU is FLANNEL_MTU,
// which is wantMTU; host-local reserved each address for the pod.
func checkCNIPod(t *testing.T, p *testbed.CNIPod, env map[string]string, wantMTU int) {
	t.Helper()
	ctx := ctxFor(t, 30*time.Second)
	var res cniResult
	if err := json.Unmarshal([]byte(p.Result), &res); err != nil {
		t.Fatalf("%s: cnitool result %s: %v", p.Name, p.Result, err)
	}
	if res.CNIVersion != "0.3.1" {
		t.Errorf("%s: result version %q, want 0.3.1", p.Name, res.CNIVersion)
	}
	var leases []netip.Prefix // the gateway with the lease length, per family
	for _, key := range []string{"FLANNEL_SUBNET", "FLANNEL_IPV6_SUBNET"} {
		if v := env[key]; v != "" {
			leases = append(leases, netip.MustParsePrefix(v))
		}
	}
	if len(res.IPs) != len(leases) {
		t.Fatalf("%s: %d addresses, want %d (one per subnet of %v): %s", p.Name, len(res.IPs), len(leases), env, p.Result)
	}
	cni0, err := p.Host.Exec(ctx, "ip", "-o", "addr", "show", "dev", "cni0")
	if err != nil {
		t.Fatal(err)
	}
	routes, err := p.Exec(ctx, "sh", "-c", "ip route show default; ip -6 route show default")
	if err != nil {
		t.Fatal(err)
	}
	for i, lease := range leases {
		ip := res.IPs[i]
		if !lease.Masked().Contains(ip.Address.Addr()) || ip.Address.Bits() != lease.Bits() || ip.Address.Addr() == lease.Addr() {
			t.Errorf("%s: address %s, want one of %s other than the gateway %s", p.Name, ip.Address, lease.Masked(), lease.Addr())
		}
		if ip.Gateway != lease.Addr() {
			t.Errorf("%s: gateway %s, want %s", p.Name, ip.Gateway, lease.Addr())
		}
		family := "inet "
		if lease.Addr().Is6() {
			family = "inet6 "
		}
		if !strings.Contains(cni0, family+lease.String()+" ") {
			t.Errorf("%s: cni0 lacks %s:\n%s", p.Host.Name, lease, cni0)
		}
		if !strings.Contains(routes, "default via "+lease.Addr().String()+" dev eth0") {
			t.Errorf("%s: no default route via %s:\n%s", p.Name, lease.Addr(), routes)
		}
		b, err := os.ReadFile(reservation(p, ip.Address.Addr()))
		if err != nil || !strings.HasPrefix(string(b), p.ContainerID()) {
			t.Errorf("%s: host-local reservation of %s: %q %v, want it to name %s", p.Name, ip.Address.Addr(), b, err, p.ContainerID())
		}
	}
	if p.Addr != res.IPs[0].Address.Addr() {
		t.Errorf("%s: testbed Addr %s, result %s", p.Name, p.Addr, res.IPs[0].Address)
	}
	if _, err := os.Stat(cnitoolCache(p)); err != nil {
		t.Errorf("%s: cnitool's cached result is not in the host's /var/lib: %v", p.Name, err)
	}
	mtu, want := linkMTU(t, p.Exec, "eth0"), env["FLANNEL_MTU"]
	if strconv.Itoa(mtu) != want || mtu != wantMTU {
		t.Errorf("%s: eth0 mtu %d, want FLANNEL_MTU %s and %d", p.Name, mtu, want, wantMTU)
	}
}

var mtuRE = regexp.MustCompile(` mtu (\d+) `)

// linkMTU returns the MTU of dev, read with "ip -o link show" through run.
func linkMTU(t *testing.T, run func(ctx context.Context, argv ...string) (string, error), dev string) int {
	t.Helper()
	out, err := run(ctxFor(t, 10*time.Second), "ip", "-o", "link", "show", dev)
	if err != nil {
		t.Fatal(err)
	}
	m := mtuRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no mtu in %q", out)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// reservation is host-local's file for an address of the pod's network.
func reservation(p *testbed.CNIPod, a netip.Addr) string {
	return filepath.Join(p.Host.CNIDir(), "networks", p.Network, a.String())
}

// cnitoolCache is where cnitool caches the pod's ADD result: under the
// host's /var/lib, which the testbed keeps in its work directory.
func cnitoolCache(p *testbed.CNIPod) string {
	return filepath.Join(p.Host.CNIDir(), "var-lib", "cni", "results", p.Network+"-"+p.ContainerID()+"-eth0")
}

// checkNoLeftovers registers, before the testbed exists so that it runs
// after the testbed's Close, a check that no namespace of the testbed and
// no work directory remain, and that nothing was written to the machine's
// /var/lib/cni.
func checkNoLeftovers(t *testing.T, tb **testbed.Testbed, pods *[]*testbed.CNIPod) {
	_, err := os.Stat("/var/lib/cni")
	hadVarLibCNI := err == nil
	t.Cleanup(func() {
		if *tb == nil {
			return
		}
		out, err := exec.Command("ip", "netns", "list").CombinedOutput()
		if err != nil {
			t.Errorf("ip netns list: %v: %s", err, out)
		}
		for line := range strings.Lines(string(out)) {
			if strings.HasPrefix(line, (*tb).Prefix()+"-") {
				t.Errorf("namespace left behind: %s", strings.TrimSpace(line))
			}
		}
		if _, err := os.Stat((*tb).WorkDir()); !os.IsNotExist(err) {
			t.Errorf("work directory %s left behind (%v)", (*tb).WorkDir(), err)
		}
		if _, err := os.Stat("/var/lib/cni"); !hadVarLibCNI && err == nil {
			t.Errorf("the test created /var/lib/cni")
		}
		for _, p := range *pods {
			f := filepath.Join("/var/lib/cni/results", p.Network+"-"+p.ContainerID()+"-eth0")
			if _, err := os.Stat(f); err == nil {
				t.Errorf("cnitool result %s left in the machine's /var/lib", f)
			}
		}
	})
}
