package firewall

import (
	"net/netip"
	"slices"
)

const (
	masqChain   = "FLANNEL-POSTRTG"
	fwdChain    = "FLANNEL-FWD"
	masqComment = "flanneld masq"
	fwdComment  = "flanneld forward"

	// kubeProxyMark marks packets that kube-proxy masquerades itself;
	// masquerading them twice breaks on some kernels.
	kubeProxyMark = "0x4000/0x4000"
)

var (
	multicastV4 = netip.MustParsePrefix("224.0.0.0/4")
	multicastV6 = netip.MustParsePrefix("ff00::/8")
)

// chainSpec is one chain of ours and the jump that hooks it into a built-in
// chain. With on false both are to be removed and rules is unused.
type chainSpec struct {
	table, hook, chain string
	jump               []string
	rules              [][]string
	on                 bool
}

// masqSpec is ip-masq for the pair network, subnet: nat FLANNEL-POSTRTG.
func masqSpec(network, subnet, multicast netip.Prefix, randomFully, on bool) chainSpec {
	comment := []string{"-m", "comment", "--comment", masqComment}
	ret := []string{"-j", "RETURN"}
	masq := []string{"-j", "MASQUERADE"}
	if randomFully {
		masq = append(masq, "--random-fully")
	}
	spec := chainSpec{
		table: "nat", hook: "POSTROUTING", chain: masqChain, on: on,
		jump: slices.Concat(comment, []string{"-j", masqChain}),
	}
	if !on {
		return spec
	}
	n, s, m := network.Masked().String(), subnet.Masked().String(), multicast.String()
	spec.rules = [][]string{
		// kube-proxy masquerades what it marked.
		slices.Concat([]string{"-m", "mark", "--mark", kubeProxyMark}, comment, ret),
		// Pod to pod keeps the pod's address, both ways.
		slices.Concat([]string{"-s", s, "-d", n}, comment, ret),
		slices.Concat([]string{"-s", n, "-d", s}, comment, ret),
		// Outside traffic for a local pod keeps its source.
		slices.Concat([]string{"!", "-s", n, "-d", s}, comment, ret),
		// Pod to the outside world, multicast excepted.
		slices.Concat([]string{"-s", n, "!", "-d", m}, comment, masq),
		// Host or outside to a remote pod.
		slices.Concat([]string{"!", "-s", n, "-d", n}, comment, masq),
	}
	return spec
}

// forwardSpec accepts forwarded traffic from and to network: filter FLANNEL-FWD.
func forwardSpec(network netip.Prefix, on bool) chainSpec {
	comment := []string{"-m", "comment", "--comment", fwdComment}
	spec := chainSpec{
		table: "filter", hook: "FORWARD", chain: fwdChain, on: on,
		jump: slices.Concat(comment, []string{"-j", fwdChain}),
	}
	if !on {
		return spec
	}
	n := network.Masked().String()
	spec.rules = [][]string{
		slices.Concat([]string{"-s", n}, comment, []string{"-j", "ACCEPT"}),
		slices.Concat([]string{"-d", n}, comment, []string{"-j", "ACCEPT"}),
	}
	return spec
}
