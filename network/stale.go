package network

import (
	"log/slog"
	"regexp"

	"github.com/vishvananda/netlink"

	"github.com/flanneld-go/flannel/backend"
)

// ourDevice matches the names of devices our backends create.
var ourDevice = regexp.MustCompile(`^(flannel\.\d+|flannel-v6\.\d+|flannel0|flannel-wg|flannel-wg-v6)$`)

// removeStaleDevices deletes devices of other backends (or of an old VNI)
// after a backend switch: any flannel.N, flannel-v6.N, flannel0, flannel-wg
// or flannel-wg-v6 link the current backend does not own. Their routes
// went with the reconcile.
// Equivalent to: ip link del $dev
func removeStaleDevices(h *netlink.Handle, be backend.Backend, log *slog.Logger) {
	keep := map[string]bool{}
	if o, ok := be.(backend.DeviceOwner); ok {
		for _, d := range o.Devices() {
			keep[d] = true
		}
	}
	links, err := h.LinkList()
	if err != nil {
		log.Warn("cannot list links to remove devices of a previous backend", "error", err)
		return
	}
	for _, l := range links {
		name := l.Attrs().Name
		if !ourDevice.MatchString(name) || keep[name] {
			continue
		}
		if err := h.LinkDel(l); err != nil {
			log.Warn("cannot remove the device of a previous backend; remove it by hand with ip link del", "device", name, "error", err)
			continue
		}
		log.Info("removed the device of a previous backend", "device", name)
	}
}
