package wireguard

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/ipc"
	"golang.zx2c4.com/wireguard/tun"
)

// Implementations of a device.
const (
	implKernel   = "kernel"
	implEmbedded = "embedded"
)

// UAPIDir is where the embedded device serves its configuration socket,
// <UAPIDir>/<device>.sock: where wg and wgctrl look for userspace
// devices.
const UAPIDir = "/var/run/wireguard"

// wgDevice is one WireGuard device, kernel or embedded; either way it is
// configured through wgctrl by name.
type wgDevice struct {
	name  string
	impl  string
	index int
	// embedded only
	dev  *device.Device
	uapi net.Listener
}

// openDevice creates (or, for a kernel device, adopts) the device name.
// It first asks the kernel for a link of type wireguard; when the kernel
// has no WireGuard module it runs the embedded userspace device over a TUN
// device of that name instead. The choice is logged. Equivalent to:
//
//	ip link add flannel-wg mtu $MTU type wireguard
//
// or, embedded, wireguard-go flannel-wg (a TUN device and its UAPI socket).
func openDevice(h *netlink.Handle, name string, mtu int, log *slog.Logger) (*wgDevice, error) {
	return chooseDevice(h, func() (*wgDevice, error) { return openEmbedded(h, name, mtu, log) }, name, mtu, log)
}

// linkOps are the netlink calls chooseDevice makes (*netlink.Handle).
type linkOps interface {
	LinkByName(name string) (netlink.Link, error)
	LinkAdd(l netlink.Link) error
	LinkSetMTU(l netlink.Link, mtu int) error
}

// chooseDevice is openDevice's decision, with the embedded device's
// start injected.
func chooseDevice(h linkOps, embedded func() (*wgDevice, error), name string, mtu int, log *slog.Logger) (*wgDevice, error) {
	if l, err := h.LinkByName(name); err == nil {
		if l.Type() == "wireguard" {
			if l.Attrs().MTU != mtu {
				if err := h.LinkSetMTU(l, mtu); err != nil {
					return nil, fmt.Errorf("setting the MTU of %s: %w", name, err)
				}
			}
			log.Info("adopting the existing kernel WireGuard device", "device", name)
			return &wgDevice{name: name, impl: implKernel, index: l.Attrs().Index}, nil
		}
		return nil, fmt.Errorf("a %s device named %s exists (another flanneld or wireguard-go may run it); stop that program, or delete the device with ip link del %s", l.Type(), name, name)
	}
	link := &netlink.GenericLink{LinkAttrs: netlink.LinkAttrs{Name: name, MTU: mtu}, LinkType: "wireguard"}
	err := h.LinkAdd(link)
	if err == nil {
		l, err := h.LinkByName(name)
		if err != nil {
			return nil, fmt.Errorf("looking up the new device %s: %w", name, err)
		}
		log.Info("using the kernel's WireGuard", "device", name, "impl", implKernel)
		return &wgDevice{name: name, impl: implKernel, index: l.Attrs().Index}, nil
	}
	if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.EINVAL) {
		return nil, fmt.Errorf("creating WireGuard device %s: %w", name, err)
	}
	d, eerr := embedded()
	if eerr != nil {
		return nil, fmt.Errorf("the kernel has no WireGuard (%v), and the embedded one failed: %w", err, eerr)
	}
	log.Info("the kernel has no WireGuard module; using the embedded userspace WireGuard", "device", name, "impl", implEmbedded,
		"uapi", filepath.Join(UAPIDir, name+".sock"), "kernel_error", err)
	return d, nil
}

// openEmbedded starts the userspace device: a TUN device (with its
// offloads: TSO/GSO into the device, UDP GSO/GRO on the socket) driven by
// wireguard-go, and its UAPI socket, which wg and wgctrl talk to.
func openEmbedded(h *netlink.Handle, name string, mtu int, log *slog.Logger) (*wgDevice, error) {
	t, err := tun.CreateTUN(name, mtu)
	if err != nil {
		return nil, fmt.Errorf("creating TUN device %s: %w", name, err)
	}
	dlog := log.With("device", name)
	logger := &device.Logger{
		Verbosef: func(string, ...any) {},
		Errorf:   func(f string, a ...any) { dlog.Warn("WireGuard: " + fmt.Sprintf(f, a...)) },
	}
	dev := device.NewDevice(t, conn.NewDefaultBind(), logger)
	f, err := ipc.UAPIOpen(name)
	if err != nil {
		dev.Close()
		return nil, fmt.Errorf("opening the UAPI socket %s: %w", filepath.Join(UAPIDir, name+".sock"), err)
	}
	l, err := ipc.UAPIListen(name, f)
	if err != nil {
		f.Close()
		dev.Close()
		return nil, fmt.Errorf("serving the UAPI socket of %s: %w", name, err)
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go dev.IpcHandle(c)
		}
	}()
	link, err := h.LinkByName(name)
	if err != nil {
		l.Close()
		dev.Close()
		return nil, fmt.Errorf("looking up TUN device %s: %w", name, err)
	}
	return &wgDevice{name: name, impl: implEmbedded, index: link.Attrs().Index, dev: dev, uapi: l}, nil
}

// close stops an embedded device (its TUN device and socket go with it);
// a kernel device stays, so traffic keeps flowing across a restart.
func (d *wgDevice) close() {
	if d.impl != implEmbedded {
		return
	}
	d.uapi.Close() // unlinks the socket
	d.dev.Close()
}
