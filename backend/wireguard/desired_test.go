package wireguard

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/flanneld-go/flannel/subnet"
)

// testKey is a fixed public key for peer n (not a real host's).
func testKey(n byte) wgtypes.Key {
	var k wgtypes.Key
	for i := range k {
		k[i] = n
	}
	return k
}

func data(k wgtypes.Key, port int) []byte {
	return []byte(fmt.Sprintf(`{"PublicKey":%q,"Port":%d}`, k.String(), port))
}

func peer(v4, pub string, k wgtypes.Key, rev int64) subnet.Lease {
	return subnet.Lease{Subnet: netip.MustParsePrefix(v4), CreateRevision: rev, Attrs: subnet.LeaseAttrs{
		PublicIP: netip.MustParseAddr(pub), BackendType: TypeName, BackendData: data(k, 51820)}}
}

func dual(l subnet.Lease, v6, pub6 string, k wgtypes.Key, port int) subnet.Lease {
	l.IPv6Subnet = netip.MustParsePrefix(v6)
	l.Attrs.PublicIPv6 = netip.MustParseAddr(pub6)
	l.Attrs.BackendV6Data = data(k, port)
	return l
}

var own = subnet.Lease{Subnet: netip.MustParsePrefix("10.244.3.0/24"), IPv6Subnet: netip.MustParsePrefix("fd00:10:244:3::/64")}

func defaults(t *testing.T) Options {
	t.Helper()
	o, err := parseOptions([]byte(`{"Type":"wireguard"}`))
	if err != nil {
		t.Fatal(err)
	}
	return o.(Options)
}

// render prints a device's peer configuration like wg showconf would.
func render(cfgs map[string][]wgtypes.PeerConfig) string {
	var lines []string
	for _, dev := range []string{Dev4Name, Dev6Name} {
		for _, c := range cfgs[dev] {
			var allowed []string
			for _, a := range prefixes(c.AllowedIPs) {
				allowed = append(allowed, a.String())
			}
			lines = append(lines, fmt.Sprintf("%s peer %s endpoint %s allowed-ips %s keepalive %s psk %t",
				dev, c.PublicKey.String()[:4], c.Endpoint, strings.Join(allowed, ","), *c.PersistentKeepaliveInterval, c.PresharedKey != nil))
		}
	}
	return strings.Join(lines, "\n")
}

func TestDesiredState(t *testing.T) {
	h := Host{Own: own, Network: netip.MustParsePrefix("10.244.0.0/16"), Dev4: 5}
	if got, want := Desired(h).String(), "ip addr add 10.244.3.0/32 dev #5\nip route 10.244.0.0/16 dev #5 proto 98"; got != want {
		t.Errorf("IPv4:\n%s\nwant\n%s", got, want)
	}
	h.Network6, h.Dev6 = netip.MustParsePrefix("fd00:10:244::/56"), 6
	want := strings.Join([]string{"ip addr add 10.244.3.0/32 dev #5", "ip addr add fd00:10:244:3::/128 dev #6",
		"ip route 10.244.0.0/16 dev #5 proto 98", "ip route fd00:10:244::/56 dev #6 proto 98"}, "\n")
	if got := Desired(h).String(); got != want {
		t.Errorf("dual-stack:\n%s\nwant\n%s", got, want)
	}
}

