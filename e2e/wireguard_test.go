package e2e_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flanneld-go/flannel/e2e/testbed"
)

const wgBackend = `{"Type":"wireguard"}`

// wgPeer is one peer of a device, as its UAPI reports it.
type wgPeer struct {
	endpoint string
	allowed  []string
}

// wgPeers reads the peers of a host's embedded device dev, by public key
// (hex, as UAPI writes it).
func wgPeers(ctx context.Context, h *testbed.Host, dev string) (map[string]wgPeer, error) {
	out, err := h.UAPI(ctx, dev, "get=1\n\n")
	if err != nil {
		return nil, err
	}
	peers := map[string]wgPeer{}
	cur := ""
	for line := range strings.Lines(out) {
		k, v, _ := strings.Cut(strings.TrimSpace(line), "=")
		switch k {
		case "public_key":
			cur = v
			peers[cur] = wgPeer{}
		case "endpoint":
			p := peers[cur]
			p.endpoint = v
			peers[cur] = p
		case "allowed_ip":
			p := peers[cur]
			p.allowed = append(p.allowed, v)
			peers[cur] = p
		}
	}
	return peers, nil
}

// leaseData reads a lease's BackendData (or BackendV6Data) from etcd.
func leaseData(t *testing.T, ctx context.Context, tb *testbed.Testbed, key string, v6 bool) (pubHex string, port int) {
	t.Helper()
	out, err := tb.Etcdctl(ctx, "get", "--print-value-only", "/coreos.com/network/subnets/"+key)
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		BackendData, BackendV6Data struct {
			PublicKey string
			Port      int
		}
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("lease value %q: %v", out, err)
	}
	d := v.BackendData
	if v6 {
		d = v.BackendV6Data
	}
	raw, err := base64.StdEncoding.DecodeString(d.PublicKey)
	if err != nil || len(raw) != 32 {
		t.Fatalf("lease %s: PublicKey %q", key, d.PublicKey)
	}
	return hex.EncodeToString(raw), d.Port
}

func leaseKey(sn netip.Prefix) string { return strings.ReplaceAll(sn.String(), "/", "-") }

// wgDropped: the host's device has no peer for the departed subnet.
func wgDropped(ctx context.Context, h, _ *testbed.Host, sn netip.Prefix) bool {
	peers, err := wgPeers(ctx, h, "flannel-wg")
	if err != nil {
		return false
	}
	for _, p := range peers {
		for _, a := range p.allowed {
			if a == sn.String() {
				return false
			}
		}
	}
	return true
}

// TestWireGuardMesh runs the common suite on the embedded device (this
// kernel has no WireGuard module): one route for the Network through
// flannel-wg, the data plane in the daemon.
func TestWireGuardMesh(t *testing.T) {
	meshSuiteWith(t, wgBackend, meshChecks{
		needsDaemon: true,
		handRoute:   netip.MustParsePrefix("10.244.0.0/16"),
		handWant:    "dev flannel-wg proto 98",
		dropped:     wgDropped,
	})
}

