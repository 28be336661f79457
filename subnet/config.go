package subnet

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/netip"
	"reflect"
	"slices"
	"sort"
	"strings"

	"github.com/flanneld-go/flannel/internal/suggest"
)

// DefaultBackend is the backend of a net-conf without a Backend object:
// udp, as upstream flanneld decides (a host that took another default
// would ignore upstream's udp leases and split a mixed cluster). The
// choice is reported as a warning, DefaultBackendWarning.
const DefaultBackend = "udp"

// DefaultBackendWarning is the one line that says which default a
// net-conf without Backend got, and how to choose another.
const DefaultBackendWarning = `Backend is not set: using the udp backend, upstream flanneld's default; to choose another, set "Backend": {"Type": "vxlan"} (or "host-gw")`

// Config is a validated network configuration (the JSON document at
// <prefix>/config) with every default filled in.
type Config struct {
	EnableIPv4 bool
	EnableIPv6 bool

	Network   netip.Prefix
	SubnetLen int
	SubnetMin netip.Addr // first address of the lowest subnet that may be leased
	SubnetMax netip.Addr // first address of the highest subnet that may be leased

	IPv6Network   netip.Prefix
	IPv6SubnetLen int
	IPv6SubnetMin netip.Addr
	IPv6SubnetMax netip.Addr

	// EnableNFTables programs the ip-masq and forwarding rules with
	// nftables instead of iptables (upstream's field).
	EnableNFTables bool

	// BackendType is Backend.Type in lower case (upstream matches it
	// without regard to case), DefaultBackend when Backend is absent.
	BackendType string
	// BackendDefaulted is set when the document has no Backend, so
	// BackendType is DefaultBackend by upstream's rule rather than by the
	// operator's choice.
	BackendDefaulted bool
	// Backend is the raw Backend object, options included, for the backend
	// to parse. Never nil.
	Backend json.RawMessage
}

// rawConfig mirrors the JSON document. encoding/json matches keys without
// regard to case, as upstream flannel does. Addresses stay strings so that
// errors can name the field.
type rawConfig struct {
	EnableIPv4     *bool
	EnableIPv6     bool
	Network        string
	SubnetLen      int
	SubnetMin      string
	SubnetMax      string
	IPv6Network    string
	IPv6SubnetLen  int
	IPv6SubnetMin  string
	IPv6SubnetMax  string
	EnableNFTables bool
	Backend        json.RawMessage
}

// knownFields are the top-level keys we understand; unsupportedFields are
// upstream keys we recognise but do not implement (a warning says so).
var (
	knownFields = []string{"EnableIPv4", "EnableIPv6", "Network", "SubnetLen", "SubnetMin", "SubnetMax",
		"IPv6Network", "IPv6SubnetLen", "IPv6SubnetMin", "IPv6SubnetMax", "EnableNFTables", "Backend"}
	unsupportedFields = map[string]string{
		"networks":     "multiple networks are not supported; only Network is used",
		"ipv6networks": "multiple IPv6 networks are not supported; only IPv6Network is used",
	}
)

