package e2e_test

// Acquisition against broken and duplicated state in etcd: a malformed
// value at the key a host wants, a second host started with another host's
// --public-ip, and a plain restart, each with traffic between the pods of
// the hosts not involved watched for loss.

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/flanneld-go/flannel/e2e/testbed"
	"github.com/flanneld-go/flannel/network"
)

const acqSubnets = "/coreos.com/network/subnets/"

// acqStream is a 20 ms ping stream from one pod to another, run in the
// background until lost stops it with SIGINT (so ping flushes its output).
type acqStream struct {
	pidFile string
	out     chan string
}

func startAcqStream(t *testing.T, ctx context.Context, from, to *testbed.Pod) *acqStream {
	t.Helper()
	s := &acqStream{pidFile: filepath.Join(t.TempDir(), "ping.pid"), out: make(chan string, 1)}
	go func() {
		out, _ := from.Exec(ctx, "sh", "-c", "echo $$ > "+s.pidFile+"; exec ping -i 0.02 -W 1 "+to.Addr.String())
		s.out <- out
	}()
	t.Cleanup(func() { s.interrupt() })
	waitFor(t, "ping stream started", 5*time.Second, func() bool { _, err := os.Stat(s.pidFile); return err == nil })
	return s
}

// interrupt sends SIGINT to the ping (by the pid it wrote), if it runs.
func (s *acqStream) interrupt() {
	b, err := os.ReadFile(s.pidFile)
	if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && perr == nil && pid > 0 {
		syscall.Kill(pid, syscall.SIGINT)
	}
}

var acqICMPSeq = regexp.MustCompile(`icmp_seq=(\d+) `)

// lost stops the stream and returns how many requests below the last one
// answered got no reply (the one in flight when it stopped does not
// count), and how many were answered.
func (s *acqStream) lost(t *testing.T) (lost, answered int) {
	t.Helper()
	s.interrupt()
	var out string
	select {
	case out = <-s.out:
	case <-time.After(10 * time.Second):
		t.Fatal("ping stream did not stop on SIGINT")
	}
	if !strings.Contains(out, "packets transmitted") {
		t.Fatalf("ping stream ended without its summary:\n%s", out)
	}
	seen, last := map[int]bool{}, 0
	for _, m := range acqICMPSeq.FindAllStringSubmatch(out, -1) {
		n, _ := strconv.Atoi(m[1])
		seen[n], last = true, max(last, n)
	}
	for i := 1; i <= last; i++ {
		if !seen[i] {
			lost++
		}
	}
	return lost, len(seen)
}

// acqLeaseKey is the etcd key of a host's IPv4-only lease with subnet sn.
func acqLeaseKey(sn fmt.Stringer) string {
	return acqSubnets + strings.Replace(sn.String(), "/", "-", 1)
}

// acqLeaseJSON reads the value of key as a map, and its mod revision.
func acqLeaseJSON(t *testing.T, ctx context.Context, tb *testbed.Testbed, key string) (map[string]any, int64) {
	t.Helper()
	out, err := tb.Etcdctl(ctx, "get", key, "-w", "json")
	if err != nil {
		t.Fatal(err)
	}
	var resp struct {
		Kvs []struct {
			Value       []byte `json:"value"`
			ModRevision int64  `json:"mod_revision"`
		} `json:"kvs"`
	}
	if err := json.Unmarshal([]byte(out), &resp); err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("etcdctl get %s: %v\n%s", key, err, out)
	}
	var v map[string]any
	if err := json.Unmarshal(resp.Kvs[0].Value, &v); err != nil {
		t.Fatalf("%s holds %q: %v", key, resp.Kvs[0].Value, err)
	}
	return v, resp.Kvs[0].ModRevision
}

// acqHostID derives a host's default identity the way the daemon
// does, from the machine ID and the MAC address of its eth0.
func acqHostID(t *testing.T, ctx context.Context, h *testbed.Host) string {
	t.Helper()
	out, err := h.Exec(ctx, "cat", "/sys/class/net/eth0/address")
	if err != nil {
		t.Fatal(err)
	}
	mac, err := net.ParseMAC(strings.TrimSpace(out))
	if err != nil {
		t.Fatal(err)
	}
	id, _, err := network.HostIdentity("", network.DefaultMachineIDFile, "eth0", mac)
	if err != nil || id == "" {
		t.Fatalf("no identity for %s: %q %v", h.Name, id, err)
	}
	return id
}

