package testbed

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"
)

// HostOptions configure a host added with AddHost.
type HostOptions struct {
	// Segment is the L2 segment of the host: 1 (the default, switch
	// 192.168.50.0/24) or 2 (192.168.60.0/24 behind the router; needs
	// AddSegment first).
	Segment int
}

// Host is a simulated container host: namespace <prefix>-h<i> with eth0 on
// the switch of its segment and, after AddPods, bridge cni0 with the pods.
type Host struct {
	Name    string     // "h1"
	NS      string     // "flt3a9c1-h1"
	Index   int        // i in h<i>, from 1
	Segment int        // 1 or 2
	Addr    netip.Addr // eth0: 192.168.50.(10+i) or 192.168.60.(10+i)
	Addr6   netip.Addr // eth0: fd00:50::(10+i) or fd00:60::(10+i); invalid without IPv6
	// Pods are the pods added by AddPods, in order (index j-1 is pod
	// h<i>p<j>). AddPods appends to it: do not read it concurrently.
	Pods []*Pod

	tb     *Testbed
	dir    string
	daemon *proc // guarded by tb.mu
}

// AddHost adds the next host (index len(Hosts())+1) on segment o.Segment:
// namespace <prefix>-h<i>, eth0 with the host address, lo up, a default
// route via the segment's gateway (the switch on segment 1, the router on
// segment 2) and, on segment 1 when segment 2 exists, a route to segment 2
// via the router.
func (tb *Testbed) AddHost(ctx context.Context, o HostOptions) (*Host, error) {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	if err := tb.checkOpen(); err != nil {
		return nil, err
	}
	return tb.addHost(ctx, o)
}

// addHost is AddHost; the caller holds tb.mu.
func (tb *Testbed) addHost(ctx context.Context, o HostOptions) (*Host, error) {
	h, err := tb.newHost(o.Segment)
	if err != nil {
		return nil, err
	}
	addr6, err := tb.wireHost(ctx, h)
	if err != nil {
		return nil, err
	}
	tb.hosts = append(tb.hosts, h)
	tb.logf("testbed %s: host %s (%s) on segment %d: eth0 %s", tb.prefix, h.Name, h.NS, h.Segment, words(h.Addr.String()+"/24", addr6))
	return h, nil
}

// segmentNet is how a host of one segment is attached: the switch
// namespace it plugs into, its default gateways and its address prefixes.
type segmentNet struct {
	sw, gw, gw6, net3, net6 string
}

func (tb *Testbed) segmentNet(seg int) segmentNet {
	if seg == 2 {
		return segmentNet{sw: tb.ns("sw2"), gw: "192.168.60.254", gw6: "fd00:60::254", net3: "192.168.60", net6: "fd00:60::"}
	}
	return segmentNet{sw: tb.ns("sw"), gw: "192.168.50.1", gw6: "fd00:50::1", net3: "192.168.50", net6: "fd00:50::"}
}

// newHost checks seg (0 means 1) and returns the next host with its names
// and addresses, not yet created.
func (tb *Testbed) newHost(seg int) (*Host, error) {
	if seg == 0 {
		seg = 1
	}
	if seg != 1 && seg != 2 {
		return nil, fmt.Errorf("testbed: segment %d: only 1 and 2 exist", seg)
	}
	if seg == 2 && !tb.segment2 {
		return nil, fmt.Errorf("testbed: segment 2 needs AddSegment first")
	}
	i := len(tb.hosts) + 1
	if i > maxHostIndex {
		return nil, fmt.Errorf("testbed: at most %d hosts", maxHostIndex)
	}
	h := &Host{
		Name:    fmt.Sprintf("h%d", i),
		Index:   i,
		Segment: seg,
		tb:      tb,
	}
	h.NS = tb.ns(h.Name)
	h.dir = filepath.Join(tb.workDir, h.Name)
	sn := tb.segmentNet(seg)
	h.Addr = netip.MustParseAddr(fmt.Sprintf("%s.%d", sn.net3, 10+i))
	if tb.opts.IPv6 {
		// The digits of the last IPv4 byte, read as hex: fd00:50::11 is
		// 192.168.50.11.
		h.Addr6 = netip.MustParseAddr(fmt.Sprintf("%s%d", sn.net6, 10+i))
	}
	return h, nil
}