// ParseConfig parses and validates a net-conf document. Warnings describe
// things that are accepted but probably not what the operator meant (unknown
// fields, IPv6 settings while IPv6 is off). The error names the field at
// fault and how to fix it.
func ParseConfig(data []byte) (*Config, []string, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil {
		return nil, nil, fmt.Errorf("net-conf is not a JSON object: %w", jsonErr(err))
	}
	warnings := unknownFieldWarnings(fields)

	var raw rawConfig
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, warnings, jsonErr(err)
	}
	cfg := &Config{EnableIPv4: raw.EnableIPv4 == nil || *raw.EnableIPv4, EnableIPv6: raw.EnableIPv6, EnableNFTables: raw.EnableNFTables}

	var err error
	if cfg.BackendType, cfg.Backend, err = parseBackend(raw.Backend); err != nil {
		return nil, warnings, err
	}
	if len(raw.Backend) == 0 {
		cfg.BackendDefaulted = true
		warnings = append(warnings, DefaultBackendWarning)
	}
	if !cfg.EnableIPv4 {
		return nil, warnings, errors.New("EnableIPv4: IPv6-only networks are not supported yet; set EnableIPv4 to true (the default) and give an IPv4 Network")
	}
	v4 := familySpec{name: "", is4: true, defaultLen: 24, maxLen: 30, minBits: 28, bigNet: 22}
	if cfg.Network, cfg.SubnetLen, cfg.SubnetMin, cfg.SubnetMax, err = v4.parse(raw.Network, raw.SubnetLen, raw.SubnetMin, raw.SubnetMax); err != nil {
		return nil, warnings, err
	}
	v6 := familySpec{name: "IPv6", is4: false, defaultLen: 64, maxLen: 126, minBits: 124, bigNet: 62}
	if cfg.EnableIPv6 {
		if cfg.IPv6Network, cfg.IPv6SubnetLen, cfg.IPv6SubnetMin, cfg.IPv6SubnetMax, err = v6.parse(raw.IPv6Network, raw.IPv6SubnetLen, raw.IPv6SubnetMin, raw.IPv6SubnetMax); err != nil {
			return nil, warnings, err
		}
	} else if raw.IPv6Network != "" || raw.IPv6SubnetLen != 0 || raw.IPv6SubnetMin != "" || raw.IPv6SubnetMax != "" {
		warnings = append(warnings, "IPv6 settings are present but EnableIPv6 is false: no IPv6 subnets will be leased; set \"EnableIPv6\": true to use them")
	}
	return cfg, warnings, nil
}

func unknownFieldWarnings(fields map[string]json.RawMessage) []string {
	var w []string
	for k := range fields {
		if slices.ContainsFunc(knownFields, func(f string) bool { return strings.EqualFold(k, f) }) {
			continue
		}
		if why, ok := unsupportedFields[strings.ToLower(k)]; ok {
			w = append(w, fmt.Sprintf("field %q: %s", k, why))
			continue
		}
		w = append(w, fmt.Sprintf("unknown field %q is ignored; the closest known field is %q", k, suggest.Closest(k, knownFields)))
	}
	sort.Strings(w)
	return w
}

func jsonErr(err error) error { return JSONError(err, "") }

// JSONError turns an encoding/json error into a message that names the
// field (with prefix, e.g. "Backend.") and what it should hold.
func JSONError(err error, prefix string) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		field := prefix + te.Field
		if te.Field == "" {
			field = strings.TrimSuffix(prefix, ".")
			if field == "" {
				field = "net-conf"
			}
		}
		want := "a " + te.Type.String()
		switch te.Type.Kind() {
		case reflect.Int, reflect.Int64, reflect.Uint, reflect.Uint32, reflect.Float64:
			want = "a number"
		case reflect.Bool, reflect.Pointer:
			want = "true or false"
		case reflect.Map, reflect.Struct:
			want = "a JSON object"
		case reflect.String:
			want = "a string"
		}
		return fmt.Errorf("%s: expected %s, got a JSON %s", field, want, te.Value)
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Errorf("invalid JSON at byte %d: %w", se.Offset, err)
	}
	return err
}

// parseBackend reads Backend.Type as upstream does: no Backend at all
// means DefaultBackend; a Backend without a Type (or null) names no
// backend, which upstream refuses at start-up, and so do we; the type is
// matched in lower case.
func parseBackend(raw json.RawMessage) (string, json.RawMessage, error) {
	if len(raw) == 0 {
		return DefaultBackend, json.RawMessage(`{"Type":"` + DefaultBackend + `"}`), nil
	}
	trimmed := bytes.TrimSpace(raw)
	if trimmed[0] != '{' && !bytes.Equal(trimmed, []byte("null")) {
		return "", nil, errors.New(`Backend: must be an object like {"Type": "vxlan"}`)
	}
	var b struct{ Type *string }
	if err := json.Unmarshal(trimmed, &b); err != nil {
		return "", nil, JSONError(err, "Backend.")
	}
	if b.Type == nil || *b.Type == "" {
		return "", nil, errors.New(`Backend.Type: missing; name the backend, e.g. "Backend": {"Type": "vxlan"}, or leave Backend out for upstream's default, udp`)
	}
	return strings.ToLower(*b.Type), trimmed, nil
}

