package testbed

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Pod is a namespace <prefix>-h<i>p<j> with eth0 on the host's cni0 bridge
// and a default route via the bridge address.
type Pod struct {
	Name  string     // "h1p1"
	NS    string     // "flt3a9c1-h1p1"
	Addr  netip.Addr // from FLANNEL_SUBNET
	Addr6 netip.Addr // from FLANNEL_IPV6_SUBNET; invalid when the file has none
	Host  *Host
}

// ReadSubnetFile parses a subnet file: KEY=VALUE lines, blank lines and
// comments skipped, optional quotes around values removed.
func ReadSubnetFile(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	env := map[string]string{}
	for line := range strings.Lines(string(b)) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("%s: line %q is not KEY=VALUE", path, line)
		}
		if uq, err := strconv.Unquote(v); err == nil {
			v = uq
		}
		env[strings.TrimSpace(k)] = v
	}
	return env, nil
}

// podNet is what pods need from the subnet file: the bridge (gateway)
// address with the subnet length, per family, and the MTU.
type podNet struct {
	gw4, gw6 netip.Prefix // invalid when absent
	mtu      int
}

func readPodNet(path string) (podNet, error) {
	env, err := ReadSubnetFile(path)
	if err != nil {
		return podNet{}, err
	}
	var n podNet
	for key, dst := range map[string]*netip.Prefix{"FLANNEL_SUBNET": &n.gw4, "FLANNEL_IPV6_SUBNET": &n.gw6} {
		if v := env[key]; v != "" {
			if *dst, err = netip.ParsePrefix(v); err != nil {
				return podNet{}, fmt.Errorf("%s: %s: %w", path, key, err)
			}
		}
	}
	if !n.gw4.IsValid() && !n.gw6.IsValid() {
		return podNet{}, fmt.Errorf("%s: neither FLANNEL_SUBNET nor FLANNEL_IPV6_SUBNET", path)
	}
	n.mtu = 1500
	if v := env["FLANNEL_MTU"]; v != "" {
		if n.mtu, err = strconv.Atoi(v); err != nil {
			return podNet{}, fmt.Errorf("%s: FLANNEL_MTU: %w", path, err)
		}
	}
	return n, nil
}

// AddPods adds n pods to the host. It reads the subnet file, creates bridge
// cni0 (up, the FLANNEL_SUBNET and FLANNEL_IPV6_SUBNET addresses, mtu
// FLANNEL_MTU) if missing, then per pod a namespace <prefix>-h<i>p<j> with
// eth0 (peer vp<j> on cni0), the next free address of the subnet (.2, .3,
// ...; ::2, ::3, ...) and a default route via the cni0 address. It first
// waits for the daemon's subnet file, so it can follow StartDaemon at once.
func (h *Host) AddPods(ctx context.Context, n int) error {
	if _, err := h.WaitSubnetFile(ctx); err != nil {
		return err
	}
	tb := h.tb
	tb.mu.Lock()
	defer tb.mu.Unlock()
	if err := tb.checkOpen(); err != nil {
		return err
	}
	pn, err := readPodNet(h.SubnetFile())
	if err != nil {
		return fmt.Errorf("testbed: %s: %w", h.Name, err)
	}
	if err := h.ensureCNI0(ctx, pn); err != nil {
		return err
	}
	for range n {
		if err := h.addPod(ctx, pn); err != nil {
			return err
		}
	}
	return nil
}

// ensureCNI0 creates cni0 if missing and makes sure it is up with the lease
// addresses and MTU. The caller holds tb.mu.
func (h *Host) ensureCNI0(ctx context.Context, pn podNet) error {
	if _, err := h.Exec(ctx, "ip", "link", "show", "cni0"); err != nil {
		if !isNotExist(err) {
			return err
		}
		if err := ipn(ctx, h.NS, "link", "add", "cni0", "type", "bridge"); err != nil {
			return err
		}
	}
	if err := ipn(ctx, h.NS, "link", "set", "cni0", "mtu", strconv.Itoa(pn.mtu), "up"); err != nil {
		return err
	}
	return addAddrs(ctx, h.NS, "cni0", prefixString(pn.gw4), prefixString(pn.gw6))
}

