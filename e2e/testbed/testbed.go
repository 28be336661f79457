package testbed

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// Options configure a testbed. The zero value is a testbed with only the
// switch and etcd, binaries taken from <repo>/bin.
type Options struct {
	// Hosts is the number of hosts New creates on segment 1.
	Hosts int
	// PodsPerHost is the number of pods StartDaemons adds on each host once
	// the daemons wrote their subnet files (pods need the lease).
	PodsPerHost int
	// FlanneldBin, EtcdBin and EtcdctlBin are paths of the binaries. The
	// defaults are bin/flanneld, bin/etcd and bin/etcdctl of the repository
	// found by walking up from the working directory to go.mod.
	FlanneldBin, EtcdBin, EtcdctlBin string
	// WorkDir holds the etcd data, subnet files and logs. The default is a
	// new directory in os.TempDir, removed on Close; a given WorkDir is kept.
	WorkDir string
	// IPv6 adds IPv6 underlay addresses (fd00:50::/64, fd00:60::/64) next to
	// the IPv4 ones.
	IPv6 bool
	// EtcdTLS serves etcd over TLS with client certificate authentication,
	// at https://192.168.50.1:2379, with certificates the testbed makes
	// (see EtcdPKI and EtcdTLSFlags).
	EtcdTLS bool
	// Log receives progress lines (t.Logf, or a Printf for the demo). It may
	// be nil.
	Log func(format string, args ...any)
}

// Underlay addresses.
const (
	etcdEndpoint = "http://192.168.50.1:2379"
	seg1Net      = "192.168.50.0/24"
	seg2Net      = "192.168.60.0/24"
	seg1Net6     = "fd00:50::/64"
	seg2Net6     = "fd00:60::/64"
	maxHostIndex = 189 // 192.168.5x.(10+i) must stay below .200 (outside)
)

// ErrClosed is returned by methods called after Close.
var ErrClosed = errors.New("testbed: closed")

// Testbed is a set of namespaces simulating a switch with etcd, hosts, pods,
// an optional second segment behind a router and an outside machine.
// Methods that change the topology are safe for concurrent use; Close runs
// every registered removal, even after a failed construction.
type Testbed struct {
	opts    Options
	prefix  string
	workDir string
	logf    func(format string, args ...any)

	mu       sync.Mutex
	closed   bool
	cleanups []cleanup // run in reverse order by Close
	hosts    []*Host
	etcd     *proc
	etcdSec  etcdSecurity
	segment2 bool
	outside  *Outside
}

type cleanup struct {
	what string
	fn   func() error
}

// New builds the switch namespace with its bridge and etcd, waits until etcd
// answers, and adds o.Hosts hosts on segment 1. On error everything created
// so far is removed.
func New(ctx context.Context, o Options) (*Testbed, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("testbed: needs root (network namespaces)")
	}
	if err := resolveBins(&o); err != nil {
		return nil, err
	}
	if o.IPv6 {
		if _, err := os.Stat("/proc/sys/net/ipv6"); err != nil {
			return nil, fmt.Errorf("testbed: IPv6 requested but the kernel has none: %w", err)
		}
	}
	prefix, err := newPrefix(ctx)
	if err != nil {
		return nil, err
	}
	tb := &Testbed{opts: o, prefix: prefix, logf: o.Log}
	if tb.logf == nil {
		tb.logf = func(string, ...any) {}
	}
	if err := tb.build(ctx); err != nil {
		return nil, errors.Join(err, tb.Close())
	}
	return tb, nil
}

func (tb *Testbed) build(ctx context.Context) error {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	if err := tb.makeWorkDir(); err != nil {
		return err
	}
	sw := tb.ns("sw")
	if err := tb.addNS(ctx, sw); err != nil {
		return err
	}
	if err := addBridge(ctx, sw, "br0", "192.168.50.1/24", tb.v6("fd00:50::1/64")); err != nil {
		return err
	}
	tb.logf("testbed %s: switch %s: br0 %s; work dir %s", tb.prefix, sw, words("192.168.50.1/24", tb.v6("fd00:50::1/64")), tb.workDir)
	if err := tb.startEtcd(ctx); err != nil {
		return err
	}
	for range tb.opts.Hosts {
		if _, err := tb.addHost(ctx, HostOptions{}); err != nil {
			return err
		}
	}
	return nil
}