func acqReadyCount(h *testbed.Host) int { return strings.Count(h.Log(), `msg="lease ready"`) }

// TestHostileAcquire, for host-gw and vxlan (acquisition is the same for
// every backend; these two keep their data plane in the kernel, so a
// stream between other hosts' pods shows any disturbance): on 3 hosts, with
// pods on h2 and h3 pinging each other throughout,
//
//	(c) h1 restarted gets its lease back, with its identity in it;
//	(a) h1, stopped, finds its old key holding a malformed value: it
//	    leases another subnet at once, logs the key once with the etcdctl
//	    del that removes it, and after that del the cluster is whole;
//	(b) h4 started with h1's --public-ip stops with the error naming both
//	    identities, the PublicIP and the subnet, and h1's lease and traffic
//	    are untouched.
func TestHostileAcquire(t *testing.T) {
	requireTestbed(t)
	for _, be := range faultBackends {
		t.Run(be.name, func(t *testing.T) {
			t.Parallel()
			hostileAcquire(t, be.conf)
		})
	}
}

// acqCluster is the testbed of TestHostileAcquire: h1 is the host under
// test, h2 and h3 the bystanders with a pod each.
type acqCluster struct {
	tb         *testbed.Testbed
	h1, h2, h3 *testbed.Host
	id1        string // h1's identity
}

