package subnet

import (
	"math/big"
	"net/netip"
)

// Family-neutral prefix arithmetic. Everything here works on IPv4 and IPv6
// alike by treating an address as a big integer; it runs at config and
// allocation time, never on a packet path, so clarity beats speed.

func addrInt(a netip.Addr) *big.Int {
	return new(big.Int).SetBytes(a.AsSlice())
}

func intAddr(v *big.Int, is4 bool) netip.Addr {
	n := 16
	if is4 {
		n = 4
	}
	b := make([]byte, n)
	v.FillBytes(b)
	a, _ := netip.AddrFromSlice(b)
	return a
}

// subnetStep is the distance between two consecutive subnets of length l.
func subnetStep(is4 bool, l int) *big.Int {
	bits := 128
	if is4 {
		bits = 32
	}
	return new(big.Int).Lsh(big.NewInt(1), uint(bits-l))
}

// nthSubnet returns the subnet of length l that is n steps after first.
func nthSubnet(first netip.Addr, l int, n *big.Int) netip.Prefix {
	v := addrInt(first)
	v.Add(v, new(big.Int).Mul(n, subnetStep(first.Is4(), l)))
	return netip.PrefixFrom(intAddr(v, first.Is4()), l)
}

// subnetIndex returns how many subnets of length l lie between from and a.
func subnetIndex(from, a netip.Addr, l int) *big.Int {
	d := new(big.Int).Sub(addrInt(a), addrInt(from))
	return d.Div(d, subnetStep(a.Is4(), l))
}

// lastSubnet returns the last subnet of length l inside n.
func lastSubnet(n netip.Prefix, l int) netip.Prefix {
	count := new(big.Int).Lsh(big.NewInt(1), uint(l-n.Bits()))
	return nthSubnet(n.Addr(), l, count.Sub(count, big.NewInt(1)))
}

// aligned reports whether a is the first address of a subnet of length l.
func aligned(a netip.Addr, l int) bool {
	p, err := a.Prefix(l)
	return err == nil && p.Addr() == a
}

// FirstHost returns the first usable host address of p (network address +
// 1), which flannel gives to the bridge as the pods' gateway.
func FirstHost(p netip.Prefix) netip.Addr {
	return p.Masked().Addr().Next()
}
