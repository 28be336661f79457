package e2e_test

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/flanneld-go/flannel/e2e/testbed"
)

// Hostile leases: keys an operator's typo, a buggy or compromised node,
// or a restored backup could write under the subnets prefix. Each is
// rejected by every host (with the log line naming the reason), changes
// no host's kernel state, costs the hosts not involved no packet, and its
// deletion leaves the cluster exactly as before. h1 is the host the bad
// leases aim at; h2 and h3 are not involved.

func TestHostGWHostileLeases(t *testing.T) { hostileLeases(t, "host-gw", hostGW) }

func TestVXLANHostileLeases(t *testing.T) { hostileLeases(t, "vxlan", vxlanBackend) }

// hostileCase is one bad lease: its key (after subnets/), value, and the
// reason the victim (h1) and the other hosts give ("": the key is not a
// lease key at all, skipped when read, with a line naming it).
type hostileCase struct {
	name, key, value string
	victim, others   string
}

// cluster facts the cases are built from.
type hostileEnv struct {
	typ       string
	sn1       netip.Prefix // h1's subnet
	ip1, mac1 string       // h1's PublicIP and VtepMAC (vxlan)
	free      netip.Prefix // a subnet nobody holds
}

func (e hostileEnv) value(pub, mac string) string {
	if e.typ == "host-gw" {
		return `{"PublicIP":"` + pub + `","PublicIPv6":null,"BackendType":"host-gw"}`
	}
	return `{"PublicIP":"` + pub + `","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"` + mac + `"}}`
}

func (e hostileEnv) cases() []hostileCase {
	a1, free := e.sn1.Addr().String(), e.free.Addr().String()
	cs := []hostileCase{
		{"a /25 inside h1's /24", a1 + "-25", e.value("192.168.50.66", "0e:66:00:00:00:01"), "subnet_length", "subnet_length"},
		{"h1's subnet under another key", a1 + "-24&fd00:10:244:9::-64", e.value("192.168.50.67", "0e:66:00:00:00:02"), "overlaps_own", "overlaps_lease"},
		// Decoded, it would be h1's own key: it must not replace h1's lease.
		{"h1's key spelled otherwise", a1 + "-024", e.value("192.168.50.70", "0e:66:00:00:00:04"), "", ""},
	}
	if e.typ == "vxlan" {
		cs = append(cs,
			hostileCase{"h1's VtepMAC", free + "-24", e.value("192.168.50.68", e.mac1), "vtep_mac_own", "vtep_mac_duplicate"},
			hostileCase{"h1's PublicIP with its VtepMAC", free + "-24", e.value(e.ip1, e.mac1), "public_ip_own", "vtep_mac_duplicate"})
	}
	return append(cs, hostileCase{"an IPv6 half ::-0", free + "-24&::-0", e.value("192.168.50.69", "0e:66:00:00:00:03"), "subnet_length", "subnet_length"})
}

func hostileLeases(t *testing.T, typ, backend string) {
	requireTestbed(t)
	ctx := ctxFor(t, 3*time.Minute)
	tb := newCluster(t, ctx, backend, 3, 1, testbed.Options{}, "--healthz-port", "9100", "--healthz-ip", "127.0.0.1")
	hosts := tb.Hosts()
	h1, h2, h3 := hosts[0], hosts[1], hosts[2]
	pingMesh(t, ctx, tb)
	env := hostileEnv{typ: typ, sn1: leaseSubnet(t, ctx, h1), ip1: h1.Addr.String()}
	held := map[netip.Prefix]bool{}
	for _, h := range hosts {
		held[leaseSubnet(t, ctx, h)] = true
	}
	var spare []netip.Prefix // the case's free subnet and the marker's
	for i := 200; len(spare) < 2; i++ {
		if sn := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(i), 0}), 24); !held[sn] {
			spare = append(spare, sn)
		}
	}
	env.free = spare[0]
	if typ == "vxlan" {
		env.mac1 = vtepMAC(t, ctx, tb, env.sn1)
	}
	mk := hostileMarker{typ: typ, sn: spare[1], env: env}
	rejected := map[string]int{}
	for _, c := range env.cases() {
		t.Run(c.name, func(t *testing.T) {
			start := time.Now()
			hostileCaseRun(t, ctx, tb, mk, c, h2, h3)
			rejected[c.victim]++
			t.Logf("%s: %v", c.name, time.Since(start).Round(time.Millisecond))
		})
	}
	_, metrics := get(ctx, h1, "/metrics")
	delete(rejected, "")
	for reason, n := range rejected {
		if want := fmt.Sprintf("flannel_leases_rejected_total{reason=%q} %d", reason, n); !strings.Contains(metrics, want) {
			t.Errorf("h1 /metrics lacks %s", want)
		}
	}
}

// hostileMarker is a valid lease put after the bad one: once every host
// has programmed it, every host has processed the bad lease too (the
// watch is ordered, the reconcile takes the whole set).
type hostileMarker struct {
	typ string
	sn  netip.Prefix
	env hostileEnv
}

const hostileMarkerIP, hostileMarkerMAC = "192.168.50.99", "0e:99:00:00:00:01"

func (m hostileMarker) key() string {
	return "/coreos.com/network/subnets/" + m.sn.Addr().String() + "-24"
}

func (m hostileMarker) programmed(ctx context.Context, h *testbed.Host) bool {
	return routeTo(ctx, h, m.sn) != ""
}

