package dataplane

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/flanneld-go/flannel/internal/netnstest"
)

// dumpFixture fills the test's namespace with entries of every kind the
// dumps must keep or leave out: permanent and learnt neighbours of both
// families, FDB entries of two VXLAN devices with IPv4 and IPv6 remotes,
// routes through gateways, nexthop objects, onlink, blackholes, multipath
// and in another table.
func dumpFixture(t *testing.T) (links []int) {
	t.Helper()
	sh(t, "ip link add ul0 type veth peer name ul0p && ip addr add 192.168.50.11/24 dev ul0 && ip addr add fd00:50::11/64 dev ul0 nodad"+
		" && ip link set ul0 up && ip link set ul0p up"+
		" && ip link add vx0 type vxlan id 5 dstport 4789 local 192.168.50.11 dev ul0 nolearning && ip link set vx0 up"+
		" && ip link add vx1 type vxlan id 6 dstport 4790 local 192.168.50.11 dev ul0 nolearning && ip link set vx1 up"+
		" && ip link add vx6 type vxlan id 7 dstport 4791 local fd00:50::11 dev ul0 nolearning && ip link set vx6 up")
	t.Cleanup(func() {
		exec.Command("sh", "-c", "ip link del vx0; ip link del vx1; ip link del vx6; ip link del ul0; ip nexthop del id 80; ip nexthop del id 79"+
			"; ip route del blackhole 10.244.8.0/24; ip -6 route del blackhole fd00:10:244:8::/64").Run()
	})
	batch := []string{
		"neigh replace 10.244.2.0 lladdr 0a:00:00:00:00:02 dev vx0 nud permanent",
		"neigh replace 10.244.3.0 lladdr 0a:00:00:00:00:03 dev vx0 nud reachable",
		"neigh replace 10.244.4.0 lladdr 0a:00:00:00:00:04 dev vx1 nud permanent",
		"neigh replace fd00:10:244:2:: lladdr 0a:00:00:00:06:02 dev vx0 nud permanent",
		"neigh replace fd00:10:244:3:: lladdr 0a:00:00:00:06:03 dev vx6 nud permanent",
		"neigh replace 192.168.50.12 lladdr 0a:00:00:00:50:12 dev ul0 nud permanent",
		"route replace 10.244.2.0/24 via 10.244.2.0 dev vx0 onlink proto 98",
		"route replace 10.244.5.0/24 via 192.168.50.15 dev ul0 proto 98",
		"route replace 10.244.6.0/24 via 192.168.50.16 dev ul0 table 100 proto 98",
		"route replace 10.244.7.0/24 nexthop via 192.168.50.17 dev ul0 nexthop via 192.168.50.18 dev ul0",
		"route replace blackhole 10.244.8.0/24 proto 98 metric 65535",
		"route replace fd00:10:244:2::/64 via fd00:50::12 dev ul0 proto 98",
		"route replace blackhole fd00:10:244:8::/64 proto 98 metric 65535",
		"nexthop replace id 77 via 192.168.50.19 dev ul0 proto 98",
		"nexthop replace id 78 via fd00:50::13 dev ul0",
		"nexthop replace id 79 blackhole",
		"nexthop replace id 80 group 77",
		"route replace 10.244.9.0/24 nhid 77 proto 98",
	}
	f := filepath.Join(t.TempDir(), "batch")
	if err := os.WriteFile(f, []byte(strings.Join(batch, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ip(t, "-batch", f)
	sh(t, "bridge fdb append 0a:00:00:00:00:02 dev vx0 dst 192.168.60.12 self permanent"+
		" && bridge fdb append 00:00:00:00:00:00 dev vx0 dst 192.168.60.97 self permanent"+
		" && bridge fdb append 00:00:00:00:00:00 dev vx0 dst 192.168.60.98 self permanent"+
		" && bridge fdb append 0a:00:00:00:06:02 dev vx6 dst fd00:60::12 self permanent"+
		" && bridge fdb append 0a:00:00:00:00:04 dev vx1 dst 192.168.60.14 self permanent")
	return []int{linkIndex(t, "vx0"), linkIndex(t, "vx1"), linkIndex(t, "vx6"), linkIndex(t, "ul0")}
}

func linkIndex(t testing.TB, name string) int {
	t.Helper()
	l, err := netlink.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	return l.Attrs().Index
}

// The dumps read what the library's did: the neighbour and FDB lists
// against the library's NeighList with the filters NeighList and FDBList
// applied to it before, routes and nexthops against the messages the
// library returns, parsed with its attribute parser.
func TestNetlinkDumpsMatchLibrary(t *testing.T) {
	netnstest.Require(t)
	k := NewNetlink(nil)
	var neighs, fdbs int
	for _, link := range dumpFixture(t) {
		got, err := k.NeighList(link)
		if err != nil {
			t.Fatal(err)
		}
		want := libNeighList(t, link)
		if !slices.Equal(got, want) {
			t.Errorf("NeighList(%d) = %v, library %v", link, got, want)
		}
		fdb, err := k.FDBList(link)
		if err != nil {
			t.Fatal(err)
		}
		wantFDB := libFDBList(t, link)
		if !slices.Equal(fdb, wantFDB) {
			t.Errorf("FDBList(%d) = %v, library %v", link, fdb, wantFDB)
		}
		neighs, fdbs = neighs+len(want), fdbs+len(wantFDB)
	}
	if neighs != 5 || fdbs != 5 {
		t.Errorf("%d neighbours and %d FDB entries read, want 5 and 5", neighs, fdbs)
	}
	var c rtnl
	routes, err := c.routeDump()
	if err != nil {
		t.Fatal(err)
	}
	if want := libMessages(t, unix.RTM_GETROUTE, &nl.RtMsg{}, unix.RTM_NEWROUTE, libParseRoute); !slices.Equal(routes, want) || len(want) < 8 {
		t.Errorf("routeDump:\n%v\nlibrary:\n%v", routes, want)
	}
	nhs, err := c.nexthopDump()
	if err != nil {
		t.Fatal(err)
	}
	if want := libMessages(t, unix.RTM_GETNEXTHOP, nhMsg{}, unix.RTM_NEWNEXTHOP, libParseNexthop); !slices.Equal(nhs, want) || len(want) != 4 {
		t.Errorf("nexthopDump:\n%v\nlibrary:\n%v", nhs, want)
	}
	// A kernel error ends the dump with its errno: a device index above
	// INT_MAX in a nexthop dump's filter is refused.
	req := nl.NewNetlinkRequest(unix.RTM_GETNEXTHOP, unix.NLM_F_DUMP)
	req.AddData(nhMsg{})
	req.AddData(nl.NewRtAttr(unix.NHA_OIF, nl.Uint32Attr(1<<31)))
	if err := dumpEach(req, unix.RTM_NEWNEXTHOP, func([]byte) {}); !errors.Is(err, unix.EINVAL) {
		t.Errorf("nexthop dump of device 2^31: %v, want EINVAL", err)
	}
}

// BenchmarkDumps10k reads the tables of 10,000 vxlan peers (a neighbour,
// an FDB entry and a route each) as a full reconcile does, and through
// the library as before; -benchmem gives the garbage of each.
//
//	go test -run '^$' -bench Dumps10k -benchmem ./backend/dataplane
func BenchmarkDumps10k(b *testing.B) {
	netnstest.Require(b)
	out, err := exec.Command("sh", "-c", "ip link add ul0 type veth peer name ul0p && ip addr add 192.168.50.11/24 dev ul0"+
		" && ip link set ul0 up && ip link set ul0p up"+
		" && ip link add vx0 type vxlan id 5 dstport 4789 local 192.168.50.11 dev ul0 nolearning && ip link set vx0 up").CombinedOutput()
	if err != nil {
		b.Fatalf("%v: %s", err, out)
	}
	b.Cleanup(func() { exec.Command("sh", "-c", "ip link del vx0; ip link del ul0").Run() })
	var batch, fdb strings.Builder
	for i := range 10000 {
		sub, m := fmt.Sprintf("10.%d.%d.0", 128+i/256, i%256), fmt.Sprintf("0a:00:00:00:%02x:%02x", i/256, i%256)
		fmt.Fprintf(&batch, "neigh replace %s lladdr %s dev vx0 nud permanent\n", sub, m)
		fmt.Fprintf(&batch, "route replace %s/24 via %s dev vx0 onlink proto 98\n", sub, sub)
		fmt.Fprintf(&fdb, "fdb append %s dev vx0 dst 10.50.%d.%d self permanent\n", m, i/256, i%256)
	}
	dir := b.TempDir()
	for name, text := range map[string]string{"ip": batch.String(), "bridge": fdb.String()} {
		f := filepath.Join(dir, name)
		if err := os.WriteFile(f, []byte(text), 0o644); err != nil {
			b.Fatal(err)
		}
		if out, err := exec.Command(name, "-batch", f).CombinedOutput(); err != nil {
			b.Fatalf("%s -batch: %v: %s", name, err, out)
		}
	}
	vx := linkIndex(b, "vx0")
	b.Run("ours", func(b *testing.B) {
		var c rtnl
		for b.Loop() {
			ns, err1 := NewNetlink(nil).NeighList(vx)
			fs, err2 := NewNetlink(nil).FDBList(vx)
			rs, err3 := c.routeDump()
			if err := errors.Join(err1, err2, err3); err != nil || len(ns) != 10000 || len(fs) != 10000 || len(rs) < 10000 {
				b.Fatalf("%d %d %d %v", len(ns), len(fs), len(rs), err)
			}
		}
	})
	b.Run("library", func(b *testing.B) {
		for b.Loop() {
			ns, fs := libNeighList(b, vx), libFDBList(b, vx)
			rs := libMessages(b, unix.RTM_GETROUTE, &nl.RtMsg{}, unix.RTM_NEWROUTE, libParseRoute)
			if len(ns) != 10000 || len(fs) != 10000 || len(rs) < 10000 {
				b.Fatalf("%d %d %d", len(ns), len(fs), len(rs))
			}
		}
	})
}

func libNeighList(t testing.TB, link int) []Neigh {
	var out []Neigh
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		ns, err := netlink.NeighList(link, fam)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ns {
			if e.State&netlink.NUD_PERMANENT == 0 || len(e.HardwareAddr) != 6 {
				continue
			}
			if ip, ok := addrFromIP(e.IP); ok {
				out = append(out, Neigh{LinkIndex: e.LinkIndex, IP: ip, MAC: MAC(e.HardwareAddr)})
			}
		}
	}
	return out
}

func libFDBList(t testing.TB, link int) []FDB {
	ns, err := netlink.NeighList(link, unix.AF_BRIDGE)
	if err != nil {
		t.Fatal(err)
	}
	var out []FDB
	for _, e := range ns {
		if e.LinkIndex != link || e.IP == nil || len(e.HardwareAddr) != 6 {
			continue
		}
		if ip, ok := addrFromIP(e.IP); ok {
			out = append(out, FDB{LinkIndex: e.LinkIndex, MAC: MAC(e.HardwareAddr), Dst: ip})
		}
	}
	return out
}

func libMessages[T any](t testing.TB, typ int, hdr nl.NetlinkRequestData, resType uint16, parse func([]byte) (T, bool)) []T {
	req := nl.NewNetlinkRequest(typ, unix.NLM_F_DUMP)
	req.AddData(hdr)
	msgs, err := req.Execute(unix.NETLINK_ROUTE, resType)
	if err != nil {
		t.Fatal(err)
	}
	var out []T
	for _, m := range msgs {
		if v, ok := parse(m); ok {
			out = append(out, v)
		}
	}
	return out
}

func libParseRoute(m []byte) (dumpedRoute, bool) {
	if len(m) < unix.SizeofRtMsg {
		return dumpedRoute{}, false
	}
	msg := nl.DeserializeRtMsg(m)
	if msg.Family != unix.AF_INET && msg.Family != unix.AF_INET6 || msg.Flags&unix.RTM_F_CLONED != 0 ||
		msg.Type != unix.RTN_UNICAST && msg.Type != unix.RTN_BLACKHOLE {
		return dumpedRoute{}, false
	}
	attrs, err := nl.ParseRouteAttr(m[msg.Len():])
	if err != nil {
		return dumpedRoute{}, false
	}
	r := dumpedRoute{Route: Route{OnLink: msg.Flags&unix.RTNH_F_ONLINK != 0, Proto: int(msg.Protocol)}}
	dst, table, metric := netip.IPv4Unspecified(), uint32(msg.Table), 0
	if msg.Family == unix.AF_INET6 {
		dst = netip.IPv6Unspecified()
	}
	native := nl.NativeEndian()
	for _, a := range attrs {
		switch a.Attr.Type {
		case unix.RTA_DST:
			dst, _ = netip.AddrFromSlice(a.Value)
		case unix.RTA_GATEWAY:
			r.Gw, _ = netip.AddrFromSlice(a.Value)
		case unix.RTA_OIF:
			r.LinkIndex = int(native.Uint32(a.Value))
		case unix.RTA_PRIORITY:
			metric = int(native.Uint32(a.Value))
		case unix.RTA_TABLE:
			table = native.Uint32(a.Value)
		case rtaNhID:
			r.nhid = native.Uint32(a.Value)
		case unix.RTA_MULTIPATH:
			return dumpedRoute{}, false
		}
	}
	if table != unix.RT_TABLE_MAIN {
		return dumpedRoute{}, false
	}
	r.Dst = netip.PrefixFrom(dst, int(msg.Dst_len))
	if msg.Type == unix.RTN_BLACKHOLE {
		r.LinkIndex, r.Type, r.Metric = 0, Blackhole, metric
	}
	return r, true
}

func libParseNexthop(m []byte) (nexthop, bool) {
	if len(m) < unix.SizeofNhmsg {
		return nexthop{}, false
	}
	attrs, err := nl.ParseRouteAttr(m[unix.SizeofNhmsg:])
	if err != nil {
		return nexthop{}, false
	}
	nh := nexthop{proto: m[2]}
	onlink := nl.NativeEndian().Uint32(m[4:])&unix.RTNH_F_ONLINK != 0
	var link int
	var addr netip.Addr
	var oif, gw, other bool
	for _, a := range attrs {
		switch a.Attr.Type {
		case unix.NHA_ID:
			nh.id = nl.NativeEndian().Uint32(a.Value)
		case unix.NHA_OIF:
			link, oif = int(nl.NativeEndian().Uint32(a.Value)), true
		case unix.NHA_GATEWAY:
			addr, gw = netip.AddrFromSlice(a.Value)
		case unix.NHA_GROUP, unix.NHA_BLACKHOLE, unix.NHA_ENCAP, nhaFDB:
			other = true
		}
	}
	nh.key = newNHKey(addr, link, onlink)
	nh.gateway = oif && gw && !other
	return nh, nh.id != 0
}
