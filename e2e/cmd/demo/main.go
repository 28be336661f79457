// Command demo runs flanneld on simulated hosts (network namespaces on this
// machine) with a real etcd, shows the leases in etcd, a host's routes and
// pods pinging across hosts, then tears everything down. Run it as root
// through `make demo` (which builds the binaries first).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/flanneld-go/flannel/e2e/testbed"
)

func main() {
	backend := flag.String("backend", "vxlan", "backend type to run: vxlan, host-gw, udp or wireguard (net-conf Backend.Type)")
	hosts := flag.Int("hosts", 3, "number of simulated hosts")
	pods := flag.Int("pods", 2, "pods per host")
	keep := flag.Bool("keep", false, "keep the testbed running until Ctrl-C, to explore it")
	switchTo := flag.String("switch-to", "host-gw", "backend to switch the running cluster to at the end, live, while the pods ping each other (\"\" for none; vxlan when -backend is host-gw)")
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "demo: needs root to create network namespaces; run it as root (sudo make demo)")
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	to := *switchTo
	if to == *backend && to == "host-gw" {
		to = "vxlan"
	}
	if err := run(ctx, *backend, to, *hosts, *pods, *keep); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func section(title string) { fmt.Printf("\n=== %s\n", title) }

func run(ctx context.Context, backend, switchTo string, nHosts, nPods int, keep bool) error {
	section(fmt.Sprintf("building a testbed: %d hosts on one L2 switch, etcd in the switch namespace", nHosts))
	tb, err := testbed.New(ctx, testbed.Options{Hosts: nHosts, Log: func(f string, a ...any) { fmt.Printf("  "+f+"\n", a...) }})
	if err != nil {
		return err
	}
	defer func() {
		section("tearing down")
		if err := tb.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "demo: cleanup:", err)
		}
		fmt.Println("  all namespaces, processes and files removed")
	}()

	conf := fmt.Sprintf(`{"Network":"10.244.0.0/16","Backend":{"Type":%q}}`, backend)
	section("network config: etcdctl put /coreos.com/network/config")
	fmt.Println("  " + conf)
	if err := tb.PutNetConfig(ctx, conf); err != nil {
		return err
	}
	section("starting flanneld on every host, then pods on each host's cni0 bridge")
	if err := tb.StartDaemons(ctx); err != nil {
		return fmt.Errorf("%w\n(daemon log of h1:\n%s)", err, tb.Hosts()[0].Log())
	}
	if err := tb.AddPodsAll(ctx, nPods); err != nil {
		return err
	}
	if err := showState(ctx, tb, backend); err != nil {
		return err
	}
	failed := pingAll(ctx, tb)
	if failed == 0 && switchTo != "" {
		if err := liveSwitch(ctx, tb, backend, switchTo); err != nil {
			return err
		}
	}
	if keep {
		section("testbed kept running; press Ctrl-C to tear it down")
		fmt.Printf("  explore with: ip netns exec %s-h1 ip route   (or %s-h1p1 ping <pod>)\n", tb.Prefix(), tb.Prefix())
		<-ctx.Done()
	}
	if failed > 0 {
		return fmt.Errorf("%d pings failed", failed)
	}
	return nil
}

// showState prints what the daemons made: the leases (flanneld leases and
// etcdctl), and the first host's subnet.env, routes, VXLAN entries and log.
func showState(ctx context.Context, tb *testbed.Testbed, backend string) error {
	h1 := tb.Hosts()[0]
	section("flanneld leases")
	out, err := h1.Exec(ctx, tb.FlanneldBin(), "leases", "--etcd-endpoints", tb.EtcdEndpoint())
	fmt.Print(indent(out))
	if err != nil {
		return err
	}
	section("etcdctl get --prefix /coreos.com/network")
	out, err = tb.Etcdctl(ctx, "get", "--prefix", "/coreos.com/network")
	fmt.Print(indent(out))
	if err != nil {
		return err
	}
	section("subnet.env of " + h1.Name)
	data, _ := os.ReadFile(h1.SubnetFile())
	fmt.Print(indent(string(data)))
	section("ip route on " + h1.Name)
	out, _ = h1.Exec(ctx, "ip", "route")
	fmt.Print(indent(out))
	if backend == "vxlan" {
		section("VXLAN neighbour and FDB entries on " + h1.Name)
		out, _ = h1.Exec(ctx, "sh", "-c", "ip neigh show dev flannel.1; bridge fdb show dev flannel.1")
		fmt.Print(indent(out))
	}
	if backend == "wireguard" {
		section("wg show flannel-wg on " + h1.Name + " (through the embedded device's UAPI socket)")
		out, err = h1.WGShow(ctx, "flannel-wg")
		if err != nil {
			return err
		}
		fmt.Print(indent(out))
	}
	section("flanneld log of " + h1.Name)
	fmt.Print(indent(h1.Log()))
	return nil
}

// pingAll pings every pod from every pod on another host, printing one
// line each, and returns how many failed.
func pingAll(ctx context.Context, tb *testbed.Testbed) (failed int) {
	section("pods pinging pods on other hosts")
	for _, h := range tb.Hosts() {
		for _, src := range h.Pods {
			for _, other := range tb.Hosts() {
				if other == h {
					continue
				}
				for _, dst := range other.Pods {
					start := time.Now()
					err := src.WaitPing(ctx, dst.Addr)
					status := fmt.Sprintf("ok (%v)", time.Since(start).Round(time.Millisecond))
					if err != nil {
						status, failed = "FAILED: "+err.Error(), failed+1
					}
					fmt.Printf("  %-5s %-15s -> %-5s %-15s %s\n", src.Name, src.Addr, dst.Name, dst.Addr, status)
				}
			}
		}
	}
	return failed
}

func indent(s string) string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return ""
	}
	return "  " + strings.ReplaceAll(s, "\n", "\n  ") + "\n"
}