// wireHost creates h's work directory and namespace, plugs its eth0 into
// the segment's switch, adds its addresses and routes, and returns the
// IPv6 address it gave eth0 ("" without IPv6).
func (tb *Testbed) wireHost(ctx context.Context, h *Host) (addr6 string, err error) {
	sn := tb.segmentNet(h.Segment)
	if err := os.MkdirAll(h.dir, 0o755); err != nil {
		return "", err
	}
	if err := tb.addNS(ctx, h.NS); err != nil {
		return "", err
	}
	if err := tb.plug(ctx, sn.sw, h.Name, h.NS, "eth0"); err != nil {
		return "", err
	}
	if h.Addr6.IsValid() {
		addr6 = h.Addr6.String() + "/64"
	}
	if err := addAddrs(ctx, h.NS, "eth0", h.Addr.String()+"/24", addr6); err != nil {
		return "", err
	}
	if err := ipn(ctx, h.NS, "route", "add", "default", "via", sn.gw); err != nil {
		return "", err
	}
	if tb.opts.IPv6 {
		if err := ipn(ctx, h.NS, "-6", "route", "add", "default", "via", sn.gw6); err != nil {
			return "", err
		}
	}
	if h.Segment == 1 && tb.segment2 {
		if err := tb.routeToSegment2(ctx, h.NS); err != nil {
			return "", err
		}
	}
	return addr6, nil
}

// plug connects namespace ns to the bridge br0 of switch namespace sw with a
// veth: port on the switch, dev (up) in ns.
// Equivalent to: ip -n $sw link add $port type veth peer name $dev netns $ns;
// ip -n $sw link set $port master br0 up; ip -n $ns link set $dev up
func (tb *Testbed) plug(ctx context.Context, sw, port, ns, dev string) error {
	if err := ipn(ctx, sw, "link", "add", port, "type", "veth", "peer", "name", dev, "netns", ns); err != nil {
		return err
	}
	if err := ipn(ctx, sw, "link", "set", port, "master", "br0", "up"); err != nil {
		return err
	}
	return ipn(ctx, ns, "link", "set", dev, "up")
}

// Exec runs argv inside the host namespace and returns the combined output;
// the error includes the command and the output.
// Equivalent to: ip netns exec $NS $argv
func (h *Host) Exec(ctx context.Context, argv ...string) (string, error) {
	return execIn(ctx, h.NS, argv...)
}

// Sysctl sets a sysctl inside the host namespace, e.g.
// Sysctl(ctx, "net.ipv4.ip_forward", "1").
func (h *Host) Sysctl(ctx context.Context, key, value string) error {
	return sysctl(ctx, h.NS, key, value)
}

// Ping pings dst from the host; see Pod.Ping.
func (h *Host) Ping(ctx context.Context, dst netip.Addr, count int) error {
	return ping(ctx, h.NS, dst, count)
}

// WaitPing pings dst from the host until one reply comes back; see
// Pod.WaitPing.
func (h *Host) WaitPing(ctx context.Context, dst netip.Addr) error {
	return waitPing(ctx, h.NS, dst)
}

// SubnetFile returns the path of the host's subnet file,
// <workdir>/h<i>/subnet.env.
func (h *Host) SubnetFile() string { return filepath.Join(h.dir, "subnet.env") }

// LogPath returns the path of the daemon log, <workdir>/h<i>/flanneld.log.
func (h *Host) LogPath() string { return filepath.Join(h.dir, "flanneld.log") }

// Log returns the daemon log so far ("" before the first start).
func (h *Host) Log() string {
	b, _ := os.ReadFile(h.LogPath())
	return string(b)
}

// WaitSubnetFile polls until the subnet file exists and holds FLANNEL_SUBNET
// or FLANNEL_IPV6_SUBNET, and returns its variables. It fails early when the
// daemon exits.
func (h *Host) WaitSubnetFile(ctx context.Context) (map[string]string, error) {
	for {
		env, err := ReadSubnetFile(h.SubnetFile())
		if err == nil && (env["FLANNEL_SUBNET"] != "" || env["FLANNEL_IPV6_SUBNET"] != "") {
			return env, nil
		}
		h.tb.mu.Lock()
		d := h.daemon
		h.tb.mu.Unlock()
		if d != nil {
			if ok, derr := d.exited(); ok {
				return nil, fmt.Errorf("testbed: %s: daemon exited (%v) before writing %s; log tail:\n%s",
					h.Name, derr, h.SubnetFile(), tail(h.LogPath(), 30))
			}
		}
		if serr := sleep(ctx, 100*time.Millisecond); serr != nil {
			return nil, fmt.Errorf("testbed: %s: waiting for %s: %w (last: %v)", h.Name, h.SubnetFile(), serr, err)
		}
	}
}
