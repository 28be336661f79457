package testbed

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// netConfigKey is where flanneld reads the network configuration under its
// default etcd prefix.
const netConfigKey = "/coreos.com/network/config"

// EtcdEndpoint returns the client URL of etcd, "http://192.168.50.1:2379"
// ("https://..." with Options.EtcdTLS), reachable from every host namespace
// (segment 2 through the router).
func (tb *Testbed) EtcdEndpoint() string {
	if tb.opts.EtcdTLS {
		return etcdEndpointTLS
	}
	return etcdEndpoint
}

// Etcdctl runs etcdctl with --endpoints set to the testbed etcd, inside the
// switch namespace, and returns its standard output. With Options.EtcdTLS
// it passes the client certificate, after EnableEtcdAuth the root user.
// Equivalent to: ip netns exec <prefix>-sw etcdctl --endpoints $ep $args
func (tb *Testbed) Etcdctl(ctx context.Context, args ...string) (string, error) {
	return tb.etcdctl(ctx, "", args...)
}

func (tb *Testbed) etcdctl(ctx context.Context, stdin string, args ...string) (string, error) {
	argv := append([]string{"ip", "netns", "exec", tb.ns("sw"), tb.opts.EtcdctlBin, "--endpoints", tb.EtcdEndpoint()}, tb.etcdctlSecurityFlags()...)
	argv = append(argv, args...)
	return runSplit(ctx, stdin, argv...)
}

// PutNetConfig stores the flannel network configuration (JSON) under
// /coreos.com/network/config. The value goes through standard input, so it
// may contain anything.
func (tb *Testbed) PutNetConfig(ctx context.Context, json string) error {
	_, err := tb.etcdctl(ctx, json, "put", netConfigKey)
	return err
}

// StopEtcd stops etcd (SIGTERM, SIGKILL after 10 s). The data directory is
// kept, so StartEtcd brings back every key and lease.
func (tb *Testbed) StopEtcd() error {
	tb.mu.Lock()
	p := tb.etcd
	tb.mu.Unlock()
	if p == nil {
		return nil
	}
	tb.logf("testbed %s: stopping etcd", tb.prefix)
	return p.stop(10 * time.Second)
}

// StartEtcd starts etcd again on the same data directory and waits until it
// answers.
func (tb *Testbed) StartEtcd(ctx context.Context) error {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	if err := tb.checkOpen(); err != nil {
		return err
	}
	return tb.startEtcd(ctx)
}

func (tb *Testbed) etcdLogPath() string { return filepath.Join(tb.workDir, "etcd", "etcd.log") }

// startEtcd starts etcd in the switch namespace and waits for it to answer.
// The caller holds tb.mu.
func (tb *Testbed) startEtcd(ctx context.Context) error {
	if tb.etcd != nil {
		if ok, _ := tb.etcd.exited(); !ok {
			return errors.New("testbed: etcd is already running")
		}
	}
	dir := filepath.Join(tb.workDir, "etcd")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	tlsFlags, err := tb.etcdTLSServerFlags()
	if err != nil {
		return err
	}
	argv := append([]string{tb.opts.EtcdBin,
		"--name", "sw",
		"--data-dir", filepath.Join(dir, "data"),
		"--listen-client-urls", tb.EtcdEndpoint(),
		"--advertise-client-urls", tb.EtcdEndpoint(),
		"--listen-peer-urls", "http://127.0.0.1:2380",
		"--initial-advertise-peer-urls", "http://127.0.0.1:2380",
		"--initial-cluster", "sw=http://127.0.0.1:2380",
		"--log-level", "error",
		// Tests need speed, not durability against power loss; a stopped
		// process still leaves its writes in the page cache.
		"--unsafe-no-fsync",
	}, tlsFlags...)
	p, err := startProc(tb.ns("sw"), tb.etcdLogPath(), nil, argv...)
	if err != nil {
		return err
	}
	tb.etcd = p
	tb.addCleanup("stop etcd", p.kill)
	if err := tb.waitEtcd(ctx, p); err != nil {
		return err
	}
	tb.logf("testbed %s: etcd answers at %s", tb.prefix, tb.EtcdEndpoint())
	return nil
}

// waitEtcd polls "etcdctl endpoint health" until etcd answers, p exits or
// ctx is done.
func (tb *Testbed) waitEtcd(ctx context.Context, p *proc) error {
	var last error
	for {
		if ok, err := p.exited(); ok {
			return fmt.Errorf("testbed: etcd exited (%v); log tail:\n%s", err, tail(tb.etcdLogPath(), 20))
		}
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		_, last = tb.Etcdctl(cctx, "--dial-timeout=1s", "--command-timeout=2s", "endpoint", "health")
		cancel()
		if last == nil {
			return nil
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return fmt.Errorf("testbed: waiting for etcd: %w (last: %v); log tail:\n%s", err, last, tail(tb.etcdLogPath(), 20))
		}
	}
}
