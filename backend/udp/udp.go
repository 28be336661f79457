// Package udp is the udp backend: pod packets travel as the payload of UDP
// datagrams between hosts, encapsulated in user space through a TUN device.
//
// Design notes.
//
// Wire format and device. The wire format is upstream flannel's: the UDP
// payload (port 8285 by default, bound on the external address) is the
// inner IP packet, unmodified, so hosts running upstream flannel's udp
// backend and this one can share a cluster. The TUN device flannel0 gets
// the network address of our lease as a /32 (10.244.3.0/32 for
// 10.244.3.0/24), MTU = external MTU − 28 (IPv4 + UDP headers), and one
// route, "<Network> dev flannel0 proto 98", reconciled like the routes of
// the other backends. The kernel sends every packet for another host's
// subnet into flannel0; the daemon picks the peer from the forwarding table
// and sends it on. The device is not persistent: it exists while the
// daemon runs, so unlike host-gw and vxlan this backend stops forwarding
// while the daemon is down (as upstream's udp does); Close, when a switch
// retires the backend, removes it and frees the port (lifecycle.go).
//
// Forwarding table. The engine drives the backend per peer (a
// backend.PerPeer whose peer parts of the kernel state are empty): it
// tells it of each peer lease through backend.Tracker (Track, Forget; the
// whole-set Reconcile does the same for a set), and Commit turns the
// tracked leases into a table and publishes it with one atomic pointer
// store. The packet path loads the pointer once per batch: no locks, no
// allocation. The table's two halves differ on purpose. Routes (lease
// subnet -> PublicIP:Port) hold udp leases only (BackendType udp or, as
// upstream's udp backend writes, none); origins (who may send to us, from
// which subnets) hold every peer, whatever its type. In a live backend
// switch a host serves peers of several types at once, and a host that
// still sees us as udp sends to us over udp while its own lease already
// says vxlan or host-gw: its datagrams are accepted, but nothing goes to
// it over udp, as its udp backend may be gone. Commit rebuilds the table
// when a tracked lease changed, in time linear in the peers (a few
// milliseconds at 10,000: BenchmarkCommit10k). Lookups are by
// netip.Addr and prefix length, so the table, like the decoder (which
// dispatches on the IP version nibble), serves IPv4 and IPv6 inner packets
// alike. With dual-stack, flannel0 also gets <IPv6 subnet>::/128 and a
// route for the IPv6 Network, and a peer's IPv6 subnet maps to the same
// IPv4 PublicIP:Port: the underlay stays IPv4, as in upstream's udp
// backend (which carries IPv4 only).
//
// Safety. A datagram is accepted only from a current peer's PublicIP (a
// peer of any type, see above) and the backend port (peers send from the
// socket they listen on, upstream's udp backend too), and only when its
// inner packet is one whole IP packet for our lease from an address in
// that peer's subnets (either family): one map lookup per message
// (table.origin) and a prefix test per datagram. Everything else is
// dropped: from no peer (not_peer), from a peer's address but another port
// (wrong_port), with a forged inner source (spoofed_source), truncated or
// malformed packets, non-IP payloads, inner packets not addressed to our
// lease. A packet from the TUN to a Network address no udp lease covers
// gets an ICMP net unreachable written back into the TUN (from that
// address: the kernel would drop one from a local address). Every drop has
// a reason and a counter (Stats); the daemon logs the counters within
// statsPeriod of a drop, and every Tuning.LogPeriod
// (FLANNEL_UDP_LOG_PERIOD) while traffic flows; drops that point at a
// sender get a warning of their own (dropwarn.go).
//
// Checksums. No inner packet is marked valid unchecked. A TCP segment the
// receiver may coalesce has its IPv4 header and TCP checksums verified
// first (bad_checksum): the super-packet goes to the kernel with a partial
// checksum (NEEDS_CSUM), which the kernel takes on trust, and a lone
// segment with DATA_VALID. Every other packet goes behind an empty
// virtio header, and the kernel verifies it as it would from any device.
// The outer UDP checksum, which the kernel checks, covers only the trip
// between the hosts, not what the sending host put in.
//
// Speed (see send.go and recv.go for the packet flow). Upstream moves one
// packet per system call each way; here every step is batched and the
// kernel's offloads do the per-packet work where it offers them:
//
//   - TUN with IFF_VNET_HDR and TUNSETOFFLOAD(CSUM|TSO4|TSO6): the kernel
//     hands over TCP super-packets of up to 64 KiB with the checksum left
//     to us; we cut them into MTU-sized packets (segmentTCP).
//   - sendmmsg with UDP_SEGMENT: the segments of one super-packet leave in
//     one message, the kernel (or the NIC) splits them into datagrams.
//   - UDP_GRO on the socket and recvmmsg: a run of datagrams of one flow
//     arrives in one buffer; consecutive TCP segments are merged back into
//     a super-packet (coalescer) and written to the TUN with a GSO virtio
//     header, so the kernel's TCP stack sees few large packets. Neither
//     side copies payload in user space: the sender writes only segment
//     headers (the payload goes out through iovecs into the read buffer),
//     the receiver writes a super-packet with one writev of its parts.
//   - IFF_MULTI_QUEUE: one TUN queue and one SO_REUSEPORT socket per CPU
//     (up to maxQueues), with one goroutine per direction per queue.
//
// Each offload falls back cleanly when refused (no vnet header: plain
// packets; no GSO: one message per datagram; no GRO: no coalescing; no
// multi-queue: one queue), and the daemon logs once which are active.
// Tuning.NoOffload (FLANNEL_UDP_OFFLOAD=off in the daemon's environment,
// read by its main) turns them all off, for comparisons and
// troubleshooting.
//
// Kernel seam. The sender and receiver loops do no system calls of their
// own: they read and write batches through two small interfaces (io.go),
// tunIO for a TUN queue and udpIO for its socket, which carry the offloads
// (a virtio_net_hdr per packet, a segment size and a peer address per
// datagram message). The real ones wrap the descriptors (tun_linux.go,
// sock_linux.go); the tests run the loops over channel-backed fakes,
// without root.
//
// water (github.com/songgao/water) is not used: IFF_VNET_HDR has to be
// given when the device is opened and water's configuration cannot express
// it; see openTun.
package udp

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"errors"

	"github.com/flanneld-go/flannel/backend"
	"github.com/flanneld-go/flannel/backend/dataplane"
	"github.com/flanneld-go/flannel/subnet"
)

