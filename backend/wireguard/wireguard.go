// Package wireguard is the wireguard backend: pod traffic between hosts
// is encrypted with WireGuard, by the kernel's device when the kernel has
// the module, or else by an embedded userspace device (wireguard-go).
//
// Design notes. Each host has one WireGuard device, flannel-wg, or with
// Mode separate in a dual-stack cluster two: flannel-wg over the IPv4
// underlay (ListenPort, 51820) and flannel-wg-v6 over the IPv6 one
// (ListenPortV6, 51821). Prepare first asks the kernel for a link of type
// wireguard; if the kernel refuses (no module), the daemon runs the device
// itself: a TUN device of the same name with its offloads on (TSO/GSO
// super-packets in, UDP GSO/GRO on the socket), driven by wireguard-go,
// which serves the standard UAPI socket /var/run/wireguard/<device>.sock.
// Both are then configured the same way, through wgctrl, and both answer
// wg show. The kernel device outlives the daemon (traffic keeps flowing
// across a restart, as with vxlan); the embedded one lives as long as the
// daemon, like udp's flannel0.
//
// The private key is read from /run/flannel/wgkey (WIREGUARD_KEY_FILE),
// created 0600 when missing, refused when others may read it; one key for
// both devices. The lease publishes {"PublicKey":...,"Port":...} in
// BackendData (and BackendV6Data when dual-stack), upstream's shape, so
// upstream's wireguard hosts and ours peer with each other. The private
// key and the PSK never leave the process but into the device.
//
// Reconcile is declarative, in two parts computed by pure functions:
// Desired (the devices' addresses and one route per family for the whole
// cluster network through the device) applied by dataplane.Apply, and
// DesiredPeers (per device, each peer's public key, endpoint and allowed
// IPs) diffed by DiffPeers against the device's current peers, so only
// peers that are missing, differ or left are touched: a peer removed by
// hand comes back at the next reconcile, a changed key or endpoint is
// updated without disturbing the others' sessions.
//
// MTU: the device MTU, and the pods', is the underlay's (or the MTU
// option) minus 80 bytes, upstream's figure: a 40-byte IPv6 header (the
// worst case), 8 UDP, 16 of WireGuard header and 16 of authentication tag.
package wireguard

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"

	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/flanneld-go/flannel/backend"
	"github.com/flanneld-go/flannel/backend/dataplane"
	"github.com/flanneld-go/flannel/subnet"
)

// TypeName is the net-conf Backend.Type of this backend.
const TypeName = "wireguard"

// Type describes the backend for the registry.
var Type = backend.Type{Name: TypeName, ParseOptions: parseOptions, New: newBackend, Options: optionNames}

// overhead is what WireGuard adds to a packet (upstream's figure).
const overhead = 80

// WireGuard is the backend.
type WireGuard struct {
	ext     *backend.ExternalInterface
	cfg     *subnet.Config
	opts    Options
	log     *slog.Logger
	k       *dataplane.Netlink
	keyPath string
	key     wgtypes.Key
	mtu     int
	devs    []*devSpec
	wg      *wgctrl.Client
	own     subnet.Lease
	peers   *backend.PeerLog
}

// devSpec is one device the backend keeps.
type devSpec struct {
	name string
	port int
	v6   bool // carries IPv6 only (Mode separate's second device)
	dev  *wgDevice
}

func newBackend(p backend.Params) (backend.Backend, error) {
	opts, ok := p.Options.(Options)
	if !ok {
		return nil, fmt.Errorf("wireguard backend: options of type %T, want wireguard.Options (from ParseOptions)", p.Options)
	}
	return New(p.Ext, p.Config, opts, keyFile(os.LookupEnv), p.Log), nil
}

// New returns the backend; keyPath is the private key's file.
func New(ext *backend.ExternalInterface, cfg *subnet.Config, opts Options, keyPath string, log *slog.Logger) *WireGuard {
	b := &WireGuard{ext: ext, cfg: cfg, opts: opts, log: log.With("backend", TypeName), k: dataplane.NewNetlink(nil), keyPath: keyPath}
	b.peers = backend.NewPeerLog(b.log)
	base := ext.MTU
	if opts.MTU > 0 {
		base = opts.MTU
	}
	b.mtu = base - overhead
	b.devs = []*devSpec{{name: Dev4Name, port: opts.ListenPort}}
	if cfg.EnableIPv6 && opts.Mode == ModeSeparate {
		b.devs = append(b.devs, &devSpec{name: Dev6Name, port: opts.ListenPortV6, v6: true})
	}
	return b
}

// Devices implements backend.DeviceOwner.
func (b *WireGuard) Devices() []string {
	var out []string
	for _, d := range b.devs {
		out = append(out, d.name)
	}
	return out
}

// Prepare implements backend.Backend: read or create the key, create the
// devices, give them the key and port, and publish the public key.
func (b *WireGuard) Prepare(context.Context) (subnet.LeaseAttrs, error) {
	attrs := subnet.LeaseAttrs{BackendType: TypeName}
	key, created, err := loadOrCreateKey(b.keyPath)
	if err != nil {
		return attrs, err
	}
	b.key = key
	pub := key.PublicKey()
	if created {
		b.log.Info("created a new WireGuard private key", "key_file", b.keyPath, "public_key", pub.String())
	} else {
		b.log.Info("using the WireGuard private key", "key_file", b.keyPath, "public_key", pub.String())
	}
	if b.wg == nil {
		if b.wg, err = wgctrl.New(); err != nil {
			return attrs, fmt.Errorf("opening the WireGuard configuration interface: %w", err)
		}
	}
	for _, d := range b.devs {
		if err := b.ensureDevice(d); err != nil {
			return attrs, err
		}
	}
	data4, _ := json.Marshal(LeaseData{PublicKey: pub.String(), Port: uint16(b.opts.ListenPort)})
	attrs.BackendData = data4
	if b.cfg.EnableIPv6 {
		port6 := b.opts.ListenPortV6
		if b.opts.Mode != ModeSeparate {
			port6 = b.opts.ListenPort // one device listens for both families
		}
		attrs.BackendV6Data, _ = json.Marshal(LeaseData{PublicKey: pub.String(), Port: uint16(port6)})
	}
	return attrs, nil
}