func hostileAcquire(t *testing.T, backend string) {
	ctx := ctxFor(t, 2*time.Minute)
	tb := newCluster(t, ctx, backend, 3, 0, testbed.Options{})
	c := &acqCluster{tb: tb, h1: tb.Hosts()[0], h2: tb.Hosts()[1], h3: tb.Hosts()[2]}
	for _, h := range []*testbed.Host{c.h2, c.h3} {
		if err := h.AddPods(ctx, 1); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.h2.Pods[0].WaitPing(ctx, c.h3.Pods[0].Addr); err != nil {
		t.Fatal(err)
	}
	bystanders := startAcqStream(t, ctx, c.h2.Pods[0], c.h3.Pods[0])
	c.id1 = acqHostID(t, ctx, c.h1)
	sn1 := c.restartKeepsLease(t, ctx)
	c.malformedAtHint(t, ctx, sn1)
	toH1 := startAcqStream(t, ctx, c.h3.Pods[0], c.h1.Pods[0])
	c.impostorStops(t, ctx)
	for name, s := range map[string]*acqStream{"h3 -> h1 during (b)": toH1, "h2 -> h3 throughout": bystanders} {
		lost, answered := s.lost(t)
		t.Logf("%s: %d answered, %d lost", name, answered, lost)
		if lost > 0 || answered == 0 {
			t.Errorf("%s: %d pings lost of %d", name, lost, lost+answered)
		}
	}
	for _, h := range []*testbed.Host{c.h1, c.h2, c.h3} {
		if strings.Contains(h.Log(), "level=ERROR") {
			t.Errorf("%s logged errors:\n%s", h.Name, h.Log())
		}
	}
}

// restartKeepsLease is (c): h1 restarted keeps its subnet and its HostID.
// It returns the subnet.
func (c *acqCluster) restartKeepsLease(t *testing.T, ctx context.Context) netip.Prefix {
	h1 := c.h1
	sn1 := leaseSubnet(t, ctx, h1)
	key1 := acqLeaseKey(sn1)
	if v, _ := acqLeaseJSON(t, ctx, c.tb, key1); v["HostID"] != c.id1 {
		t.Fatalf("h1's lease %v carries HostID %v, want %s", v, v["HostID"], c.id1)
	}
	if err := h1.StopDaemon(); err != nil {
		t.Fatal(err)
	}
	if err := h1.StartDaemon(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "h1 restarted", 20*time.Second, func() bool { return acqReadyCount(h1) == 2 })
	if got := leaseSubnet(t, ctx, h1); got != sn1 {
		t.Fatalf("restart changed h1's subnet %s -> %s", sn1, got)
	}
	if v, _ := acqLeaseJSON(t, ctx, c.tb, key1); v["HostID"] != c.id1 || !strings.Contains(h1.Log(), `msg="reusing our existing lease"`) {
		t.Fatalf("after the restart h1's lease is %v", v)
	}
	return sn1
}

// malformedAtHint is (a): a malformed value at the key h1 wants (the one
// its subnet.env names), put while h1 is stopped. h1 ends with a new lease
// and a pod in it.
func (c *acqCluster) malformedAtHint(t *testing.T, ctx context.Context, sn1 netip.Prefix) {
	h1, key1 := c.h1, acqLeaseKey(sn1)
	if err := h1.StopDaemon(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.tb.Etcdctl(ctx, "put", key1, "not a lease"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := h1.StartDaemon(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "h1 leases another subnet", 20*time.Second, func() bool { return acqReadyCount(h1) == 3 })
	t.Logf("h1 got a new lease %v after its start, its old key holding a malformed value", time.Since(start).Round(time.Millisecond))
	if sn := leaseSubnet(t, ctx, h1); sn == sn1 {
		t.Fatalf("h1 got %s, the subnet the malformed key holds", sn)
	}
	warn := `msg="malformed key in etcd: not a lease; delete it" activity="acquiring a lease" key=` + key1 + ` `
	if n := strings.Count(h1.Log(), warn); n != 1 {
		t.Errorf("h1 logged the malformed key %d times, want once:\n%s", n, h1.Log())
	}
	if !strings.Contains(h1.Log(), `holds=`+sn1.String()+` fix="etcdctl del `+key1+`"`) {
		t.Errorf("h1's warning lacks the subnet or the fix:\n%s", h1.Log())
	}
	if strings.Contains(h1.Log(), "lost the race") || strings.Contains(h1.Log(), "etcd unavailable") {
		t.Errorf("h1 reported races or an outage:\n%s", h1.Log())
	}
	for _, h := range []*testbed.Host{c.h2, c.h3} {
		if n := strings.Count(h.Log(), `activity="watching leases" key=`+key1+` `); n != 1 {
			t.Errorf("%s logged the malformed key %d times, want once:\n%s", h.Name, n, h.Log())
		}
	}
	// The operator runs the fix: the cluster is whole, and etcd holds
	// exactly the three leases.
	if out, err := c.tb.Etcdctl(ctx, "del", key1); err != nil || strings.TrimSpace(out) != "1" {
		t.Fatalf("etcdctl del %s: %q %v", key1, out, err)
	}
	if err := h1.AddPods(ctx, 1); err != nil {
		t.Fatal(err)
	}
	pingMesh(t, ctx, c.tb)
	out, err := c.tb.Etcdctl(ctx, "get", "--prefix", "--keys-only", acqSubnets)
	if err != nil {
		t.Fatal(err)
	}
	if keys := strings.Fields(out); len(keys) != 3 {
		t.Errorf("after the del, etcd holds %v, want the 3 hosts' leases", keys)
	}
}

// impostorStops is (b): h4 started with h1's --public-ip exits with the
// conflict error; h1's lease is untouched.
func (c *acqCluster) impostorStops(t *testing.T, ctx context.Context) {
	h1 := c.h1
	sn := leaseSubnet(t, ctx, h1)
	key := acqLeaseKey(sn)
	before, rev := acqLeaseJSON(t, ctx, c.tb, key)
	h4, err := c.tb.AddHost(ctx, testbed.HostOptions{})
	if err != nil {
		t.Fatal(err)
	}
	id4 := acqHostID(t, ctx, h4)
	if err := h4.StartDaemon(ctx, "--public-ip", h1.Addr.String()); err != nil {
		t.Fatal(err)
	}
	code, err := h4.WaitDaemonExit(ctx)
	if err != nil || code != 1 {
		t.Fatalf("h4 exited with %d %v, want 1:\n%s", code, err, h4.Log())
	}
	for _, want := range []string{"flanneld: another host holds a lease for this host's public IP: lease " + key,
		"(subnet " + sn.String() + ") for public IP " + h1.Addr.String(), "belongs to host " + c.id1 + ", this host is " + id4,
		"free the lease and start again: etcdctl del " + key, "(this host's identity " + id4 + " is derived from "} {
		if !strings.Contains(h4.Log(), want) {
			t.Errorf("h4's error lacks %q:\n%s", want, h4.Log())
		}
	}
	after, rev2 := acqLeaseJSON(t, ctx, c.tb, key)
	if rev2 != rev || after["HostID"] != c.id1 || fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("h1's lease changed: %v (rev %d) -> %v (rev %d)", before, rev, after, rev2)
	}
	if err := c.h3.Pods[0].Ping(ctx, h1.Pods[0].Addr, 3); err != nil {
		t.Error(err)
	}
}
