package wireguard

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/flanneld-go/flannel/subnet"
)

// Mode says how a dual-stack cluster uses WireGuard (upstream's values).
type Mode string

const (
	// ModeSeparate: one device per family, flannel-wg over the IPv4
	// underlay and flannel-wg-v6 over the IPv6 one (the default).
	ModeSeparate Mode = "separate"
	// ModeAuto: one device carrying both families; each peer is reached
	// over the underlay family most likely to work (autoEndpoint).
	ModeAuto Mode = "auto"
	// ModeIPv4 and ModeIPv6: one device, every peer reached over that
	// underlay family.
	ModeIPv4 Mode = "ipv4"
	ModeIPv6 Mode = "ipv6"
)

// Options are the net-conf Backend options of the wireguard backend, with
// upstream flannel's names and defaults.
type Options struct {
	Type string
	// ListenPort is flannel-wg's UDP port; ListenPortV6 flannel-wg-v6's
	// (Mode separate, dual-stack).
	ListenPort, ListenPortV6 int
	// PSK is an optional pre-shared key (base64, as wg genpsk prints it)
	// mixed into every handshake; the same on every host.
	PSK Secret
	// PersistentKeepaliveInterval is in seconds; 0 sends no keepalives.
	PersistentKeepaliveInterval int
	// MTU is the underlay MTU the device MTU is computed from (0: the
	// external interface's).
	MTU  int
	Mode Mode
}

// Secret is a value that must never be shown: printed, logged or
// marshalled, it reads "(redacted)" (or "" when empty).
type Secret string

const redacted = "(redacted)"

func (s Secret) show() string {
	if s == "" {
		return ""
	}
	return redacted
}

// String implements fmt.Stringer.
func (s Secret) String() string { return s.show() }

// GoString keeps %#v from printing the value.
func (s Secret) GoString() string { return `"` + s.show() + `"` }

// LogValue implements slog.LogValuer.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.show()) }

// MarshalJSON keeps config check and anything else that marshals the
// options from printing the key.
func (s Secret) MarshalJSON() ([]byte, error) { return json.Marshal(s.show()) }

// UnmarshalJSON reads the plain string the net-conf holds.
func (s *Secret) UnmarshalJSON(b []byte) error {
	var v string
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*s = Secret(v)
	return nil
}

// optionNames are the Options fields a net-conf may set.
var optionNames = []string{"ListenPort", "ListenPortV6", "PSK", "PersistentKeepaliveInterval", "MTU", "Mode"}

const (
	defaultPort   = 51820
	defaultPortV6 = 51821
)

func parseOptions(raw []byte) (any, error) {
	o := Options{ListenPort: defaultPort, ListenPortV6: defaultPortV6, Mode: ModeSeparate}
	if err := json.Unmarshal(raw, &o); err != nil {
		return nil, subnet.JSONError(err, "Backend.")
	}
	o.Type = TypeName
	o.Mode = Mode(strings.ToLower(string(o.Mode)))
	switch {
	case o.ListenPort < 1 || o.ListenPort > 65535:
		return nil, fmt.Errorf("Backend.ListenPort: %d is not a UDP port; use 1..65535 (default %d)", o.ListenPort, defaultPort)
	case o.ListenPortV6 < 1 || o.ListenPortV6 > 65535:
		return nil, fmt.Errorf("Backend.ListenPortV6: %d is not a UDP port; use 1..65535 (default %d)", o.ListenPortV6, defaultPortV6)
	case o.PersistentKeepaliveInterval < 0 || o.PersistentKeepaliveInterval > 65535:
		return nil, fmt.Errorf("Backend.PersistentKeepaliveInterval: %d is out of range; use seconds, 0..65535 (0: no keepalives)", o.PersistentKeepaliveInterval)
	case o.MTU != 0 && (o.MTU < 656 || o.MTU > 65535):
		return nil, fmt.Errorf("Backend.MTU: %d is out of range; use the underlay MTU (656..65535), or 0 to take the external interface's", o.MTU)
	}
	switch o.Mode {
	case ModeSeparate, ModeAuto, ModeIPv4, ModeIPv6:
	default:
		return nil, fmt.Errorf("Backend.Mode: %q is not a mode; use separate (default), auto, ipv4 or ipv6", o.Mode)
	}
	if o.PSK != "" {
		if _, err := wgtypes.ParseKey(string(o.PSK)); err != nil {
			// The value is a secret: the message does not repeat it.
			return nil, fmt.Errorf("Backend.PSK: not a WireGuard key (44 characters of base64, as wg genpsk prints); generate one with wg genpsk and put the same on every host")
		}
	}
	return o, nil
}

// psk is the parsed pre-shared key, nil when none.
func (o Options) psk() *wgtypes.Key {
	if o.PSK == "" {
		return nil
	}
	k, err := wgtypes.ParseKey(string(o.PSK))
	if err != nil {
		return nil // parseOptions refused it
	}
	return &k
}
