package subnet

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Which keys under <prefix>/subnets/ hold a subnet.
//
// A new lease is created in an etcd transaction guarded by "no key under
// subnets/ begins with <v4 address>-<SubnetLen>" (etcd compares the IPv4
// half of the key by prefix; see subnet/etcd). The listing that picks the
// subnet and that guard must agree, or a host picks a subnet whose
// creation can never succeed and retries forever. One rule decides it:
//
//   - A key whose name (what follows subnets/) is a SubnetKey in canonical
//     form and whose value is lease JSON is a lease. It holds its subnets.
//   - Every other key is malformed (Malformed). It holds the IPv4 subnet S
//     of length SubnetLen when its name begins with "<S's address>-<SubnetLen>"
//     (GuardedSubnet): exactly the keys that make the creation of S fail,
//     such as "10.244.3.0-24" with a bad value, "10.244.3.0-24garbage" or
//     "10.244.3.0-24/x". When its name is a SubnetKey (only the value is
//     bad) it holds that key's IPv6 subnet too. A malformed key whose name
//     does not begin so ("garbage", "10.244.3.0-025") holds nothing, and
//     the guard ignores it as well.
//
// A held subnet is never picked. A malformed key is never anyone's lease:
// it is not a peer and not reused; it is reported with the command that
// removes it (etcdctl del <key>).

// Malformed is a key under <prefix>/subnets/ that is not a lease.
type Malformed struct {
	Key         string // the full etcd key
	Name        string // the key without <prefix>/subnets/
	Err         error  // why it is not a lease
	ModRevision int64
}

// GuardedSubnet returns the IPv4 subnet of length bits whose creation a key
// named name (relative to subnets/) blocks: the subnet S such that name
// begins with "<S's address>-<bits>". ok is false when there is none.
func GuardedSubnet(name string, bits int) (sn netip.Prefix, ok bool) {
	addr, rest, found := strings.Cut(name, "-")
	if !found || !strings.HasPrefix(rest, strconv.Itoa(bits)) {
		return netip.Prefix{}, false
	}
	a, err := netip.ParseAddr(addr)
	if err != nil || !a.Is4() || a.String() != addr {
		return netip.Prefix{}, false
	}
	p, err := a.Prefix(bits)
	if err != nil || p.Addr() != a {
		return netip.Prefix{}, false
	}
	return p, true
}

// Holds returns the subnets m keeps from being leased in the network of c
// (each invalid when none): the IPv4 subnet its name guards, and the IPv6
// subnet of a well-formed name.
func (m Malformed) Holds(c *Config) (v4, v6 netip.Prefix) {
	v4, _ = GuardedSubnet(m.Name, c.SubnetLen)
	if _, k6, err := ParseSubnetKey(m.Name); err == nil {
		v6 = k6
	}
	return v4, v6
}

// String is for logs and errors: the key and why it is not a lease.
func (m Malformed) String() string { return fmt.Sprintf("%s (%v)", m.Key, m.Err) }
