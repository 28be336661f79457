package network

import (
	"bufio"
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/flanneld-go/flannel/subnet"
)

// SubnetEnv is the content of subnet.env, the contract with the flannel CNI
// plugin (and with anything else that sources the file).
type SubnetEnv struct {
	Network     netip.Prefix // FLANNEL_NETWORK
	Subnet      netip.Prefix // FLANNEL_SUBNET: this host's lease, as its first address
	IPv6Network netip.Prefix // FLANNEL_IPV6_NETWORK, when IPv6 is enabled
	IPv6Subnet  netip.Prefix // FLANNEL_IPV6_SUBNET
	MTU         int          // FLANNEL_MTU
	IPMasq      bool         // FLANNEL_IPMASQ
}

// EnvFor builds the file content for a lease.
func EnvFor(cfg *subnet.Config, l subnet.Lease, mtu int, ipMasq bool) SubnetEnv {
	e := SubnetEnv{Network: cfg.Network, Subnet: netip.PrefixFrom(subnet.FirstHost(l.Subnet), l.Subnet.Bits()), MTU: mtu, IPMasq: ipMasq}
	if cfg.EnableIPv6 && l.IPv6Subnet.IsValid() {
		e.IPv6Network = cfg.IPv6Network
		e.IPv6Subnet = netip.PrefixFrom(subnet.FirstHost(l.IPv6Subnet), l.IPv6Subnet.Bits())
	}
	return e
}

// Bytes renders the file.
func (e SubnetEnv) Bytes() []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "FLANNEL_NETWORK=%s\n", e.Network)
	fmt.Fprintf(&b, "FLANNEL_SUBNET=%s\n", e.Subnet)
	if e.IPv6Network.IsValid() {
		fmt.Fprintf(&b, "FLANNEL_IPV6_NETWORK=%s\n", e.IPv6Network)
		fmt.Fprintf(&b, "FLANNEL_IPV6_SUBNET=%s\n", e.IPv6Subnet)
	}
	fmt.Fprintf(&b, "FLANNEL_MTU=%d\n", e.MTU)
	fmt.Fprintf(&b, "FLANNEL_IPMASQ=%t\n", e.IPMasq)
	return b.Bytes()
}

// WriteSubnetEnv writes the file atomically: a temporary file in the same
// directory, synced, then renamed over the old one, so a reader never sees
// half a file.
func WriteSubnetEnv(path string, e SubnetEnv) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after a successful rename
	if _, err := f.Write(e.Bytes()); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", tmp, err)
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("syncing %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("renaming %s to %s: %w", tmp, path, err)
	}
	return nil
}

// ReadSubnetEnv parses a subnet file. Unknown lines are ignored.
func ReadSubnetEnv(path string) (SubnetEnv, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return SubnetEnv{}, err
	}
	return ParseSubnetEnv(data)
}

// ParseSubnetEnv parses subnet file content.
func ParseSubnetEnv(data []byte) (SubnetEnv, error) {
	var e SubnetEnv
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), "=")
		if !ok {
			continue
		}
		var err error
		switch k {
		case "FLANNEL_NETWORK":
			e.Network, err = parseEnvPrefix(v, true)
		case "FLANNEL_SUBNET":
			e.Subnet, err = parseEnvPrefix(v, true)
		case "FLANNEL_IPV6_NETWORK":
			e.IPv6Network, err = parseEnvPrefix(v, false)
		case "FLANNEL_IPV6_SUBNET":
			e.IPv6Subnet, err = parseEnvPrefix(v, false)
		case "FLANNEL_MTU":
			e.MTU, err = strconv.Atoi(v)
		case "FLANNEL_IPMASQ":
			e.IPMasq, err = strconv.ParseBool(v)
		}
		if err != nil {
			return e, fmt.Errorf("%s: %w", k, err)
		}
	}
	return e, sc.Err()
}

// parseEnvPrefix parses a prefix of the given family: an IPv6 subnet in
// FLANNEL_SUBNET would otherwise be asked for as the IPv4 subnet.
func parseEnvPrefix(v string, is4 bool) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(v)
	switch {
	case err != nil:
		return p, err
	case is4 && !p.Addr().Is4():
		return netip.Prefix{}, fmt.Errorf("%s is not an IPv4 prefix", v)
	case !is4 && (!p.Addr().Is6() || p.Addr().Is4In6()):
		return netip.Prefix{}, fmt.Errorf("%s is not an IPv6 prefix", v)
	}
	return p, nil
}

// Hint turns a previous subnet file into the subnets to ask for again.
func (e SubnetEnv) Hint() subnet.Hint {
	return subnet.Hint{Subnet: e.Subnet.Masked(), IPv6Subnet: e.IPv6Subnet.Masked()}
}