// familySpec holds the per-family limits that upstream flannel applies.
type familySpec struct {
	name       string // field name prefix: "" or "IPv6"
	is4        bool
	defaultLen int // subnet length for networks of bigNet bits or larger
	maxLen     int // longest subnet length
	minBits    int // longest (smallest) network prefix accepted
	bigNet     int
}

func (f familySpec) field(s string) string { return f.name + s }

func (f familySpec) family() string {
	if f.is4 {
		return "IPv4"
	}
	return "IPv6"
}

func (f familySpec) example() string {
	if f.is4 {
		return "10.244.0.0/16"
	}
	return "fd00:10:244::/56"
}

func (f familySpec) parse(network string, subnetLen int, minS, maxS string) (netip.Prefix, int, netip.Addr, netip.Addr, error) {
	var zp netip.Prefix
	var za netip.Addr
	fail := func(format string, args ...any) (netip.Prefix, int, netip.Addr, netip.Addr, error) {
		return zp, 0, za, za, fmt.Errorf(format, args...)
	}
	nf := f.field("Network")
	if network == "" {
		if f.is4 {
			return fail("Network: missing; set it to the pod network in CIDR form, e.g. \"Network\": %q", f.example())
		}
		return fail("IPv6Network: missing while EnableIPv6 is true; set it, e.g. \"IPv6Network\": %q, or set EnableIPv6 to false", f.example())
	}
	n, err := netip.ParsePrefix(network)
	if err != nil {
		return fail("%s: %q is not a CIDR prefix; use a form like %q", nf, network, f.example())
	}
	if n.Addr().Is4() != f.is4 || n.Addr().Is4In6() {
		if f.is4 {
			return fail("Network: %s is not an IPv4 prefix; IPv6 pod networks go in IPv6Network with \"EnableIPv6\": true", n)
		}
		return fail("IPv6Network: %s is not an IPv6 prefix; the IPv4 pod network goes in Network", n)
	}
	if n.Masked() != n {
		return fail("%s: %s has bits set beyond its /%d prefix; did you mean %s?", nf, n, n.Bits(), n.Masked())
	}
	if err := f.checkSpan(n); err != nil {
		return fail("%w", err)
	}
	if n.Bits() > f.minBits {
		return fail("%s: %s is too small; the smallest usable %s network is a /%d", nf, n, f.family(), f.minBits)
	}

	lf := f.field("SubnetLen")
	switch {
	case subnetLen == 0 && n.Bits() <= f.bigNet:
		subnetLen = f.defaultLen
	case subnetLen == 0:
		subnetLen = n.Bits() + 2
	case subnetLen < 0 || subnetLen > f.maxLen:
		return fail("%s: %d is out of range; it must be between %d (the Network's length + 2) and %d", lf, subnetLen, n.Bits()+2, f.maxLen)
	case subnetLen < n.Bits()+2:
		return fail("%s: %d leaves fewer than 4 subnets in %s; use at least %d (the Network's length + 2)", lf, subnetLen, n, n.Bits()+2)
	}

	first := nthSubnet(n.Addr(), subnetLen, big.NewInt(1)).Addr()
	last := lastSubnet(n, subnetLen).Addr()
	lo, err := f.bound("SubnetMin", minS, first, n, subnetLen)
	if err != nil {
		return fail("%w", err)
	}
	hi, err := f.bound("SubnetMax", maxS, last, n, subnetLen)
	if err != nil {
		return fail("%w", err)
	}
	if hi.Less(lo) {
		return fail("%s (%s) is below %s (%s); swap them or widen the range", f.field("SubnetMax"), hi, f.field("SubnetMin"), lo)
	}
	return n, subnetLen, lo, hi, nil
}