func TestDesiredPeersGolden(t *testing.T) {
	o := defaults(t)
	h := Host{Own: own, Network: netip.MustParsePrefix("10.244.0.0/16"), Dev4: 5, Self: testKey(9)}
	bad := peer("10.244.7.0/24", "192.168.50.17", testKey(7), 7)
	bad.Attrs.BackendData = []byte(`{"PublicKey":"not-a-key","Port":51820}`)
	noPort := peer("10.244.8.0/24", "192.168.50.18", testKey(8), 8)
	noPort.Attrs.BackendData = []byte(`{"PublicKey":"` + testKey(8).String() + `"}`)
	peers := []subnet.Lease{
		peer("10.244.2.0/24", "192.168.50.12", testKey(2), 20),
		peer("10.244.4.0/24", "192.168.60.14", testKey(4), 4),
		peer("10.244.5.0/24", "192.168.50.15", testKey(2), 5), // older than .2 with the same key
		peer("10.244.6.0/24", "192.168.50.16", testKey(9), 6), // our own key
		bad, noPort,
	}
	got, skips := DesiredPeers(o, h, peers)
	k := func(n byte) string { return testKey(n).String()[:4] }
	want := strings.Join([]string{
		"flannel-wg peer " + k(4) + " endpoint 192.168.60.14:51820 allowed-ips 10.244.4.0/24 keepalive 0s psk false",
		"flannel-wg peer " + k(2) + " endpoint 192.168.50.15:51820 allowed-ips 10.244.5.0/24 keepalive 0s psk false",
		"flannel-wg peer " + k(8) + " endpoint 192.168.50.18:51820 allowed-ips 10.244.8.0/24 keepalive 0s psk false",
	}, "\n")
	if r := render(got); r != want {
		t.Errorf("peers:\n%s\nwant\n%s", r, want)
	}
	reasons := map[string]string{}
	for _, s := range skips {
		reasons[s.Peer.Subnet.String()] = s.Reason
	}
	if len(skips) != 3 || !strings.HasPrefix(reasons["10.244.7.0/24"], "data:") || reasons["10.244.6.0/24"] != "ownkey" ||
		reasons["10.244.2.0/24"] != "dupkey:"+peers[2].Key() {
		t.Errorf("skips: %v", reasons)
	}
}

func TestDesiredPeersOptions(t *testing.T) {
	o, err := parseOptions([]byte(`{"Type":"wireguard","PSK":"` + testKey(1).String() + `","PersistentKeepaliveInterval":25}`))
	if err != nil {
		t.Fatal(err)
	}
	h := Host{Own: own, Network: netip.MustParsePrefix("10.244.0.0/16"), Dev4: 5}
	got, _ := DesiredPeers(o.(Options), h, []subnet.Lease{peer("10.244.2.0/24", "192.168.50.12", testKey(2), 1)})
	c := got[Dev4Name][0]
	if c.PresharedKey == nil || *c.PresharedKey != testKey(1) || *c.PersistentKeepaliveInterval != 25e9 || !c.ReplaceAllowedIPs {
		t.Errorf("config %+v", c)
	}
}

func dualHost(mode Mode) (Options, Host) {
	o := Options{ListenPort: 51820, ListenPortV6: 51821, Mode: mode}
	h := Host{Own: own, Network: netip.MustParsePrefix("10.244.0.0/16"), Network6: netip.MustParsePrefix("fd00:10:244::/56"), Dev4: 5, Dev6: 6}
	if mode != ModeSeparate {
		h.Dev6 = 5
	}
	return o, h
}