// addPod adds the next pod. The caller holds tb.mu.
func (h *Host) addPod(ctx context.Context, pn podNet) error {
	j := len(h.Pods) + 1
	p := &Pod{Name: fmt.Sprintf("%sp%d", h.Name, j), Host: h}
	p.NS = h.tb.ns(p.Name)
	var err error
	if pn.gw4.IsValid() {
		if p.Addr, err = h.freeAddr(pn.gw4, func(p *Pod) netip.Addr { return p.Addr }); err != nil {
			return err
		}
	}
	if pn.gw6.IsValid() {
		if p.Addr6, err = h.freeAddr(pn.gw6, func(p *Pod) netip.Addr { return p.Addr6 }); err != nil {
			return err
		}
	}
	if err := h.tb.addNS(ctx, p.NS); err != nil {
		return err
	}
	port, mtu := fmt.Sprintf("vp%d", j), strconv.Itoa(pn.mtu)
	if err := ipn(ctx, h.NS, "link", "add", port, "mtu", mtu, "type", "veth", "peer", "name", "eth0", "mtu", mtu, "netns", p.NS); err != nil {
		return err
	}
	if err := ipn(ctx, h.NS, "link", "set", port, "master", "cni0", "up"); err != nil {
		return err
	}
	if err := ipn(ctx, p.NS, "link", "set", "eth0", "up"); err != nil {
		return err
	}
	var a4, a6 string
	if p.Addr.IsValid() {
		a4 = netip.PrefixFrom(p.Addr, pn.gw4.Bits()).String()
	}
	if p.Addr6.IsValid() {
		a6 = netip.PrefixFrom(p.Addr6, pn.gw6.Bits()).String()
	}
	if err := addAddrs(ctx, p.NS, "eth0", a4, a6); err != nil {
		return err
	}
	if p.Addr.IsValid() {
		if err := ipn(ctx, p.NS, "route", "add", "default", "via", pn.gw4.Addr().String()); err != nil {
			return err
		}
	}
	if p.Addr6.IsValid() {
		if err := ipn(ctx, p.NS, "-6", "route", "add", "default", "via", pn.gw6.Addr().String()); err != nil {
			return err
		}
	}
	h.Pods = append(h.Pods, p)
	h.tb.logf("testbed %s: pod %s (%s) on %s: eth0 %s", h.tb.prefix, p.Name, p.NS, h.Name, words(a4, a6))
	return nil
}

// freeAddr returns the first address after the gateway of gw that no pod of
// the host uses, within the subnet and below its broadcast address.
func (h *Host) freeAddr(gw netip.Prefix, of func(*Pod) netip.Addr) (netip.Addr, error) {
	subnet := gw.Masked()
	for a := gw.Addr().Next(); subnet.Contains(a); a = a.Next() {
		if gw.Addr().Is4() && !subnet.Contains(a.Next()) {
			break // broadcast
		}
		used := false
		for _, p := range h.Pods {
			if of(p) == a {
				used = true
				break
			}
		}
		if !used {
			return a, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("testbed: %s: no free address in %s", h.Name, subnet)
}

func prefixString(p netip.Prefix) string {
	if !p.IsValid() {
		return ""
	}
	return p.String()
}

// Exec runs argv inside the pod namespace and returns the combined output;
// the error includes the command and the output.
// Equivalent to: ip netns exec $NS $argv
func (p *Pod) Exec(ctx context.Context, argv ...string) (string, error) {
	return execIn(ctx, p.NS, argv...)
}

// Ping sends count pings to dst (ping -c count -W 1 -i 0.2, with -6 for an
// IPv6 dst) and fails, with the output, unless every one is answered.
func (p *Pod) Ping(ctx context.Context, dst netip.Addr, count int) error {
	return ping(ctx, p.NS, dst, count)
}

// WaitPing pings dst once per attempt until one is answered or ctx is done,
// for paths that converge (routes being installed by a daemon).
func (p *Pod) WaitPing(ctx context.Context, dst netip.Addr) error {
	return waitPing(ctx, p.NS, dst)
}

var pingStats = regexp.MustCompile(`(\d+) packets transmitted, (\d+) (packets )?received`)

// ping runs ping in ns. ping exits 0 when some but not all replies came
// back, so the summary line is checked.
func ping(ctx context.Context, ns string, dst netip.Addr, count int) error {
	argv := []string{"ping", "-c", strconv.Itoa(count), "-W", "1", "-i", "0.2"}
	if dst.Is6() {
		argv = append(argv, "-6")
	}
	argv = append(argv, dst.String())
	out, err := execIn(ctx, ns, argv...)
	if err != nil {
		return err
	}
	m := pingStats.FindStringSubmatch(out)
	if m == nil || m[1] != m[2] {
		return fmt.Errorf("ip netns exec %s %s: loss:\n%s", ns, quote(argv), out)
	}
	return nil
}

func waitPing(ctx context.Context, ns string, dst netip.Addr) error {
	for {
		err := ping(ctx, ns, dst, 1)
		if err == nil {
			return nil
		}
		if serr := sleep(ctx, 100*time.Millisecond); serr != nil {
			return fmt.Errorf("%w; last: %w", serr, err)
		}
	}
}

// Start runs argv in the background inside the pod namespace (a server for
// a transfer test, say), its output appended to <host dir>/<pod>-<argv0>.log.
// The returned stop kills it; Close kills it too if the test did not.
// Equivalent to: ip netns exec $NS $argv &
func (p *Pod) Start(ctx context.Context, argv ...string) (stop func(), err error) {
	tb := p.Host.tb
	tb.mu.Lock()
	defer tb.mu.Unlock()
	if err := tb.checkOpen(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	logPath := filepath.Join(p.Host.dir, p.Name+"-"+filepath.Base(argv[0])+".log")
	pr, err := startProc(p.NS, logPath, nil, argv...)
	if err != nil {
		return nil, err
	}
	tb.addCleanup("kill "+argv[0]+" in "+p.Name, pr.kill)
	return func() { _ = pr.kill() }, nil
}