// ensureDevice makes d's device exist (re-creating one deleted by hand)
// with our key and port.
func (b *WireGuard) ensureDevice(d *devSpec) error {
	h := b.k.Handle()
	if d.dev != nil {
		l, err := h.LinkByName(d.name)
		if err == nil && l.Attrs().Index == d.dev.index {
			return b.configureDevice(d)
		}
		b.log.Warn("WireGuard device missing or replaced; re-creating it", "device", d.name)
		d.dev.close()
		d.dev = nil
	}
	dev, err := openDevice(h, d.name, b.mtu, b.log)
	if err != nil {
		return err
	}
	d.dev = dev
	if err := b.k.LinkSetUp(dev.index); err != nil {
		return fmt.Errorf("bringing up %s: %w", d.name, err)
	}
	return b.configureDevice(d)
}

// configureDevice sets the private key and listen port when the device
// has others (new, or changed by hand). Equivalent to:
//
//	wg set flannel-wg private-key /run/flannel/wgkey listen-port 51820
func (b *WireGuard) configureDevice(d *devSpec) error {
	cur, err := b.wg.Device(d.name)
	if err == nil && cur.PrivateKey == b.key && cur.ListenPort == d.port {
		return nil
	}
	if err := b.wg.ConfigureDevice(d.name, wgtypes.Config{PrivateKey: &b.key, ListenPort: &d.port}); err != nil {
		return fmt.Errorf("configuring WireGuard device %s (listen port %d; is the port in use? set Backend.ListenPort): %w", d.name, d.port, err)
	}
	return nil
}

// Start implements backend.Backend: address the devices and the cluster
// routes; pods get the device MTU.
func (b *WireGuard) Start(_ context.Context, own subnet.Lease) (int, error) {
	b.own = own
	h := b.host()
	if _, err := dataplane.Apply(b.k, b.links(), Desired(h)); err != nil {
		return 0, fmt.Errorf("addressing the WireGuard devices for %s: %w", own, err)
	}
	return b.mtu, nil
}

// Reconcile implements backend.Backend.
func (b *WireGuard) Reconcile(_ context.Context, peers []subnet.Lease) (dataplane.Changes, error) {
	for _, d := range b.devs {
		if err := b.ensureDevice(d); err != nil {
			return dataplane.Changes{}, err
		}
	}
	h := b.host()
	want, skips := DesiredPeers(b.opts, h, peers)
	b.peers.Report(skips)
	ch, err := dataplane.Apply(b.k, b.links(), Desired(h))
	if perr := b.applyPeers(want); perr != nil {
		return ch, perr
	}
	return ch, err
}

// applyPeers makes every device's peers exactly want's; new peers get a
// handshake at once (withKick).
// Equivalent to: wg set flannel-wg peer $KEY endpoint $IP:$PORT allowed-ips $SUBNET (or remove)
func (b *WireGuard) applyPeers(want map[string][]wgtypes.PeerConfig) error {
	for _, d := range b.devs {
		cur, err := b.wg.Device(d.name)
		if err != nil {
			return fmt.Errorf("reading the peers of %s: %w", d.name, err)
		}
		cfgs, ch := DiffPeers(want[d.name], cur.Peers)
		if len(cfgs) == 0 {
			continue
		}
		first, restore := withKick(cfgs, cur.Peers)
		if err := b.wg.ConfigureDevice(d.name, wgtypes.Config{Peers: first}); err != nil {
			return fmt.Errorf("configuring the peers of %s: %w", d.name, err)
		}
		if len(restore) > 0 {
			if err := b.wg.ConfigureDevice(d.name, wgtypes.Config{Peers: restore}); err != nil {
				return fmt.Errorf("configuring the keepalive of new peers of %s: %w", d.name, err)
			}
		}
		if ch.Any() {
			b.log.Info("WireGuard peers updated", "device", d.name, "added", ch.Added, "updated", ch.Updated, "removed", ch.Removed)
		}
	}
	return nil
}

// Run implements backend.Runner: it holds the embedded devices until ctx
// is done, then stops them.
func (b *WireGuard) Run(ctx context.Context) error {
	<-ctx.Done()
	for _, d := range b.devs {
		if d.dev != nil {
			d.dev.close()
		}
	}
	if b.wg != nil {
		b.wg.Close()
	}
	return nil
}

func (b *WireGuard) links() []int {
	var out []int
	for _, d := range b.devs {
		if d.dev != nil {
			out = append(out, d.dev.index)
		}
	}
	return out
}

// host is what Desired and DesiredPeers need to know of this host.
func (b *WireGuard) host() Host {
	h := Host{Own: b.own, Network: b.cfg.Network, Self: b.key.PublicKey(), Ext6: b.ext.PublicIPv6}
	if b.cfg.EnableIPv6 {
		h.Network6 = b.cfg.IPv6Network
	}
	for _, d := range b.devs {
		if d.dev == nil {
			continue
		}
		if d.v6 {
			h.Dev6 = d.dev.index
		} else {
			h.Dev4 = d.dev.index
		}
	}
	if b.cfg.EnableIPv6 && b.opts.Mode != ModeSeparate {
		h.Dev6 = h.Dev4
	}
	return h
}