// TestWireGuardPeers: each host's device holds the other's key, endpoint
// and subnet from its lease; a peer removed by hand comes back; the key
// file is private, survives a restart and rotates when deleted; no log
// holds the private key; a key file others can read is refused.
func TestWireGuardPeers(t *testing.T) {
	requireTestbed(t)
	ctx := ctxFor(t, 2*time.Minute)
	tb := newCluster(t, ctx, wgBackend, 2, 1, testbed.Options{}, "--reconcile-period", "1s")
	h1, h2 := tb.Hosts()[0], tb.Hosts()[1]
	if err := h1.Pods[0].WaitPing(ctx, h2.Pods[0].Addr); err != nil {
		t.Fatal(err)
	}
	sn2 := leaseSubnet(t, ctx, h2)
	key2, port2 := leaseData(t, ctx, tb, leaseKey(sn2), false)
	if port2 != 51820 {
		t.Errorf("lease port %d", port2)
	}
	peers, err := wgPeers(ctx, h1, "flannel-wg")
	if err != nil {
		t.Fatal(err)
	}
	if p := peers[key2]; len(peers) != 1 || p.endpoint != h2.Addr.String()+":51820" || strings.Join(p.allowed, ",") != sn2.String() {
		t.Fatalf("h1's peers: %+v", peers)
	}
	// wg set flannel-wg peer $KEY remove, through the UAPI: back within a
	// reconcile period, and traffic flows again.
	if _, err := h1.UAPI(ctx, "flannel-wg", "set=1\npublic_key="+key2+"\nremove=true\n\n"); err != nil {
		t.Fatal(err)
	}
	took := waitFor(t, "hand-removed peer restored", 5*time.Second, func() bool {
		peers, _ := wgPeers(ctx, h1, "flannel-wg")
		return peers[key2].endpoint == h2.Addr.String()+":51820"
	})
	t.Logf("hand-removed peer restored after %v", took.Round(time.Millisecond))
	if err := h1.Pods[0].WaitPing(ctx, h2.Pods[0].Addr); err != nil {
		t.Fatal(err)
	}
	// flanneld leases shows each host's public key, never a private one.
	table, err := h1.Exec(ctx, tb.FlanneldBin(), "leases", "--etcd-endpoints", tb.EtcdEndpoint())
	if err != nil {
		t.Fatal(err)
	}
	raw2, _ := hex.DecodeString(key2)
	if !strings.Contains(table, "PUBLIC KEY") || !strings.Contains(table, base64.StdEncoding.EncodeToString(raw2)) {
		t.Errorf("flanneld leases lacks h2's public key:\n%s", table)
	}
	for _, h := range tb.Hosts() {
		priv, _ := os.ReadFile(h.WireGuardKeyFile())
		if strings.Contains(table, strings.TrimSpace(string(priv))) {
			t.Errorf("flanneld leases shows %s's private key", h.Name)
		}
	}
	// The key file: 0600, and no log line holds it.
	for _, h := range tb.Hosts() {
		fi, err := os.Stat(h.WireGuardKeyFile())
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: key file %v %v", h.Name, fi, err)
		}
		priv, _ := os.ReadFile(h.WireGuardKeyFile())
		raw, _ := base64.StdEncoding.DecodeString(strings.TrimSpace(string(priv)))
		if len(raw) != 32 {
			t.Fatalf("%s: key file does not hold a key", h.Name)
		}
		if l := h.Log(); strings.Contains(l, strings.TrimSpace(string(priv))) || strings.Contains(l, hex.EncodeToString(raw)) {
			t.Errorf("%s: the private key is in the log", h.Name)
		}
	}
	// A restart keeps the key (the lease's public key is the same).
	if err := h2.StopDaemon(); err != nil {
		t.Fatal(err)
	}
	if err := h2.StartDaemon(ctx, "--reconcile-period", "1s"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "restarted daemon ready", 20*time.Second, func() bool { return strings.Count(h2.Log(), `msg="lease ready"`) == 2 })
	if got := leaseSubnet(t, ctx, h2); got != sn2 {
		t.Fatalf("restart changed the subnet from %s to %s", sn2, got)
	}
	if k, _ := leaseData(t, ctx, tb, leaseKey(sn2), false); k != key2 {
		t.Errorf("restart changed the public key")
	}
	if err := h1.Pods[0].WaitPing(ctx, h2.Pods[0].Addr); err != nil {
		t.Fatal(err)
	}
	// Rotation: delete the key file and restart. The lease publishes the
	// new key; h1 replaces the peer (the old key goes) and traffic flows.
	if err := h2.StopDaemon(); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(h2.WireGuardKeyFile()); err != nil {
		t.Fatal(err)
	}
	if err := h2.StartDaemon(ctx, "--reconcile-period", "1s"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "rotated daemon ready", 20*time.Second, func() bool { return strings.Count(h2.Log(), `msg="lease ready"`) == 3 })
	rotated, _ := leaseData(t, ctx, tb, leaseKey(sn2), false)
	if rotated == key2 {
		t.Fatal("the key did not change after the key file was deleted")
	}
	waitFor(t, "h1 has h2's new key only", 5*time.Second, func() bool {
		peers, _ := wgPeers(ctx, h1, "flannel-wg")
		_, old := peers[key2]
		return len(peers) == 1 && peers[rotated].endpoint == h2.Addr.String()+":51820" && !old
	})
	if err := h1.Pods[0].WaitPing(ctx, h2.Pods[0].Addr); err != nil {
		t.Fatal(err)
	}
	// A key file others can read is refused, with the fix in the message.
	if err := h2.StopDaemon(); err != nil {
		t.Fatal(err)
	}
	os.Chmod(h2.WireGuardKeyFile(), 0o644)
	if err := h2.StartDaemon(ctx); err != nil {
		t.Fatal(err)
	}
	if code, err := h2.WaitDaemonExit(ctx); err != nil || code == 0 {
		t.Fatalf("daemon with a 0644 key file: exit %d %v", code, err)
	}
	if !strings.Contains(h2.Log(), "chmod 600 "+h2.WireGuardKeyFile()) {
		t.Errorf("no fix named:\n%s", lastLines(h2.Log(), 5))
	}
}

