package subnet

import (
	crand "crypto/rand"
	"errors"
	"fmt"
	"math/big"
	"math/rand/v2"
	"net/netip"
)

// ErrNoFreeSubnet means every subnet in the range is taken.
var ErrNoFreeSubnet = errors.New("no free subnet")

// Hint is the subnet this host held before (from its subnet file), tried
// after a lease under our PublicIP and before a random pick.
type Hint struct {
	Subnet     netip.Prefix
	IPv6Subnet netip.Prefix
}

// LeaseFits reports whether an existing lease can serve c as it is: its
// IPv4 subnet fits, and it has a fitting IPv6 subnet exactly when IPv6 is
// enabled.
func (c *Config) LeaseFits(l Lease) bool {
	if !c.SubnetFits(l.Subnet) {
		return false
	}
	if c.EnableIPv6 {
		return c.SubnetFits(l.IPv6Subnet)
	}
	return !l.IPv6Subnet.IsValid()
}

// PickSubnets chooses the subnets of a new lease for the host whose
// PublicIP is self, given every lease in etcd and every malformed key.
// Each family is chosen on its own (turning IPv6 on must not renumber the
// IPv4 subnet): the hinted subnet when it fits and is free, else a random
// free one in [SubnetMin, SubnetMax]. v6 is invalid unless IPv6 is
// enabled.
//
// A subnet is taken when a lease or a malformed key holds it (see
// Malformed for the rule the creation guard shares). Leases of self that
// are not reservations do not count as taken: the caller has reused or
// deleted them before asking for new subnets.
func (c *Config) PickSubnets(leases []Lease, malformed []Malformed, self netip.Addr, hint Hint) (v4, v6 netip.Prefix, err error) {
	taken := c.newTakenSet(leases, malformed, self)
	if c.SubnetFits(hint.Subnet) && !taken.v4[hint.Subnet] {
		v4 = hint.Subnet
	} else if v4, err = pickFree(c.Network, c.SubnetLen, c.SubnetMin, c.SubnetMax, taken.v4, "", taken); err != nil {
		return netip.Prefix{}, netip.Prefix{}, err
	}
	if !c.EnableIPv6 {
		return v4, netip.Prefix{}, nil
	}
	if c.SubnetFits(hint.IPv6Subnet) && !taken.v6[hint.IPv6Subnet] {
		v6 = hint.IPv6Subnet
	} else if v6, err = pickFree(c.IPv6Network, c.IPv6SubnetLen, c.IPv6SubnetMin, c.IPv6SubnetMax, taken.v6, "IPv6 ", taken); err != nil {
		return netip.Prefix{}, netip.Prefix{}, err
	}
	return v4, v6, nil
}

// takenSet is what others hold, and how many leases, reservations and
// malformed keys there are, for the exhaustion message.
type takenSet struct {
	v4, v6                      map[netip.Prefix]bool
	leased, reserved, malformed int
}

// newTakenSet collects the subnets held by others' leases and by malformed
// keys. Leases under our own PublicIP were handled (reused or deleted)
// before this is called.
func (c *Config) newTakenSet(leases []Lease, malformed []Malformed, self netip.Addr) takenSet {
	t := takenSet{v4: map[netip.Prefix]bool{}, v6: map[netip.Prefix]bool{}, malformed: len(malformed)}
	for _, l := range leases {
		if l.Reserved() {
			t.reserved++
		} else {
			t.leased++
		}
		if l.Attrs.PublicIP == self && !l.Reserved() {
			continue
		}
		t.v4[l.Subnet] = true
		// A lease of another length blocks the creation of the subnet its
		// name begins like, if any (the guard compares strings).
		if g, ok := GuardedSubnet(l.Key(), c.SubnetLen); ok {
			t.v4[g] = true
		}
		if l.IPv6Subnet.IsValid() {
			t.v6[l.IPv6Subnet] = true
		}
	}
	for _, m := range malformed {
		v4, v6 := m.Holds(c)
		if v4.IsValid() {
			t.v4[v4] = true
		}
		if v6.IsValid() {
			t.v6[v6] = true
		}
	}
	return t
}

// pickFree chooses a free subnet of length l in [lo, hi] uniformly at
// random when the range is small, else from a random starting point,
// skipping taken ones (at most len(taken)+1 steps).
func pickFree(n netip.Prefix, l int, lo, hi netip.Addr, taken map[netip.Prefix]bool, family string, ts takenSet) (netip.Prefix, error) {
	count := subnetIndex(lo, hi, l)
	count.Add(count, big.NewInt(1))
	exhausted := func() error {
		err := fmt.Errorf("%w in %s%s (SubnetLen %d): %d leased, %d reserved", ErrNoFreeSubnet, family, n, l, ts.leased, ts.reserved)
		if ts.malformed > 0 {
			err = fmt.Errorf("%w, %d malformed keys (logged with the command that deletes each)", err, ts.malformed)
		}
		return err
	}
	if count.IsInt64() && count.Int64() <= 4096 {
		var free []netip.Prefix
		for i := int64(0); i < count.Int64(); i++ {
			sn := nthSubnet(lo, l, big.NewInt(i))
			if !taken[sn] {
				free = append(free, sn)
			}
		}
		if len(free) == 0 {
			return netip.Prefix{}, exhausted()
		}
		return free[rand.IntN(len(free))], nil
	}
	// Large range: start at a random index below count.
	start, err := crand.Int(crand.Reader, count)
	if err != nil {
		return netip.Prefix{}, err
	}
	for i := 0; i <= len(taken); i++ {
		idx := new(big.Int).Add(start, big.NewInt(int64(i)))
		idx.Mod(idx, count)
		sn := nthSubnet(lo, l, idx)
		if !taken[sn] {
			return sn, nil
		}
	}
	return netip.Prefix{}, exhausted()
}
