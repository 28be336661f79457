package subnet

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"path"
	"regexp"
	"strconv"
	"time"

	"github.com/flanneld-go/flannel/internal/jsonobj"
)

// LeaseAttrs is the value stored under a subnet key, in upstream flannel's
// JSON shape:
//
//	{"PublicIP":"192.168.50.11","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"..."},"HostID":"..."}
//
// HostID is ours, not upstream's: upstream hosts ignore it when they read a
// lease and leave it out when they write one.
type LeaseAttrs struct {
	PublicIP      netip.Addr // the host's underlay IPv4 address
	PublicIPv6    netip.Addr // the host's underlay IPv6 address; invalid when none
	BackendType   string
	BackendData   json.RawMessage // backend specific, e.g. {"VNI":1,"VtepMAC":"..."}
	BackendV6Data json.RawMessage // the same for the IPv6 device (vxlan dual-stack)
	// HostID is the identity of the host that holds the lease ("" when
	// the writer had none: an upstream host, an older version of ours, an
	// operator's reservation). A host never takes a lease under its
	// PublicIP whose HostID is another's.
	HostID string
}

// wireAttrs fixes the field order and null handling of the JSON form.
type wireAttrs struct {
	PublicIP      string
	PublicIPv6    *string
	BackendType   string          `json:",omitempty"`
	BackendData   json.RawMessage `json:",omitempty"`
	BackendV6Data json.RawMessage `json:",omitempty"`
	HostID        string          `json:",omitempty"`
}

// readPlain reads b as encoding/json would into w when every member is
// one of w's fields by its exact name with a plain value (see jsonobj):
// the form every writer of leases uses, read without reflection.
func (w *wireAttrs) readPlain(b []byte) bool {
	return jsonobj.Members(b, func(key, val []byte) bool {
		var ok bool
		switch string(key) {
		case "PublicIP":
			w.PublicIP, ok = jsonobj.String(val)
		case "PublicIPv6":
			if jsonobj.IsNull(val) {
				w.PublicIPv6, ok = nil, true
			} else {
				var s string
				s, ok = jsonobj.String(val)
				w.PublicIPv6 = &s
			}
		case "BackendType":
			w.BackendType, ok = jsonobj.String(val)
		case "BackendData":
			w.BackendData, ok = append(json.RawMessage(nil), val...), true
		case "BackendV6Data":
			w.BackendV6Data, ok = append(json.RawMessage(nil), val...), true
		case "HostID":
			w.HostID, ok = jsonobj.String(val)
		}
		return ok
	})
}

// MarshalJSON writes the upstream-compatible form.
func (a LeaseAttrs) MarshalJSON() ([]byte, error) {
	w := wireAttrs{BackendType: a.BackendType, BackendData: a.BackendData, BackendV6Data: a.BackendV6Data, HostID: a.HostID}
	w.PublicIP = "0.0.0.0"
	if a.PublicIP.IsValid() {
		w.PublicIP = a.PublicIP.String()
	}
	if a.PublicIPv6.IsValid() {
		s := a.PublicIPv6.String()
		w.PublicIPv6 = &s
	}
	return json.Marshal(w)
}

// UnmarshalJSON reads the upstream form and checks the addresses.
func (a *LeaseAttrs) UnmarshalJSON(b []byte) error {
	var w wireAttrs
	if !w.readPlain(b) {
		w = wireAttrs{}
		if err := json.Unmarshal(b, &w); err != nil {
			return err
		}
	}
	var out LeaseAttrs
	ip, err := netip.ParseAddr(w.PublicIP)
	if err != nil || !ip.Is4() {
		return fmt.Errorf("PublicIP %q is not an IPv4 address", w.PublicIP)
	}
	out.PublicIP = ip
	if w.PublicIPv6 != nil && *w.PublicIPv6 != "" {
		ip6, err := netip.ParseAddr(*w.PublicIPv6)
		if err != nil || !ip6.Is6() || ip6.Is4In6() || ip6.Zone() != "" {
			return fmt.Errorf("PublicIPv6 %q is not an IPv6 address (without a zone)", *w.PublicIPv6)
		}
		out.PublicIPv6 = ip6
	}
	out.BackendType = w.BackendType
	out.HostID = w.HostID
	out.BackendData = nullToEmpty(w.BackendData)
	out.BackendV6Data = nullToEmpty(w.BackendV6Data)
	*a = out
	return nil
}

func nullToEmpty(m json.RawMessage) json.RawMessage {
	if len(m) == 0 || bytes.Equal(bytes.TrimSpace(m), []byte("null")) {
		return nil
	}
	return m
}

// Equal reports whether two attribute sets are the same.
func (a LeaseAttrs) Equal(b LeaseAttrs) bool {
	return a.PublicIP == b.PublicIP && a.PublicIPv6 == b.PublicIPv6 && a.BackendType == b.BackendType && a.HostID == b.HostID &&
		jsonEqual(a.BackendData, b.BackendData) && jsonEqual(a.BackendV6Data, b.BackendV6Data)
}

// jsonEqual compares two JSON texts in the form encoding/json writes them
// (compact, with <, >, & and U+2028/U+2029 escaped), so a value equals
// itself after a write and a read.
func jsonEqual(a, b json.RawMessage) bool {
	if len(a) == 0 || len(b) == 0 {
		return len(a) == len(b)
	}
	if bytes.Equal(a, b) {
		// The usual case (a lease compared with itself, read again), and
		// the comparison of every peer in each full reconcile: without
		// the four buffers below.
		return true
	}
	var ca, cb bytes.Buffer
	if json.Compact(&ca, a) != nil || json.Compact(&cb, b) != nil {
		return bytes.Equal(a, b)
	}
	var ea, eb bytes.Buffer
	json.HTMLEscape(&ea, ca.Bytes())
	json.HTMLEscape(&eb, cb.Bytes())
	return bytes.Equal(ea.Bytes(), eb.Bytes())
}