// TestWireGuardEncrypted: while pods exchange pings padded with a known
// pattern and a TCP stream, every frame between the hosts on the switch
// is a WireGuard message on port 51820 and the pattern never appears;
// datagrams injected from a non-peer (and plaintext from a peer's address)
// reach no pod; 100 MiB arrive intact.
func TestWireGuardEncrypted(t *testing.T) {
	requireTestbed(t)
	ctx := ctxFor(t, 3*time.Minute)
	tb := newCluster(t, ctx, wgBackend, 2, 1, testbed.Options{})
	h1, h2 := tb.Hosts()[0], tb.Hosts()[1]
	p1, p2 := h1.Pods[0], h2.Pods[0]
	if err := p1.WaitPing(ctx, p2.Addr); err != nil {
		t.Fatal(err)
	}
	pcap := filepath.Join(t.TempDir(), "switch.pcap")
	capture, err := tb.CapturePcap(ctx, pcap, fmt.Sprintf("ip and host %s and host %s", h1.Addr, h2.Addr))
	if err != nil {
		t.Fatal(err)
	}
	const pattern = "f1a9c0de5eedf00d"
	if out, err := p1.Exec(ctx, "ping", "-c", "10", "-i", "0.1", "-s", "1200", "-p", pattern, p2.Addr.String()); err != nil {
		t.Fatalf("patterned ping: %v\n%s", err, out)
	}
	transfer(t, ctx, p1, p2, 20<<20)
	frames, err := capture.Stop()
	if err != nil {
		t.Fatal(err)
	}
	pat, _ := hex.DecodeString(pattern)
	data := 0
	for i, f := range frames {
		if bytes.Contains(f, pat) {
			t.Fatalf("frame %d holds the plaintext pattern", i)
		}
		typ, err := wgFrame(f)
		if err != nil {
			t.Fatalf("frame %d between the hosts is not WireGuard on 51820: %v (% x)", i, err, f[:min(len(f), 64)])
		}
		if typ == 4 {
			data++
		}
	}
	if data < 20 {
		t.Fatalf("only %d WireGuard data messages among %d frames", data, len(frames))
	}
	t.Logf("%d frames between the hosts, all WireGuard (%d data messages), no plaintext", len(frames), data)

	// Injected datagrams: a plain IP packet for p1 from outside, the same
	// from h2's address and port 51820 (raw socket), and forged WireGuard
	// messages. None reaches p1 (its UDP NoPorts counter stays).
	out, err := tb.AddOutside(ctx)
	if err != nil {
		t.Fatal(err)
	}
	bin := probeBin(t)
	wire := netip.AddrPortFrom(h1.Addr, 51820).String()
	before := podUDPCounter(t, ctx, p1, "NoPorts")
	plain := udp4Packet(out.Addr, p1.Addr, 9, "injected")
	forged := hex.EncodeToString(append([]byte{4, 0, 0, 0, 1, 0, 0, 0}, make([]byte, 48)...))
	if o, err := out.Exec(ctx, bin, "udp", wire, plain, plain, forged, forged); err != nil {
		t.Fatalf("%v: %s", err, o)
	}
	from := netip.AddrPortFrom(h2.Addr, 51820).String()
	if o, err := h2.Exec(ctx, bin, "rawudp", from, wire, udp4Packet(p2.Addr, p1.Addr, 9, "plaintext from a peer"), forged); err != nil {
		t.Fatalf("%v: %s", err, o)
	}
	// A genuine datagram through the tunnel afterwards does arrive: the
	// counter works, and the injected ones were dropped before it.
	if o, err := p2.Exec(ctx, bin, "udp", netip.AddrPortFrom(p1.Addr, 9).String(), hex.EncodeToString([]byte("genuine"))); err != nil {
		t.Fatalf("%v: %s", err, o)
	}
	waitFor(t, "the genuine datagram reaches p1", 10*time.Second, func() bool { return podUDPCounter(t, ctx, p1, "NoPorts") > before })
	if got := podUDPCounter(t, ctx, p1, "NoPorts"); got != before+1 {
		t.Errorf("p1 received %d datagrams for port 9, want only the genuine one", got-before)
	}

	transfer(t, ctx, p1, p2, 100<<20)
}

// wgFrame checks that an Ethernet frame is IPv4/UDP between ports 51820
// carrying a WireGuard message, and returns its type.
func wgFrame(f []byte) (byte, error) {
	if len(f) < 14+20+8+4 || binary.BigEndian.Uint16(f[12:]) != 0x0800 {
		return 0, fmt.Errorf("not IPv4")
	}
	ip := f[14:]
	ihl := int(ip[0]&0xf) * 4
	if ip[9] != 17 || len(ip) < ihl+8+4 {
		return 0, fmt.Errorf("protocol %d, not UDP", ip[9])
	}
	if binary.BigEndian.Uint16(ip[6:])&0x3fff != 0 {
		return 0, fmt.Errorf("a fragment")
	}
	udp := ip[ihl:]
	if sp, dp := binary.BigEndian.Uint16(udp), binary.BigEndian.Uint16(udp[2:]); sp != 51820 || dp != 51820 {
		return 0, fmt.Errorf("ports %d -> %d", sp, dp)
	}
	msg := udp[8:]
	if msg[0] < 1 || msg[0] > 4 || msg[1] != 0 || msg[2] != 0 || msg[3] != 0 {
		return 0, fmt.Errorf("not a WireGuard message header: % x", msg[:4])
	}
	return msg[0], nil
}