func TestDesiredPeersModes(t *testing.T) {
	p := dual(peer("10.244.2.0/24", "192.168.50.12", testKey(2), 1), "fd00:10:244:2::/64", "fd00:50::12", testKey(2), 51821)
	q := peer("10.244.4.0/24", "192.168.50.14", testKey(4), 2) // IPv4 only
	k2, k4 := testKey(2).String()[:4], testKey(4).String()[:4]
	for mode, want := range map[Mode]string{
		ModeSeparate: "flannel-wg peer " + k2 + " endpoint 192.168.50.12:51820 allowed-ips 10.244.2.0/24 keepalive 0s psk false\n" +
			"flannel-wg peer " + k4 + " endpoint 192.168.50.14:51820 allowed-ips 10.244.4.0/24 keepalive 0s psk false\n" +
			"flannel-wg-v6 peer " + k2 + " endpoint [fd00:50::12]:51821 allowed-ips fd00:10:244:2::/64 keepalive 0s psk false",
		ModeIPv4: "flannel-wg peer " + k2 + " endpoint 192.168.50.12:51820 allowed-ips 10.244.2.0/24,fd00:10:244:2::/64 keepalive 0s psk false\n" +
			"flannel-wg peer " + k4 + " endpoint 192.168.50.14:51820 allowed-ips 10.244.4.0/24 keepalive 0s psk false",
		ModeIPv6: "flannel-wg peer " + k2 + " endpoint [fd00:50::12]:51821 allowed-ips 10.244.2.0/24,fd00:10:244:2::/64 keepalive 0s psk false\n" +
			"flannel-wg peer " + k4 + " endpoint 192.168.50.14:51820 allowed-ips 10.244.4.0/24 keepalive 0s psk false",
		// Both underlays private: IPv4, as upstream chooses.
		ModeAuto: "flannel-wg peer " + k2 + " endpoint 192.168.50.12:51820 allowed-ips 10.244.2.0/24,fd00:10:244:2::/64 keepalive 0s psk false\n" +
			"flannel-wg peer " + k4 + " endpoint 192.168.50.14:51820 allowed-ips 10.244.4.0/24 keepalive 0s psk false",
	} {
		o, h := dualHost(mode)
		got, skips := DesiredPeers(o, h, []subnet.Lease{p, q})
		if r := render(got); r != want {
			t.Errorf("%s:\n%s\nwant\n%s", mode, r, want)
		}
		if len(skips) == 0 || skips[0].Peer.Key() != q.Key() {
			t.Errorf("%s: skips %+v", mode, skips)
		}
	}
	// Auto picks IPv6 when the peer's IPv4 address is private and both
	// IPv6 addresses are global.
	o, h := dualHost(ModeAuto)
	h.Ext6 = netip.MustParseAddr("2001:db8::3")
	p.Attrs.PublicIPv6 = netip.MustParseAddr("2001:db8::2")
	got, _ := DesiredPeers(o, h, []subnet.Lease{p})
	if ep := got[Dev4Name][0].Endpoint.String(); ep != "[2001:db8::2]:51821" {
		t.Errorf("auto with global IPv6: endpoint %s", ep)
	}
}

// A peer whose key or endpoint changed: only that peer is reconfigured,
// the others are left alone; a peer that left is removed.
func TestDiffPeers(t *testing.T) {
	o := defaults(t)
	h := Host{Own: own, Network: netip.MustParsePrefix("10.244.0.0/16"), Dev4: 5}
	a, b, c := peer("10.244.2.0/24", "192.168.50.12", testKey(2), 1), peer("10.244.4.0/24", "192.168.50.14", testKey(4), 2),
		peer("10.244.5.0/24", "192.168.50.15", testKey(5), 3)
	device := func(ls ...subnet.Lease) []wgtypes.Peer {
		cfgs, _ := DesiredPeers(o, h, ls)
		var out []wgtypes.Peer
		for _, c := range cfgs[Dev4Name] {
			out = append(out, wgtypes.Peer{PublicKey: c.PublicKey, Endpoint: c.Endpoint, AllowedIPs: c.AllowedIPs})
		}
		return out
	}
	want, _ := DesiredPeers(o, h, []subnet.Lease{a, b, c})
	if cfgs, ch := DiffPeers(want[Dev4Name], device(a, b, c)); len(cfgs) != 0 || ch.Any() {
		t.Errorf("in sync: %d configs, %+v", len(cfgs), ch)
	}
	moved := b
	moved.Attrs.PublicIP = netip.MustParseAddr("192.168.50.24")
	rekeyed := c
	rekeyed.Attrs.BackendData = data(testKey(6), 51820)
	want, _ = DesiredPeers(o, h, []subnet.Lease{moved, rekeyed})
	cfgs, ch := DiffPeers(want[Dev4Name], device(a, b, c))
	if ch != (PeerChanges{Added: 1, Updated: 1, Removed: 2}) || len(cfgs) != 4 {
		t.Fatalf("changes %+v, %d configs", ch, len(cfgs))
	}
	var desc []string
	for _, cfg := range cfgs {
		desc = append(desc, fmt.Sprintf("%s remove=%t %v", cfg.PublicKey.String()[:4], cfg.Remove, cfg.Endpoint))
	}
	k := func(n byte) string { return testKey(n).String()[:4] }
	if got := strings.Join(desc, "; "); got != k(4)+" remove=false 192.168.50.24:51820; "+k(6)+" remove=false 192.168.50.15:51820; "+
		k(2)+" remove=true <nil>; "+k(5)+" remove=true <nil>" {
		t.Errorf("configs: %s", got)
	}
}