// Lease is one host's subnet(s) as stored in etcd.
type Lease struct {
	Subnet     netip.Prefix // IPv4 subnet
	IPv6Subnet netip.Prefix // invalid when the lease has no IPv6 part
	Attrs      LeaseAttrs
	// Expiration is when the etcd lease runs out; zero for a reservation
	// (a key with no etcd lease attached), which never expires.
	Expiration time.Time

	// EtcdLeaseID is the etcd lease the key is attached to, 0 for a
	// reservation.
	EtcdLeaseID int64
	// ModRevision is the key's mod revision when it was read, the guard of
	// a later rewrite.
	ModRevision int64
	// CreateRevision is the etcd revision that created the key: of two
	// leases that conflict, the older (lower) one wins, the same on every
	// host. Zero when unknown.
	CreateRevision int64
}

// Reserved reports whether the lease is a permanent reservation.
func (l Lease) Reserved() bool { return l.EtcdLeaseID == 0 }

// Key is the last element of the lease's etcd key, e.g. "10.244.3.0-24" or
// "10.244.3.0-24&fd00:10:244:3::-64".
func (l Lease) Key() string { return SubnetKey(l.Subnet, l.IPv6Subnet) }

// String is for logs: "10.244.3.0/24" or "10.244.3.0/24+fd00:10:244:3::/64".
func (l Lease) String() string {
	if l.IPv6Subnet.IsValid() {
		return l.Subnet.String() + "+" + l.IPv6Subnet.String()
	}
	return l.Subnet.String()
}

// SubnetKey formats a key element in upstream's layout: the address and
// length joined by "-", the IPv6 part after "&".
func SubnetKey(v4, v6 netip.Prefix) string {
	k := v4.Addr().String() + "-" + strconv.Itoa(v4.Bits())
	if v6.IsValid() {
		k += "&" + v6.Addr().String() + "-" + strconv.Itoa(v6.Bits())
	}
	return k
}

var keyRE = regexp.MustCompile(`^(\d+\.\d+\.\d+\.\d+)-(\d+)(?:&([0-9a-fA-F:.]+)-(\d+))?$`)

// ParseSubnetKey parses a key element made by SubnetKey, and only that
// form: no leading zeros, IPv6 in its canonical (RFC 5952) form.
func ParseSubnetKey(s string) (v4, v6 netip.Prefix, err error) {
	m := keyRE.FindStringSubmatch(s)
	if m == nil {
		return v4, v6, fmt.Errorf("subnet key %q is not of the form 10.244.3.0-24[&fd00::-64]", s)
	}
	if v4, err = keyPrefix(m[1], m[2], true); err != nil {
		return netip.Prefix{}, netip.Prefix{}, fmt.Errorf("subnet key %q: %w", s, err)
	}
	if m[3] != "" {
		if v6, err = keyPrefix(m[3], m[4], false); err != nil {
			return netip.Prefix{}, netip.Prefix{}, fmt.Errorf("subnet key %q: %w", s, err)
		}
	}
	// Only the form SubnetKey writes (upstream's too) is a key: another
	// spelling of the same subnets (10.244.3.0-024, an upper-case or
	// zero-padded IPv6 half) would be a second etcd key that every host
	// took for the first one, replacing its owner's lease; and the creation
	// guard compares keys as strings (see GuardedSubnet).
	if c := SubnetKey(v4, v6); c != s {
		return netip.Prefix{}, netip.Prefix{}, fmt.Errorf("subnet key %q is not in canonical form (%q)", s, c)
	}
	return v4, v6, nil
}

// DecodeLease makes a lease of an etcd key, whose last path element is a
// SubnetKey, and its value, LeaseAttrs JSON; etcdLeaseID and modRevision
// are the key's, as etcd reports them.
func DecodeLease(key string, value []byte, etcdLeaseID, modRevision int64) (Lease, error) {
	v4, v6, err := ParseSubnetKey(path.Base(key))
	if err != nil {
		return Lease{}, err
	}
	// UnmarshalJSON directly: json.Unmarshal would validate the value,
	// allocate a decoder state and call it with the same bytes.
	var attrs LeaseAttrs
	if err := attrs.UnmarshalJSON(value); err != nil {
		return Lease{}, fmt.Errorf("value is not lease JSON: %w", err)
	}
	return Lease{Subnet: v4, IPv6Subnet: v6, Attrs: attrs, EtcdLeaseID: etcdLeaseID, ModRevision: modRevision}, nil
}

func keyPrefix(addr, bits string, is4 bool) (netip.Prefix, error) {
	a, err := netip.ParseAddr(addr)
	if err != nil || a.Is4() != is4 || a.Is4In6() {
		return netip.Prefix{}, fmt.Errorf("bad address %q", addr)
	}
	n, err := strconv.Atoi(bits)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("bad length %q", bits)
	}
	p, err := a.Prefix(n)
	if err != nil || p.Addr() != a {
		return netip.Prefix{}, fmt.Errorf("%s/%s is not a subnet address", addr, bits)
	}
	return p, nil
}
