package testbed

// Pods networked by real CNI plugins. The testbed creates the pod namespace;
// cnitool, run inside the host namespace as a container runtime would run
// it, executes the plugins of a network configuration (.conflist) of the
// host.
//
// Everything the plugins and cnitool write stays in the work directory:
//   - the configurations are in <workdir>/h<i>/cni/net.d (NETCONFPATH);
//   - the plugins' state directories (flannel's dataDir, host-local's
//     ipam.dataDir) are set by the configuration; the caller points them
//     into CNIDir;
//   - cnitool caches each ADD result under /var/lib/cni, a path it does not
//     let us change. It therefore runs in a private mount namespace where
//     <workdir>/h<i>/cni/var-lib is bind-mounted on /var/lib, as if each
//     host had its own disk; nothing is written to the machine's /var/lib.

import (
	"context"
	"crypto/sha512"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// CNIPod is a pod whose eth0 CNI plugins set up. The embedded Pod gives its
// name (h<i>c<j>), namespace, addresses and the Exec and Ping methods. It is
// not in Host.Pods.
type CNIPod struct {
	*Pod
	// Network is the name of the CNI network configuration, e.g. "cbr0".
	Network string
	// Result is cnitool's JSON output of the last successful ADD ("" after
	// DEL). Addr and Addr6 are taken from its "ips".
	Result string
}

// CNIBinDir returns the directory of the CNI plugins and cnitool: cni next
// to the flanneld binary, bin/cni by default (make cni-plugins).
func (tb *Testbed) CNIBinDir() string {
	return filepath.Join(filepath.Dir(tb.opts.FlanneldBin), "cni")
}

// CNIDir returns <workdir>/h<i>/cni, the host's CNI directory: net.d holds
// the network configurations, var-lib is the /var/lib cnitool and the
// plugins see; callers put the plugins' state directories here too.
func (h *Host) CNIDir() string { return filepath.Join(h.dir, "cni") }

// WriteCNIConfig writes conflist, a CNI network configuration list, to
// <CNIDir>/net.d/<network>.conflist.
func (h *Host) WriteCNIConfig(network, conflist string) error {
	dir := filepath.Join(h.CNIDir(), "net.d")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, network+".conflist"), []byte(conflist), 0o644)
}

// AddCNIPod creates the next pod namespace <prefix>-h<i>c<j> (lo up) and
// runs "cnitool add network" for it; env are extra variables for cnitool
// and the plugins, e.g. "CNI_ARGS=IgnoreUnknown=1;IP=10.244.1.2" (bridge
// refuses CNI_ARGS it does not know unless IgnoreUnknown is set). It
// registers, to run on Close before the namespace is deleted, "cnitool del
// network", which frees the pod's addresses and removes its veth. On error
// the namespace is left to that cleanup.
func (h *Host) AddCNIPod(ctx context.Context, network string, env ...string) (*CNIPod, error) {
	tb := h.tb
	tb.mu.Lock()
	defer tb.mu.Unlock()
	if err := tb.checkOpen(); err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(tb.CNIBinDir(), "cnitool")); err != nil {
		return nil, fmt.Errorf("testbed: %w (install the CNI plugins and cnitool: make cni-plugins)", err)
	}
	names, err := listNS(ctx)
	if err != nil {
		return nil, err
	}
	p := &CNIPod{Pod: &Pod{Host: h}, Network: network}
	for j := 1; ; j++ {
		p.Name = fmt.Sprintf("%sc%d", h.Name, j)
		p.NS = tb.ns(p.Name)
		if !slices.Contains(names, p.NS) {
			break
		}
	}
	if err := tb.addNS(ctx, p.NS); err != nil {
		return nil, err
	}
	tb.addCleanup("cnitool del "+network+" "+p.NS, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, err := h.cnitool(ctx, "del", network, p.NS)
		return err
	})
	if err := p.add(ctx, env); err != nil {
		return nil, err
	}
	return p, nil
}

// Add runs "cnitool add" again, after Del; env as for AddCNIPod.
func (p *CNIPod) Add(ctx context.Context, env ...string) error {
	tb := p.Host.tb
	tb.mu.Lock()
	defer tb.mu.Unlock()
	if err := tb.checkOpen(); err != nil {
		return err
	}
	return p.add(ctx, env)
}

