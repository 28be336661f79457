package vxlan

import (
	"encoding/json"
	"fmt"

	"github.com/flanneld-go/flannel/subnet"
)

// Options are the net-conf Backend options of the vxlan backend, with
// upstream flannel's names and defaults.
type Options struct {
	Type string
	// VNI is the VXLAN network identifier; the device is flannel.<VNI>.
	VNI int
	// Port is the UDP port; 0 means the kernel's default (8472).
	Port int
	// GBP enables VXLAN Group Based Policy.
	GBP bool
	// Learning lets the kernel learn FDB entries from traffic (off: the
	// daemon programs every entry).
	Learning bool
	// DirectRouting: peers on the same L2 segment get a plain route
	// (like host-gw); the others are reached through the tunnel.
	DirectRouting bool
	// MTU overrides the external interface's MTU as the base of the
	// device MTU (0: use the interface's).
	MTU int
}

// optionNames are the Options fields a net-conf may set; windowsOptions
// are read by upstream's Windows nodes only.
var (
	optionNames    = []string{"VNI", "Port", "GBP", "Learning", "DirectRouting", "MTU"}
	windowsOptions = []string{"Name", "MacPrefix"}
)

func parseOptions(raw []byte) (any, error) {
	o := Options{VNI: 1}
	if err := json.Unmarshal(raw, &o); err != nil {
		return nil, subnet.JSONError(err, "Backend.")
	}
	o.Type = TypeName
	switch {
	case o.VNI < 0 || o.VNI > 1<<24-1:
		return nil, fmt.Errorf("Backend.VNI: %d is out of range; use 0..16777215 (default 1)", o.VNI)
	case o.Port < 0 || o.Port > 65535:
		return nil, fmt.Errorf("Backend.Port: %d is not a UDP port; use 1..65535, or 0 for the kernel's default 8472", o.Port)
	case o.MTU != 0 && (o.MTU < 626 || o.MTU > 65535):
		return nil, fmt.Errorf("Backend.MTU: %d is out of range; use the underlay MTU (626..65535), or 0 to take the external interface's", o.MTU)
	}
	return o, nil
}
