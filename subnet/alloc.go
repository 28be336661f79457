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
// PublicIP is self, given every lease in etcd. Each family is chosen on its
// own (turning IPv6 on must not renumber the IPv4 subnet): the hinted
// subnet when it fits and is free, else a random free one in
// [SubnetMin, SubnetMax]. v6 is invalid unless IPv6 is enabled.
//
// Leases of self that are not reservations do not count as taken: the
// caller has reused or deleted them before asking for new subnets.
func (c *Config) PickSubnets(leases []Lease, self netip.Addr, hint Hint) (v4, v6 netip.Prefix, err error) {
	taken := newTakenSet(leases, self)
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

// takenSet is what other hosts hold, and how many leases and reservations
// there are, for the exhaustion message.
type takenSet struct {
	v4, v6           map[netip.Prefix]bool
	leased, reserved int
}

// newTakenSet collects the subnets held by others. Leases under our own
// PublicIP were handled (reused or deleted) before this is called.
func newTakenSet(leases []Lease, self netip.Addr) takenSet {
	t := takenSet{v4: map[netip.Prefix]bool{}, v6: map[netip.Prefix]bool{}}
	for _, l := range leases {
		if l.Attrs.PublicIP == self && !l.Reserved() {
			continue
		}
		t.v4[l.Subnet] = true
		if l.IPv6Subnet.IsValid() {
			t.v6[l.IPv6Subnet] = true
		}
	}
	for _, l := range leases {
		if l.Reserved() {
			t.reserved++
		} else {
			t.leased++
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
		return fmt.Errorf("%w in %s%s (SubnetLen %d): %d leased, %d reserved", ErrNoFreeSubnet, family, n, l, ts.leased, ts.reserved)
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