// bound parses SubnetMin or SubnetMax. Upstream accepts either a plain
// address or a CIDR string here; we accept both and use the address.
func (f familySpec) bound(field, s string, def netip.Addr, n netip.Prefix, l int) (netip.Addr, error) {
	name := f.field(field)
	if s == "" {
		return def, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		p, perr := netip.ParsePrefix(s)
		if perr != nil {
			return netip.Addr{}, fmt.Errorf("%s: %q is not an address; give the first address of a subnet, e.g. %q", name, s, def)
		}
		a = p.Addr()
	}
	if !n.Contains(a) {
		return netip.Addr{}, fmt.Errorf("%s: %s is outside %s; pick a subnet inside the network, e.g. %s", name, a, n, def)
	}
	if !aligned(a, l) {
		p, _ := a.Prefix(l)
		return netip.Addr{}, fmt.Errorf("%s: %s is not the start of a /%d subnet; use %s", name, a, l, p.Addr())
	}
	return a, nil
}

// SubnetFits reports whether sn is a subnet this config may lease for the
// family of sn: inside the network, of the right length, within min..max.
func (c *Config) SubnetFits(sn netip.Prefix) bool {
	if !sn.IsValid() {
		return false
	}
	if sn.Addr().Is4() {
		return c.EnableIPv4 && sn.Bits() == c.SubnetLen && c.Network.Contains(sn.Addr()) && sn.Masked() == sn &&
			!sn.Addr().Less(c.SubnetMin) && !c.SubnetMax.Less(sn.Addr())
	}
	return c.EnableIPv6 && sn.Bits() == c.IPv6SubnetLen && c.IPv6Network.Contains(sn.Addr()) && sn.Masked() == sn &&
		!sn.Addr().Less(c.IPv6SubnetMin) && !c.IPv6SubnetMax.Less(sn.Addr())
}

// effective is the JSON shape printed by `flanneld config check`.
type effective struct {
	EnableIPv4     bool
	EnableIPv6     bool
	Network        string
	SubnetLen      int
	SubnetMin      string
	SubnetMax      string
	IPv6Network    string `json:",omitempty"`
	IPv6SubnetLen  int    `json:",omitempty"`
	IPv6SubnetMin  string `json:",omitempty"`
	IPv6SubnetMax  string `json:",omitempty"`
	EnableNFTables bool   `json:",omitempty"`
	Backend        json.RawMessage
}

// Effective renders the config with defaults filled in. backend replaces
// the raw Backend object when non-nil (a backend's options with its own
// defaults filled in).
func (c *Config) Effective(backend any) ([]byte, error) {
	e := effective{
		EnableIPv4: c.EnableIPv4, EnableIPv6: c.EnableIPv6,
		Network: c.Network.String(), SubnetLen: c.SubnetLen,
		SubnetMin: c.SubnetMin.String(), SubnetMax: c.SubnetMax.String(),
		EnableNFTables: c.EnableNFTables, Backend: c.Backend,
	}
	if c.EnableIPv6 {
		e.IPv6Network, e.IPv6SubnetLen = c.IPv6Network.String(), c.IPv6SubnetLen
		e.IPv6SubnetMin, e.IPv6SubnetMax = c.IPv6SubnetMin.String(), c.IPv6SubnetMax.String()
	}
	if backend != nil {
		b, err := json.Marshal(backend)
		if err != nil {
			return nil, err
		}
		e.Backend = b
	}
	return json.MarshalIndent(e, "", "  ")
}
