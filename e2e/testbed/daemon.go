package testbed

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"
)

// StartDaemon starts flanneld in the host namespace with
//
//	--etcd-endpoints <EtcdEndpoint> --iface eth0 --subnet-file <SubnetFile> extraArgs...
//
// appending its output to LogPath, in a private mount namespace with
// WireGuardDir on /run/wireguard (so each host's embedded WireGuard
// devices have their own UAPI sockets, as on a real host). It returns
// once the process started; use WaitSubnetFile to wait for the lease.
// The daemon gets the environment of the test process without FLANNELD_*
// variables (see StartDaemonEnv), and WIREGUARD_KEY_FILE=WireGuardKeyFile.
func (h *Host) StartDaemon(ctx context.Context, extraArgs ...string) error {
	return h.StartDaemonEnv(ctx, nil, extraArgs...)
}

// StartDaemonEnv is StartDaemon with extra environment variables
// ("FLANNELD_IFACE=eth0"), for tests of the environment bindings.
func (h *Host) StartDaemonEnv(ctx context.Context, env []string, extraArgs ...string) error {
	return h.startDaemon(ctx, h.tb.opts.FlanneldBin, env, extraArgs)
}

// StartDaemonBin is StartDaemon with another flanneld binary: upstream
// flannel's, for the interoperability tests. It takes the same flags
// (upstream's parser accepts the double-dash form too).
func (h *Host) StartDaemonBin(ctx context.Context, bin string, extraArgs ...string) error {
	return h.startDaemon(ctx, bin, nil, extraArgs)
}

func (h *Host) startDaemon(ctx context.Context, bin string, env, extraArgs []string) error {
	tb := h.tb
	tb.mu.Lock()
	defer tb.mu.Unlock()
	if err := tb.checkOpen(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if h.daemon != nil {
		if ok, _ := h.daemon.exited(); !ok {
			return fmt.Errorf("testbed: %s: daemon already running", h.Name)
		}
	}
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("testbed: %w (build it: make build upstream-flanneld)", err)
	}
	argv := append([]string{bin,
		"--etcd-endpoints", tb.EtcdEndpoint(),
		"--iface", "eth0",
		"--subnet-file", h.SubnetFile(),
	}, extraArgs...)
	var fullEnv []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "FLANNELD_") {
			fullEnv = append(fullEnv, kv)
		}
	}
	wgDir := h.WireGuardDir()
	if err := os.MkdirAll(wgDir, 0o700); err != nil {
		return err
	}
	// The wrapper's tools by absolute path: a test may run the daemon
	// with a PATH that lacks them (TestNFTables: no iptables).
	tools := map[string]string{}
	for _, name := range []string{"unshare", "sh", "mkdir", "mount"} {
		p, err := exec.LookPath(name)
		if err != nil {
			return fmt.Errorf("testbed: %s is needed to give each daemon its own /run/wireguard: %w", name, err)
		}
		tools[name] = p
	}
	argv = append([]string{tools["unshare"], "--mount", "--propagation", "private", tools["sh"], "-c",
		tools["mkdir"] + ` -p /run/wireguard && ` + tools["mount"] + ` --bind "$1" /run/wireguard && shift && exec "$@"`, "sh", wgDir}, argv...)
	// Each host has its own WireGuard key (the default, /run/flannel/wgkey,
	// would be shared by every host of the testbed).
	fullEnv = append(fullEnv, "WIREGUARD_KEY_FILE="+h.WireGuardKeyFile())
	p, err := startProc(h.NS, h.LogPath(), append(fullEnv, env...), argv...)
	if err != nil {
		return err
	}
	h.daemon = p
	tb.addCleanup("kill flanneld of "+h.Name, p.kill)
	tb.logf("testbed %s: %s: started %s %s", tb.prefix, h.Name, bin, strings.Join(extraArgs, " "))
	return nil
}

func (h *Host) getDaemon() *proc {
	h.tb.mu.Lock()
	defer h.tb.mu.Unlock()
	return h.daemon
}

// StopDaemon stops the daemon gracefully: SIGTERM, then SIGKILL if it is
// still running after 10 s. It is a no-op when no daemon runs.
func (h *Host) StopDaemon() error {
	if d := h.getDaemon(); d != nil {
		h.tb.logf("testbed %s: %s: stopping flanneld", h.tb.prefix, h.Name)
		return d.stop(10 * time.Second)
	}
	return nil
}

// KillDaemon kills the daemon with SIGKILL (a crash: no cleanup, no lease
// revocation) and waits until it is gone. It is a no-op when no daemon runs.
func (h *Host) KillDaemon() error {
	if d := h.getDaemon(); d != nil {
		h.tb.logf("testbed %s: %s: killing flanneld", h.tb.prefix, h.Name)
		return d.kill()
	}
	return nil
}

// DaemonExited reports whether the last started daemon has exited and, if
// so, its Wait error: nil for exit status 0, an *exec.ExitError otherwise
// (for checks such as "a bad config makes flanneld exit non-zero").
func (h *Host) DaemonExited() (bool, error) {
	if d := h.getDaemon(); d != nil {
		return d.exited()
	}
	return false, nil
}

// WaitDaemonExit waits until the last started daemon exits and returns its
// exit code (-1 if a signal killed it).
func (h *Host) WaitDaemonExit(ctx context.Context) (int, error) {
	d := h.getDaemon()
	if d == nil {
		return 0, errors.New("testbed: " + h.Name + ": no daemon started")
	}
	return d.wait(ctx)
}

// StartDaemons starts the daemon on every host, waits for every subnet
// file, then adds Options.PodsPerHost pods per host (none if 0).
func (tb *Testbed) StartDaemons(ctx context.Context, extraArgs ...string) error {
	hosts := tb.Hosts()
	for _, h := range hosts {
		if err := h.StartDaemon(ctx, extraArgs...); err != nil {
			return err
		}
	}
	for _, h := range hosts {
		if _, err := h.WaitSubnetFile(ctx); err != nil {
			return err
		}
	}
	if tb.opts.PodsPerHost > 0 {
		return tb.AddPodsAll(ctx, tb.opts.PodsPerHost)
	}
	return nil
}

// AddPodsAll adds n pods on every host.
func (tb *Testbed) AddPodsAll(ctx context.Context, n int) error {
	for _, h := range tb.Hosts() {
		if err := h.AddPods(ctx, n); err != nil {
			return err
		}
	}
	return nil
}

// FlanneldBin is the path of the flanneld binary the testbed runs, for
// running its subcommands (flanneld leases) in a namespace.
func (tb *Testbed) FlanneldBin() string { return tb.opts.FlanneldBin }

// DaemonPID returns the process id of the running daemon (0 when none
// runs), for reading its CPU time and memory from /proc.
func (h *Host) DaemonPID() int {
	if d := h.getDaemon(); d != nil {
		if ok, _ := d.exited(); !ok {
			return d.cmd.Process.Pid
		}
	}
	return 0
}
