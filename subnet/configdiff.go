package subnet

import (
	"bytes"
	"encoding/json"
	"math/big"
	"net/netip"
	"reflect"
	"sort"
	"strconv"
	"strings"
)

// ConfigDiff is one field in which two net-confs differ, with both values
// as text ("" for a field that is unset, e.g. IPv6Network with IPv6 off,
// or a backend option one of them does not give).
type ConfigDiff struct {
	// Field is the net-conf field: "Network", "EnableIPv6", ...;
	// "Backend.Type" for the backend type and "Backend.<Option>" for each
	// backend option (as the documents spell it).
	Field, Old, New string
	// Live is set when running hosts can apply the change without a
	// restart: the backend and its options. The address plan and the
	// firewall mode are fixed for the life of a daemon (and the address
	// plan for the life of the leases).
	Live bool
}

// DiffConfig returns the fields in which new differs from old, in the
// order of the net-conf's fields, the backend last (its type, then its
// options by name). A config compared with itself, or with one that means
// the same (defaults spelled out, other key case, other spacing), has
// none. Either being nil gives none.
func DiffConfig(old, new *Config) []ConfigDiff {
	if old == nil || new == nil {
		return nil
	}
	var d []ConfigDiff
	add := func(field, o, n string) {
		if o != n {
			d = append(d, ConfigDiff{Field: field, Old: o, New: n})
		}
	}
	add("EnableIPv4", strconv.FormatBool(old.EnableIPv4), strconv.FormatBool(new.EnableIPv4))
	add("EnableIPv6", strconv.FormatBool(old.EnableIPv6), strconv.FormatBool(new.EnableIPv6))
	d = append(d, diffPlan("", addrPlan{old.Network, old.SubnetLen, old.SubnetMin, old.SubnetMax},
		addrPlan{new.Network, new.SubnetLen, new.SubnetMin, new.SubnetMax})...)
	d = append(d, diffPlan("IPv6", addrPlan{old.IPv6Network, old.IPv6SubnetLen, old.IPv6SubnetMin, old.IPv6SubnetMax},
		addrPlan{new.IPv6Network, new.IPv6SubnetLen, new.IPv6SubnetMin, new.IPv6SubnetMax})...)
	add("EnableNFTables", strconv.FormatBool(old.EnableNFTables), strconv.FormatBool(new.EnableNFTables))
	return append(d, diffBackend(old, new)...)
}

// addrPlan is one family's address plan: the network, the subnet length
// and the range hosts lease from.
type addrPlan struct {
	network   netip.Prefix
	subnetLen int
	min, max  netip.Addr
}

// diffPlan compares one family's plans; family prefixes the field names
// ("" or "IPv6"). When the network or the length changes, a bound that is
// on both sides its plan's default (what ParseConfig fills in when the
// document does not set it) is a consequence, not a change of its own,
// and is left out.
func diffPlan(family string, o, n addrPlan) []ConfigDiff {
	var d []ConfigDiff
	add := func(field, ov, nv string) {
		if ov != nv {
			d = append(d, ConfigDiff{Field: family + field, Old: ov, New: nv})
		}
	}
	add("Network", prefixText(o.network), prefixText(n.network))
	add("SubnetLen", lenText(o.subnetLen), lenText(n.subnetLen))
	oMin, oMax := o.defaultBounds()
	nMin, nMax := n.defaultBounds()
	moved := o.network != n.network || o.subnetLen != n.subnetLen
	if !moved || !oMin || !nMin {
		add("SubnetMin", addrText(o.min), addrText(n.min))
	}
	if !moved || !oMax || !nMax {
		add("SubnetMax", addrText(o.max), addrText(n.max))
	}
	return d
}

// defaultBounds reports whether min and max are the defaults of the plan's
// network and length (for a family that is off: unset).
func (p addrPlan) defaultBounds() (minDefault, maxDefault bool) {
	if !p.network.IsValid() {
		return !p.min.IsValid(), !p.max.IsValid()
	}
	n := p.network.Masked()
	if p.subnetLen <= n.Bits() || p.subnetLen > n.Addr().BitLen() {
		return false, false
	}
	return p.min == nthSubnet(n.Addr(), p.subnetLen, big.NewInt(1)).Addr(), p.max == lastSubnet(n, p.subnetLen).Addr()
}