// NewT is New for tests: it fails t on error and registers Close with
// t.Cleanup. When the test failed, Close is preceded by a Dump to t.Log (the
// tail of each daemon log, addresses and routes of each host). Options.Log
// defaults to t.Logf.
func NewT(t testing.TB, o Options) *Testbed {
	t.Helper()
	if o.Log == nil {
		o.Log = t.Logf
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tb, err := New(ctx, o)
	if err != nil {
		t.Fatalf("testbed: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			tb.Dump(ctx, t.Logf)
			cancel()
		}
		if err := tb.Close(); err != nil {
			t.Errorf("testbed close: %v", err)
		}
	})
	return tb
}

// Close stops every process and deletes every namespace and the default work
// directory, in the reverse order of their creation. It is safe to call more
// than once (later calls return nil) and after a partial construction.
func (tb *Testbed) Close() error {
	tb.mu.Lock()
	if tb.closed {
		tb.mu.Unlock()
		return nil
	}
	tb.closed = true
	cs := tb.cleanups
	tb.cleanups = nil
	tb.mu.Unlock()

	var errs []error
	for _, c := range slices.Backward(cs) {
		if err := c.fn(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", c.what, err))
		}
	}
	tb.logf("testbed %s: closed", tb.prefix)
	return errors.Join(errs...)
}

// Prefix returns the per-run prefix of the namespace names, e.g. "flt3a9c1".
func (tb *Testbed) Prefix() string { return tb.prefix }

// WorkDir returns the directory holding etcd data, subnet files and logs.
func (tb *Testbed) WorkDir() string { return tb.workDir }

// Hosts returns the hosts in the order of their creation (index i-1 is
// host h<i>).
func (tb *Testbed) Hosts() []*Host {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	return slices.Clone(tb.hosts)
}

// Dump writes the diagnostics of a failed test to logf: the tail of the
// etcd log and of each daemon log, and of each host "ip addr", "ip route",
// the permanent neighbours and the FDB entries of the VXLAN devices.
func (tb *Testbed) Dump(ctx context.Context, logf func(format string, args ...any)) {
	logf("testbed %s: etcd log tail:\n%s", tb.prefix, tail(tb.etcdLogPath(), 20))
	for _, h := range tb.Hosts() {
		var b strings.Builder
		fmt.Fprintf(&b, "testbed %s: host %s (%s)\n", tb.prefix, h.Name, h.NS)
		cmds := [][]string{{"ip", "addr"}, {"ip", "route"}}
		if tb.opts.IPv6 {
			cmds = append(cmds, []string{"ip", "-6", "route"})
		}
		cmds = append(cmds, []string{"ip", "neigh", "show", "nud", "permanent"}, []string{"bridge", "fdb", "show", "dynamic"},
			[]string{"bridge", "fdb", "show", "permanent"})
		for _, c := range cmds {
			out, err := h.Exec(ctx, c...)
			if err != nil {
				out = err.Error()
			}
			fmt.Fprintf(&b, "$ %s\n%s\n", quote(c), strings.TrimRight(out, "\n"))
		}
		fmt.Fprintf(&b, "flanneld log tail (%s):\n%s", h.LogPath(), tail(h.LogPath(), 50))
		logf("%s", b.String())
	}
}

// ns returns the namespace name of role, e.g. "flt3a9c1-h1".
func (tb *Testbed) ns(role string) string { return tb.prefix + "-" + role }

// v6 returns addr when the testbed has IPv6, else "".
func (tb *Testbed) v6(addr string) string {
	if tb.opts.IPv6 {
		return addr
	}
	return ""
}

// words joins the non-empty strings with spaces, for log lines.
func words(s ...string) string {
	return strings.Join(slices.DeleteFunc(s, func(w string) bool { return w == "" }), " ")
}

// addCleanup registers fn to run on Close. The caller holds tb.mu.
func (tb *Testbed) addCleanup(what string, fn func() error) {
	tb.cleanups = append(tb.cleanups, cleanup{what, fn})
}