func TestParseLeaseData(t *testing.T) {
	k, port, err := ParseLeaseData(data(testKey(3), 51820))
	if err != nil || k != testKey(3) || port != 51820 {
		t.Errorf("%v %d %v", k, port, err)
	}
	for _, bad := range []string{``, `[]`, `{"PublicKey":""}`, `{"PublicKey":"AAAA"}`, `{"PublicKey":"` + wgtypes.Key{}.String() + `"}`, `{"PublicKey":"x","Port":70000}`} {
		if _, _, err := ParseLeaseData([]byte(bad)); err == nil {
			t.Errorf("%s: accepted", bad)
		}
	}
}

// FuzzDesiredPeers: whatever a peer writes as its BackendData, nothing
// panics, and a peer either gets one entry with the key it published, its
// address and its subnet, or is skipped.
func FuzzDesiredPeers(f *testing.F) {
	f.Add(data(testKey(2), 51820))
	f.Add([]byte(`{"PublicKey":"` + testKey(2).String() + `"}`))
	f.Add([]byte(`{"PublicKey":null,"Port":-1}`))
	f.Add([]byte(`{"PublicKey":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}`))
	f.Add([]byte(``))
	o := Options{ListenPort: 51820, ListenPortV6: 51821, Mode: ModeSeparate}
	h := Host{Own: own, Network: netip.MustParsePrefix("10.244.0.0/16"), Dev4: 5}
	f.Fuzz(func(t *testing.T, d []byte) {
		p := peer("10.244.2.0/24", "192.168.50.12", testKey(2), 1)
		p.Attrs.BackendData = d
		got, skips := DesiredPeers(o, h, []subnet.Lease{p})
		key, _, err := ParseLeaseData(d)
		switch cfgs := got[Dev4Name]; {
		case err != nil && len(cfgs) == 0 && len(skips) == 1:
		case err == nil && len(cfgs) == 1 && len(skips) == 0:
			c := cfgs[0]
			if c.PublicKey != key || addrPort(c.Endpoint).Addr() != p.Attrs.PublicIP ||
				len(c.AllowedIPs) != 1 || prefixes(c.AllowedIPs)[0] != p.Subnet {
				t.Fatalf("inconsistent entry for %q: %+v", d, c)
			}
		default:
			t.Fatalf("BackendData %q: %d entries, skips %v (parse error %v)", d, len(cfgs), skips, err)
		}
	})
}

// withKick turns the keepalive on for new peers only, and restores what
// they should keep; peers already on the device, removals and peers with
// a keepalive of their own are left as they are.
func TestWithKick(t *testing.T) {
	zero, keep := time.Duration(0), 25*time.Second
	cfgs := []wgtypes.PeerConfig{
		{PublicKey: testKey(1), PersistentKeepaliveInterval: &zero}, // new
		{PublicKey: testKey(2), PersistentKeepaliveInterval: &zero}, // on the device: an update
		{PublicKey: testKey(3), PersistentKeepaliveInterval: &keep}, // new, with a keepalive
		{PublicKey: testKey(4), Remove: true},
	}
	first, restore := withKick(cfgs, []wgtypes.Peer{{PublicKey: testKey(2)}, {PublicKey: testKey(4)}})
	if *first[0].PersistentKeepaliveInterval != kickInterval || *first[1].PersistentKeepaliveInterval != 0 ||
		*first[2].PersistentKeepaliveInterval != keep || first[3].PersistentKeepaliveInterval != nil || !first[3].Remove {
		t.Errorf("first: %+v", first)
	}
	if len(restore) != 1 || restore[0].PublicKey != testKey(1) || !restore[0].UpdateOnly || *restore[0].PersistentKeepaliveInterval != 0 {
		t.Errorf("restore: %+v", restore)
	}
	if *cfgs[0].PersistentKeepaliveInterval != 0 {
		t.Error("withKick changed its input")
	}
}
