package firewall

import (
	"fmt"
	"net/netip"
)

// RuleConfig is the whole desired firewall state of a host.
type RuleConfig struct {
	// Network is the cluster's IPv4 network, Subnet this host's lease in it.
	Network, Subnet netip.Prefix
	// IPv6Network and IPv6Subnet are the IPv6 pair, both zero when IPv6 is
	// off (ip6tables is then left alone).
	IPv6Network, IPv6Subnet netip.Prefix
	// Masquerade turns on ip-masq (nat FLANNEL-POSTRTG).
	Masquerade bool
	// Forward turns on the ACCEPT rules for the Network (filter FLANNEL-FWD).
	Forward bool
	// NoRandomFully leaves --random-fully out of the MASQUERADE rules
	// (--ip-masq-fully-random-disable); otherwise it is there whenever
	// iptables supports it.
	NoRandomFully bool
}

func (c RuleConfig) validate() error {
	if err := checkPair("IPv4", c.Network, c.Subnet, true); err != nil {
		return err
	}
	if !c.IPv6Network.IsValid() && !c.IPv6Subnet.IsValid() {
		return nil
	}
	return checkPair("IPv6", c.IPv6Network, c.IPv6Subnet, false)
}

func checkPair(fam string, network, subnet netip.Prefix, v4 bool) error {
	for _, p := range []netip.Prefix{network, subnet} {
		if !p.IsValid() || p.Addr().Is4() != v4 || p.Addr().Is4In6() {
			return fmt.Errorf("firewall config: %s network %v and subnet %v must both be valid %s prefixes", fam, network, subnet, fam)
		}
	}
	if subnet.Bits() < network.Bits() || !network.Contains(subnet.Addr()) {
		return fmt.Errorf("firewall config: %s subnet %v is not inside network %v", fam, subnet, network)
	}
	return nil
}