// strip drops the marker's entries from a dump.
func (m hostileMarker) strip(dump string) string {
	var keep []string
	for _, l := range strings.Split(dump, "\n") {
		if !strings.Contains(l, m.sn.Addr().String()) && !strings.Contains(l, hostileMarkerIP) && !strings.Contains(l, hostileMarkerMAC) {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

func hostileCaseRun(t *testing.T, ctx context.Context, tb *testbed.Testbed, mk hostileMarker, c hostileCase, h2, h3 *testbed.Host) {
	hosts := tb.Hosts()
	h1 := hosts[0]
	key := "/coreos.com/network/subnets/" + c.key
	before, logAt := map[string]string{}, map[string]int{}
	for _, h := range hosts {
		before[h.Name], logAt[h.Name] = hostileDump(t, ctx, h, mk.typ), len(h.Log())
	}
	notInvolved := startPingStream(t, ctx, h2.Pods[0], h3.Pods[0].Addr)
	victim := startPingStream(t, ctx, h3.Pods[0], h1.Pods[0].Addr)

	hostilePut(t, ctx, tb, key, c.value)
	hostilePut(t, ctx, tb, mk.key(), mk.env.value(hostileMarkerIP, hostileMarkerMAC))
	for _, h := range hosts {
		want := c.others
		if h == h1 {
			want = c.victim
		}
		line := "reason=" + want + " key=" + key + " "
		if want == "" {
			line = "key=" + key + " "
		}
		waitFor(t, h.Name+" logs the bad key ("+want+")", 5*time.Second, func() bool { return strings.Contains(h.Log()[logAt[h.Name]:], line) })
		waitFor(t, h.Name+" programs the marker", 5*time.Second, func() bool { return mk.programmed(ctx, h) })
		if got := mk.strip(hostileDump(t, ctx, h, mk.typ)); got != before[h.Name] {
			t.Errorf("%s: kernel state changed by the bad lease:\nbefore:\n%s\nwith it:\n%s", h.Name, before[h.Name], got)
		}
	}
	if err := h2.Pods[0].Ping(ctx, h1.Pods[0].Addr, 3); err != nil {
		t.Errorf("h1's pod unreachable while the bad lease is there: %v", err)
	}

	for _, k := range []string{key, mk.key()} {
		if out, err := tb.Etcdctl(ctx, "del", k); err != nil || strings.TrimSpace(out) != "1" {
			t.Fatalf("etcdctl del %s: %q %v", k, out, err)
		}
	}
	for _, h := range hosts {
		waitFor(t, h.Name+" drops the marker", 5*time.Second, func() bool { return !mk.programmed(ctx, h) })
		if got := hostileDump(t, ctx, h, mk.typ); got != before[h.Name] {
			t.Errorf("%s: not back to normal after etcdctl del:\nbefore:\n%s\nafter:\n%s", h.Name, before[h.Name], got)
		}
		logs := h.Log()[logAt[h.Name]:]
		if n := strings.Count(logs, " key="+key+" "); n != 1 && c.victim != "" {
			t.Errorf("%s mentions the bad key %d times, want one rejection line:\n%s", h.Name, n, logs)
		}
		if strings.Contains(logs, "level=ERROR") {
			t.Errorf("%s logged errors:\n%s", h.Name, logs)
		}
	}
	for _, p := range []struct {
		what string
		p    *pingStream
	}{{"h2 -> h3 (not involved)", notInvolved}, {"h3 -> h1 (the victim)", victim}} {
		got, lost := p.p.stop(t)
		t.Logf("%s: %d replies, lost %v", p.what, got, lost)
		if len(lost) > 0 || got < 10 {
			t.Errorf("%s: %d replies, lost icmp_seq %v", p.what, got, lost)
		}
	}
}

func hostilePut(t *testing.T, ctx context.Context, tb *testbed.Testbed, key, value string) {
	t.Helper()
	if out, err := tb.Etcdctl(ctx, "put", key, value); err != nil || strings.TrimSpace(out) != "OK" {
		t.Fatalf("etcdctl put %s: %q %v", key, out, err)
	}
}

// hostileDump is what flanneld programs on a host: routes and, for vxlan,
// the permanent neighbour and FDB entries of flannel.1, sorted.
func hostileDump(t *testing.T, ctx context.Context, h *testbed.Host, typ string) string {
	t.Helper()
	cmd := "ip route show"
	if typ == "vxlan" {
		cmd += "; ip neigh show dev flannel.1 nud permanent; bridge fdb show dev flannel.1"
	}
	out, err := h.Exec(ctx, "sh", "-c", cmd)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(withoutNhid(out)), "\n")
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// pingStream is a testbed.PingStream ended by the test.
type pingStream struct{ *testbed.PingStream }

func startPingStream(t *testing.T, ctx context.Context, src *testbed.Pod, dst netip.Addr) *pingStream {
	t.Helper()
	return startPingStreamEvery(t, ctx, src, dst, "0.02")
}

// startPingStreamEvery starts a stream of pings every interval seconds.
func startPingStreamEvery(t *testing.T, ctx context.Context, src *testbed.Pod, dst netip.Addr, interval string) *pingStream {
	t.Helper()
	s, err := src.StartPingStream(ctx, dst, interval)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Kill)
	return &pingStream{s}
}

// stop ends the stream and returns the replies and the lost sequence
// numbers.
func (p *pingStream) stop(t *testing.T) (replies int, lost []int) {
	t.Helper()
	replies, lost, err := p.Stop()
	if err != nil {
		t.Fatal(err)
	}
	return replies, lost
}