// checkOpen returns ErrClosed after Close. The caller holds tb.mu.
func (tb *Testbed) checkOpen() error {
	if tb.closed {
		return ErrClosed
	}
	return nil
}

func (tb *Testbed) makeWorkDir() error {
	if err := writeOwner(tb.prefix); err != nil {
		return fmt.Errorf("testbed: recording the owner: %w", err)
	}
	owner := ownerPath(tb.prefix)
	tb.addCleanup("remove "+owner, func() error { return removeIfExists(owner) })
	if tb.opts.WorkDir != "" {
		tb.workDir = tb.opts.WorkDir
		return os.MkdirAll(tb.workDir, 0o755)
	}
	dir, err := os.MkdirTemp("", tb.prefix+"-")
	if err != nil {
		return err
	}
	tb.workDir = dir
	tb.addCleanup("remove "+dir, func() error { return os.RemoveAll(dir) })
	return nil
}

func removeIfExists(path string) error {
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		return err
	}
	return nil
}

// addNS creates namespace name with lo up and registers its deletion. The
// caller holds tb.mu.
// Equivalent to: ip netns add $name; ip -n $name link set lo up
func (tb *Testbed) addNS(ctx context.Context, name string) error {
	if _, err := ip(ctx, "netns", "add", name); err != nil {
		return err
	}
	tb.addCleanup("delete netns "+name, func() error { return deleteNS(name) })
	return ipn(ctx, name, "link", "set", "lo", "up")
}

// addBridge creates bridge dev in ns, up, with addr4 and addr6 (each may be
// "", addr6 is added without DAD).
func addBridge(ctx context.Context, ns, dev, addr4, addr6 string) error {
	if err := ipn(ctx, ns, "link", "add", dev, "type", "bridge"); err != nil {
		return err
	}
	if err := ipn(ctx, ns, "link", "set", dev, "up"); err != nil {
		return err
	}
	return addAddrs(ctx, ns, dev, addr4, addr6)
}

// addAddrs adds addr4 and addr6 (nodad) to dev; "" is skipped. addr replace
// makes it idempotent.
func addAddrs(ctx context.Context, ns, dev, addr4, addr6 string) error {
	if addr4 != "" {
		if err := ipn(ctx, ns, "addr", "replace", addr4, "dev", dev); err != nil {
			return err
		}
	}
	if addr6 != "" {
		if err := ipn(ctx, ns, "-6", "addr", "replace", addr6, "dev", dev, "nodad"); err != nil {
			return err
		}
	}
	return nil
}

// newPrefix picks "flt" + 5 random hex digits not used by any namespace.
func newPrefix(ctx context.Context) (string, error) {
	names, err := listNS(ctx)
	if err != nil {
		return "", err
	}
	for range 100 {
		b := make([]byte, 3)
		rand.Read(b)
		p := "flt" + hex.EncodeToString(b)[:5]
		if !slices.ContainsFunc(names, func(n string) bool { return strings.HasPrefix(n, p+"-") }) {
			return p, nil
		}
	}
	return "", errors.New("testbed: no free namespace prefix")
}

// resolveBins fills in the default binary paths and makes them absolute.
// flanneld is checked only when a daemon starts: tests of the testbed
// itself do not need it.
func resolveBins(o *Options) error {
	bins := []struct {
		path *string
		name string
	}{{&o.FlanneldBin, "flanneld"}, {&o.EtcdBin, "etcd"}, {&o.EtcdctlBin, "etcdctl"}}
	var root string
	for _, b := range bins {
		if *b.path == "" {
			if root == "" {
				r, err := repoRoot()
				if err != nil {
					return err
				}
				root = r
			}
			*b.path = filepath.Join(root, "bin", b.name)
		}
		abs, err := filepath.Abs(*b.path)
		if err != nil {
			return err
		}
		*b.path = abs
	}
	for _, p := range []string{o.EtcdBin, o.EtcdctlBin} {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("testbed: %w (build it: go build -o %s ./e2e/cmd/%s)", err, p, filepath.Base(p))
		}
	}
	return nil
}

// repoRoot walks up from the working directory to the directory holding
// go.mod.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("testbed: no go.mod above the working directory; set the binary paths in Options")
		}
		dir = parent
	}
}