// TypeName is the net-conf Backend.Type of this backend.
const TypeName = "udp"

// DeviceName is the TUN device's name, as upstream.
const DeviceName = "flannel0"

// DefaultPort is the UDP port when the net-conf sets none.
const DefaultPort = 8285

// encapOverhead is what the outer IPv4 and UDP headers take from the MTU.
const encapOverhead = 28

const maxQueues = 4

// Options are the backend's net-conf options.
type Options struct {
	Type string
	Port int
}

// Type describes the backend for the registry.
var Type = backend.Type{Name: TypeName, ParseOptions: parseOptions, New: newBackend, Options: []string{"Port"}}

func parseOptions(raw []byte) (any, error) {
	o := Options{Port: DefaultPort}
	if err := json.Unmarshal(raw, &o); err != nil {
		return nil, subnet.JSONError(err, "Backend.")
	}
	o.Type = TypeName
	if o.Port == 0 {
		o.Port = DefaultPort
	}
	if o.Port < 1 || o.Port > 65535 {
		return nil, fmt.Errorf("Backend.Port: %d is not a UDP port; use 1..65535 (default 8285)", o.Port)
	}
	return o, nil
}

// Backend is the udp backend.
type Backend struct {
	ext  *backend.ExternalInterface
	cfg  *subnet.Config
	opts Options
	log  *slog.Logger
	want offloadsWanted

	logPeriod time.Duration

	table atomic.Pointer[table]
	gso   atomic.Bool // UDP_SEGMENT usable; cleared on the first refusal

	dev      *device
	socks    []*udpSock
	counters []*counters

	sendErrLogged, tunErrLogged atomic.Bool

	k         dataplane.Kernel
	linkIndex atomic.Int64 // flannel0's, once configured

	// devMu guards dev and socks, which Run, its re-creation of flannel0
	// and Close replace; down says the backend is stopped for good.
	devMu   sync.Mutex
	down    atomic.Bool
	stopRun context.CancelFunc // Run's, while it runs

	// index is flannel0's at the last Refresh (the engine's loop alone
	// uses it).
	index     int
	refreshed bool

	// now is the clock of switchLinger (time.Now; tests set their own).
	now func() time.Time

	mu      sync.Mutex
	own     subnet.Lease
	tracked map[string]member // by lease key
	dirty   bool              // tracked changed since the last publish
	peerLog *backend.PeerLog
}