// transfer sends size bytes over TCP from src to dst and checks that they
// arrive with the same SHA-256.
func transfer(t *testing.T, ctx context.Context, src, dst *testbed.Pod, size int) {
	t.Helper()
	bin := probeBin(t)
	addr := netip.AddrPortFrom(dst.Addr, 9000).String()
	type result struct {
		out string
		err error
	}
	recvd := make(chan result, 1)
	go func() {
		o, err := dst.Exec(ctx, bin, "recv", addr)
		recvd <- result{o, err}
	}()
	start := time.Now()
	var sent string
	var err error
	waitFor(t, "the receiver listens", 10*time.Second, func() bool {
		sent, err = src.Exec(ctx, bin, "send", addr, strconv.Itoa(size))
		return err == nil || !strings.Contains(err.Error()+sent, "refused")
	})
	if err != nil {
		t.Fatalf("send: %v %s", err, sent)
	}
	r := <-recvd
	if r.err != nil {
		t.Fatalf("recv: %v", r.err)
	}
	got := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(r.out), "listening"))
	if want := strings.TrimSpace(sent); got != want || !strings.HasPrefix(want, strconv.Itoa(size)+" ") {
		t.Fatalf("received %q, sent %q", got, want)
	}
	t.Logf("%d MiB intact in %v", size>>20, time.Since(start).Round(time.Millisecond))
}

// TestWireGuardDualStack: in every Mode, pods reach each other over both
// families, through the devices and endpoints the Mode says, with
// full-size packets.
func TestWireGuardDualStack(t *testing.T) {
	for _, tc := range []struct {
		mode, dev6, endpoint6 string // endpoint6: the endpoint of h2 for IPv6 pod traffic
	}{
		{"separate", "flannel-wg-v6", "[%s]:51821"},
		{"auto", "flannel-wg", "%s:51820"},
		{"ipv4", "flannel-wg", "%s:51820"},
		{"ipv6", "flannel-wg", "[%s]:51820"},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			requireTestbed(t)
			ctx := ctxFor(t, 2*time.Minute)
			tb := testbed.NewT(t, testbed.Options{Hosts: 2, PodsPerHost: 1, IPv6: true})
			if err := tb.PutNetConfig(ctx, dualNetconf(fmt.Sprintf(`{"Type":"wireguard","Mode":%q}`, tc.mode))); err != nil {
				t.Fatal(err)
			}
			if err := tb.StartDaemons(ctx, "--reconcile-period", "1s"); err != nil {
				t.Fatal(err)
			}
			pingMesh(t, ctx, tb)
			pingMesh6(t, tb)
			h1, h2 := tb.Hosts()[0], tb.Hosts()[1]
			env2, _ := h2.WaitSubnetFile(ctx)
			sn6 := netip.MustParsePrefix(env2["FLANNEL_IPV6_SUBNET"]).Masked()
			addr := h2.Addr.String()
			if strings.HasPrefix(tc.endpoint6, "[") {
				addr = h2.Addr6.String()
			}
			want := fmt.Sprintf(tc.endpoint6, addr)
			peers, err := wgPeers(ctx, h1, tc.dev6)
			if err != nil {
				t.Fatal(err)
			}
			found := false
			for _, p := range peers {
				found = found || p.endpoint == want && strings.Contains(strings.Join(p.allowed, ","), sn6.String())
			}
			if !found {
				t.Errorf("%s on h1 has no peer at %s for %s: %+v", tc.dev6, want, sn6, peers)
			}
			if r6, _ := h1.Exec(ctx, "ip", "-6", "route", "show", "proto", "98"); !strings.Contains(r6, "fd00:10:244::/56 dev "+tc.dev6) {
				t.Errorf("IPv6 routes on h1:\n%s", r6)
			}
			env1, _ := h1.WaitSubnetFile(ctx)
			var m int
			fmt.Sscan(env1["FLANNEL_MTU"], &m)
			p1, p2 := h1.Pods[0], h2.Pods[0]
			if out, err := p1.Exec(ctx, "ping", "-c", "2", "-W", "2", "-M", "do", "-s", fmt.Sprint(m-28), p2.Addr.String()); err != nil {
				t.Errorf("full-size IPv4 ping: %v\n%s", err, out)
			}
			if out, err := p1.Exec(ctx, "ping", "-6", "-c", "2", "-W", "2", "-M", "do", "-s", fmt.Sprint(m-48), p2.Addr6.String()); err != nil {
				t.Errorf("full-size IPv6 ping: %v\n%s", err, out)
			}
		})
	}
}