// Del runs "cnitool del": the plugins remove eth0 and free the addresses.
// Addr, Addr6 and Result are cleared.
func (p *CNIPod) Del(ctx context.Context) error {
	tb := p.Host.tb
	tb.mu.Lock()
	defer tb.mu.Unlock()
	if err := tb.checkOpen(); err != nil {
		return err
	}
	if _, err := p.Host.cnitool(ctx, "del", p.Network, p.NS); err != nil {
		return err
	}
	p.Addr, p.Addr6, p.Result = netip.Addr{}, netip.Addr{}, ""
	tb.logf("testbed %s: pod %s (%s) on %s: cnitool del %s", tb.prefix, p.Name, p.NS, p.Host.Name, p.Network)
	return nil
}

// ContainerID returns the container ID cnitool gives the plugins for this
// pod: "cnitool-" and the first 10 bytes, in hex, of the SHA-512 of the
// namespace path. host-local writes it into its reservation files.
func (p *CNIPod) ContainerID() string {
	s := sha512.Sum512([]byte(nsPath(p.NS)))
	return fmt.Sprintf("cnitool-%x", s[:10])
}

// add runs cnitool add and takes the addresses from its result. The caller
// holds tb.mu.
func (p *CNIPod) add(ctx context.Context, env []string) error {
	out, err := p.Host.cnitool(ctx, "add", p.Network, p.NS, env...)
	if err != nil {
		return err
	}
	var res struct {
		IPs []struct {
			Address string `json:"address"`
		} `json:"ips"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		return fmt.Errorf("testbed: %s: cnitool add result %q: %w", p.Name, out, err)
	}
	p.Addr, p.Addr6 = netip.Addr{}, netip.Addr{}
	for _, ip := range res.IPs {
		a, err := netip.ParsePrefix(ip.Address)
		if err != nil {
			return fmt.Errorf("testbed: %s: cnitool add result %q: %w", p.Name, out, err)
		}
		if a.Addr().Is4() && !p.Addr.IsValid() {
			p.Addr = a.Addr()
		} else if a.Addr().Is6() && !p.Addr6.IsValid() {
			p.Addr6 = a.Addr()
		}
	}
	p.Result = out
	tb := p.Host.tb
	tb.logf("testbed %s: pod %s (%s) on %s: cnitool add %s: eth0 %s", tb.prefix, p.Name, p.NS, p.Host.Name, p.Network,
		words(addrString(p.Addr), addrString(p.Addr6)))
	return nil
}

// cnitool runs cnitool cmd (add, del, check) for network and pod namespace
// podNS inside the host namespace and returns its standard output. It runs
// in a private mount namespace with <CNIDir>/var-lib on /var/lib.
// Equivalent to: ip netns exec $NS unshare --mount sh -c
// 'mount --bind <CNIDir>/var-lib /var/lib && exec env CNI_PATH=<CNIBinDir>
// NETCONFPATH=<CNIDir>/net.d $env cnitool $cmd $network /var/run/netns/$podNS'
func (h *Host) cnitool(ctx context.Context, cmd, network, podNS string, env ...string) (string, error) {
	bin := h.tb.CNIBinDir()
	varLib := filepath.Join(h.CNIDir(), "var-lib")
	if err := os.MkdirAll(varLib, 0o755); err != nil {
		return "", err
	}
	argv := []string{"ip", "netns", "exec", h.NS, "unshare", "--mount", "--propagation", "private",
		"sh", "-c", `mount --bind "$1" /var/lib && shift && exec "$@"`, "sh", varLib,
		"env", "CNI_PATH=" + bin, "NETCONFPATH=" + filepath.Join(h.CNIDir(), "net.d")}
	argv = append(argv, env...)
	argv = append(argv, filepath.Join(bin, "cnitool"), cmd, network, nsPath(podNS))
	return runSplit(ctx, "", argv...)
}

// nsPath is the path of a named network namespace, as ip netns names it.
func nsPath(ns string) string { return "/var/run/netns/" + ns }

func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}