func newBackend(p backend.Params) (backend.Backend, error) {
	o, ok := p.Options.(Options)
	if !ok {
		return nil, fmt.Errorf("udp backend: options of type %T, want udp.Options (from ParseOptions)", p.Options)
	}
	if o.Port == 0 {
		o.Port = DefaultPort
	}
	tu, _ := p.Tuning.(Tuning) // the defaults unless the daemon set some
	return New(p.Ext, p.Config, o, tu, p.Log), nil
}

// New returns a backend; it does not touch the kernel until Prepare.
func New(ext *backend.ExternalInterface, cfg *subnet.Config, o Options, tu Tuning, log *slog.Logger) *Backend {
	w := offloadsWanted{vnet: true, multiQueue: true, queues: min(runtime.NumCPU(), maxQueues)}
	if tu.NoOffload {
		w = offloadsWanted{queues: 1}
	}
	b := &Backend{ext: ext, cfg: cfg, opts: o, log: log.With("backend", TypeName), want: w, logPeriod: logPeriod,
		k: dataplane.NewNetlink(nil), tracked: map[string]member{}}
	b.peerLog = backend.NewPeerLog(b.log)
	if tu.LogPeriod > 0 {
		b.logPeriod = tu.LogPeriod
	}
	b.table.Store(newTable(cfg.Network, netip.Prefix{}, netip.Prefix{}, netip.Prefix{}, nil))
	return b
}

// Prepare implements backend.Backend: it creates flannel0 and binds the
// UDP port, so a port in use fails before a lease is taken.
func (b *Backend) Prepare(ctx context.Context) (subnet.LeaseAttrs, error) {
	if err := b.openQueues(ctx); err != nil {
		return subnet.LeaseAttrs{}, err
	}
	return subnet.LeaseAttrs{BackendType: TypeName}, nil
}

// Devices implements backend.DeviceOwner.
func (b *Backend) Devices() []string { return []string{DeviceName} }

// MTU is the pod MTU: the external MTU less the outer headers.
func (b *Backend) MTU() int { return b.ext.MTU - encapOverhead }

// Start implements backend.Backend: flannel0 gets its MTU, our lease's
// network addresses and the route for the whole Network (State).
// Equivalent to: ip link set flannel0 mtu <mtu> up; ip addr replace
// <subnet>.0/32 dev flannel0; ip route replace <Network> dev flannel0 proto 98
func (b *Backend) Start(_ context.Context, own subnet.Lease) (int, error) {
	b.mu.Lock()
	b.own = own
	b.publish()
	b.mu.Unlock()
	if err := b.configureDevice(); err != nil {
		return 0, err
	}
	if _, err := b.apply(); err != nil {
		return 0, err
	}
	return b.MTU(), nil
}

// configureDevice gives flannel0 its MTU, the IPv6 settings and brings it
// up; its addresses and route come from State.
func (b *Backend) configureDevice() error {
	link, err := b.k.LinkByName(DeviceName)
	if err != nil {
		return fmt.Errorf("%s: %w", DeviceName, err)
	}
	b.linkIndex.Store(int64(link.Index))
	if err := b.k.LinkSetMTU(link.Index, b.MTU()); err != nil {
		return fmt.Errorf("ip link set %s mtu %d: %w", DeviceName, b.MTU(), err)
	}
	if err := b.configureIPv6(); err != nil {
		return err
	}
	if err := b.k.LinkSetUp(link.Index); err != nil {
		return fmt.Errorf("ip link set %s up: %w", DeviceName, err)
	}
	return nil
}