// diffBackend compares the backends: the type as ParseConfig reads it (in
// lower case), the options as JSON values, their names without regard to
// case, as upstream and encoding/json read them.
func diffBackend(old, new *Config) []ConfigDiff {
	var d []ConfigDiff
	if old.BackendType != new.BackendType {
		d = append(d, ConfigDiff{Field: "Backend.Type", Old: old.BackendType, New: new.BackendType, Live: true})
	}
	oo, okOld := backendOptions(old.Backend)
	no, okNew := backendOptions(new.Backend)
	if !okOld || !okNew {
		// Not a JSON object (a Config not made by ParseConfig): compare
		// the texts.
		o, n := compactText(old.Backend), compactText(new.Backend)
		if o != n {
			d = append(d, ConfigDiff{Field: "Backend", Old: o, New: n, Live: true})
		}
		return d
	}
	folded := map[string]bool{}
	for k := range oo {
		folded[k] = true
	}
	for k := range no {
		folded[k] = true
	}
	keys := make([]string, 0, len(folded))
	for k := range folded {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		o, n := oo[k], no[k]
		if o.set == n.set && reflect.DeepEqual(o.value, n.value) {
			continue
		}
		d = append(d, ConfigDiff{Field: "Backend." + optionName(o, n), Old: o.text(), New: n.text(), Live: true})
	}
	return d
}

// backendOption is one option of a Backend object: its name as written,
// its JSON value decoded.
type backendOption struct {
	name  string
	value any
	set   bool
}

func (o backendOption) text() string {
	if !o.set {
		return ""
	}
	b, err := json.Marshal(o.value)
	if err != nil {
		return ""
	}
	return string(b)
}

// optionName is the name a diff reports for an option both may spell: the
// first in byte order, so that the report does not depend on which
// document is the old one.
func optionName(o, n backendOption) string {
	switch {
	case !o.set:
		return n.name
	case !n.set || o.name < n.name:
		return o.name
	}
	return n.name
}

// backendOptions reads a Backend object's members other than Type, keyed
// by their names in lower case. Of members whose names differ only in
// case, the last one counts, as when encoding/json decodes the object
// into a backend's options struct.
func backendOptions(raw json.RawMessage) (map[string]backendOption, bool) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, false
	}
	opts := map[string]backendOption{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, false
		}
		name, _ := t.(string)
		var v any
		if err := dec.Decode(&v); err != nil {
			return nil, false
		}
		if k := strings.ToLower(name); k != "type" {
			opts[k] = backendOption{name: name, value: v, set: true}
		}
	}
	return opts, true
}

func compactText(raw json.RawMessage) string {
	var b bytes.Buffer
	if json.Compact(&b, raw) != nil {
		return string(raw)
	}
	return b.String()
}

func prefixText(p netip.Prefix) string {
	if !p.IsValid() {
		return ""
	}
	return p.String()
}

func addrText(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

func lenText(n int) string {
	if n == 0 {
		return ""
	}
	return strconv.Itoa(n)
}

// Advice says what to do about a change of a field that does not apply
// live, in one sentence for an operator; "" for a live one.
func (d ConfigDiff) Advice() string {
	if d.Live {
		return ""
	}
	const renumber = " cannot change while hosts hold leases: restore it, or drain the cluster, delete the leases (under <prefix>/subnets/) and restart every host"
	const bounds = ": restart each host to apply it; a host whose subnet falls outside the new range then leases a new one, and its pods must be restarted to get addresses in it"
	switch d.Field {
	case "Network", "SubnetLen":
		return d.Field + renumber
	case "SubnetMin", "SubnetMax":
		return d.Field + bounds
	case "EnableIPv4":
		return "EnableIPv4: IPv6-only networks are not supported; keep it true"
	case "EnableIPv6":
		return "EnableIPv6: restart every host to turn IPv6 on or off; each then leases again with (or without) an IPv6 subnet and keeps its IPv4 subnet"
	case "IPv6Network", "IPv6SubnetLen", "IPv6SubnetMin", "IPv6SubnetMax":
		if d.Old == "" || d.New == "" {
			return d.Field + " comes and goes with EnableIPv6: restart every host to turn IPv6 on or off"
		}
		if d.Field == "IPv6SubnetMin" || d.Field == "IPv6SubnetMax" {
			return d.Field + bounds
		}
		return d.Field + strings.Replace(renumber, "hold leases", "hold IPv6 subnets", 1)
	case "EnableNFTables":
		return "EnableNFTables: restart each host to change the firewall mode"
	}
	return d.Field + ": restart every host to apply it"
}
