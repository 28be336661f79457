package dataplane

import (
	"fmt"
	"net/netip"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/flanneld-go/flannel/internal/netnstest"
)

// BenchmarkRouteReplace10k programs the routes of 10,000 host-gw peers
// (one gateway each, on one device) through RouteReplace, in the test's
// namespace, with nexthop objects and without: the kernel's cost of a
// daemon's start at scale. It reports the system time per 10,000 routes
// (sys-s/op) beside the wall time (ns/op).
//
//	go test -run '^$' -bench RouteReplace10k -benchtime 3x ./backend/dataplane
func BenchmarkRouteReplace10k(b *testing.B) {
	b.Run("nexthop", func(b *testing.B) { benchRoutes(b, func() *Netlink { return freshNetlink(nil) }) })
	b.Run("plain", func(b *testing.B) {
		benchRoutes(b, func() *Netlink {
			tbl := newNexthopTable()
			tbl.off = true
			return freshNetlink(tbl)
		})
	})
}

func benchRoutes(b *testing.B, newKernel func() *Netlink) {
	netnstest.Require(b)
	var sys time.Duration
	for range b.N {
		b.StopTimer()
		k, rs := benchSetup(b, newKernel)
		var before, after syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &before)
		b.StartTimer()
		for _, r := range rs {
			if err := k.RouteReplace(r); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		syscall.Getrusage(syscall.RUSAGE_SELF, &after)
		sys += time.Duration(after.Stime.Nano() - before.Stime.Nano())
		exec.Command("ip", "link", "del", "ul0").Run()
	}
	b.ReportMetric(sys.Seconds()/float64(b.N), "sys-s/op")
}

// benchSetup makes the underlay device and the routes of 10,000 peers.
func benchSetup(b *testing.B, newKernel func() *Netlink) (*Netlink, []Route) {
	out, err := exec.Command("sh", "-c", "ip link add ul0 type veth peer name ul0p && ip addr add 172.16.0.1/16 dev ul0"+
		" && ip link set ul0 up && ip link set ul0p up").CombinedOutput()
	if err != nil {
		b.Fatalf("%v: %s", err, out)
	}
	k := newKernel()
	ul, err := k.LinkByName("ul0")
	if err != nil {
		b.Fatal(err)
	}
	rs := make([]Route, 0, 10000)
	for i := range 10000 {
		rs = append(rs, Route{Dst: netip.MustParsePrefix(fmt.Sprintf("10.%d.%d.0/24", i/256, i%256)),
			Gw: netip.MustParseAddr(fmt.Sprintf("172.16.%d.%d", i/250, i%250+2)), LinkIndex: ul.Index, Proto: Proto})
	}
	return k, rs
}