// configureIPv6: with dual-stack, flannel0 carries IPv6 pods over the
// IPv4 underlay (the version nibble tells the families apart on the
// wire) and must have IPv6 on; without, IPv6 is turned off on it so the
// kernel sends no router solicitations into it (they would only be
// counted as drops). A host without IPv6 at all has nothing to turn off.
func (b *Backend) configureIPv6() error {
	conf := "net/ipv6/conf/" + DeviceName + "/"
	b.mu.Lock()
	own := b.own
	b.mu.Unlock()
	if !b.cfg.EnableIPv6 || !own.IPv6Subnet.IsValid() {
		if err := b.k.Sysctl(conf+"disable_ipv6", "1"); err != nil && !errors.Is(err, os.ErrNotExist) {
			b.log.Warn("cannot turn IPv6 off on the TUN device; its router solicitations will show as drops", "dev", DeviceName, "error", err)
		}
		return nil
	}
	if err := b.k.Sysctl(conf+"disable_ipv6", "0"); err != nil {
		return fmt.Errorf("turning IPv6 on for %s (EnableIPv6 is set): %w; check that IPv6 is enabled on this host (net.ipv6.conf.all.disable_ipv6)", DeviceName, err)
	}
	if err := b.k.Sysctl(conf+"accept_ra", "0"); err != nil {
		b.log.Warn("cannot turn off router advertisements on the TUN device", "dev", DeviceName, "error", err)
	}
	return nil
}

// State is what flannel0 needs in the kernel: our lease's network
// addresses (10.244.3.0/32, and <IPv6 subnet>::/128 with dual-stack) and
// one route per Network through it. It does not depend on the peers: the
// daemon, not the kernel, picks the peer of each packet (table.go).
func State(cfg *subnet.Config, own subnet.Lease, link int) dataplane.State {
	var s dataplane.State
	if own.Subnet.IsValid() {
		s.Addrs = append(s.Addrs, dataplane.Addr{LinkIndex: link, Prefix: netip.PrefixFrom(own.Subnet.Masked().Addr(), 32)})
	}
	s.Routes = append(s.Routes, dataplane.Route{Dst: cfg.Network, LinkIndex: link, Proto: dataplane.Proto})
	if cfg.EnableIPv6 {
		if own.IPv6Subnet.IsValid() {
			s.Addrs = append(s.Addrs, dataplane.Addr{LinkIndex: link, Prefix: netip.PrefixFrom(own.IPv6Subnet.Masked().Addr(), 128)})
		}
		s.Routes = append(s.Routes, dataplane.Route{Dst: cfg.IPv6Network, LinkIndex: link, Proto: dataplane.Proto})
	}
	return s
}

// apply puts State in the kernel (Start, and a re-created device) and
// deletes nothing but flannel0's stale addresses: the other proto 98
// routes may be another backend's, serving peers beside udp during a
// switch (backend/mux), and deleting them would send those peers'
// traffic into flannel0, which has no entry for them, until the next
// full pass. Routes nobody wants go with that pass.
// Equivalent to: ip addr replace ... dev flannel0; ip route replace <Network> dev flannel0 proto 98
func (b *Backend) apply() (dataplane.Changes, error) {
	b.mu.Lock()
	own := b.own
	b.mu.Unlock()
	link := int(b.linkIndex.Load())
	want := State(b.cfg, own, link)
	ch, err := dataplane.ApplyAddrs(b.k, []int{link}, want.Addrs)
	if err != nil {
		return ch, err
	}
	for _, r := range want.Routes {
		if err := b.k.RouteReplace(r); err != nil {
			return ch, fmt.Errorf("ip route replace %s dev %s proto 98: %w", r.Dst, DeviceName, err)
		}
		ch.RoutesSet++
	}
	return ch, nil
}
