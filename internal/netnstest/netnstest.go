// Package netnstest lets a test binary that touches the kernel (links,
// routes, iptables, sysctls) run inside a private network namespace.
//
// A package's TestMain calls Main(m). The first time, the test binary re-runs
// itself as a child with CLONE_NEWNET: the child and everything it starts
// (goroutines on any OS thread, iptables, ip) live in an anonymous namespace
// that the kernel destroys when the child exits, even if it crashes. Nothing
// is ever created in the root namespace, and parallel runs cannot collide
// because the namespace has no name.
package netnstest

import (
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"
)

const marker = "FLANNEL_NETNSTEST_CHILD"

// Inside reports whether the process runs in the private namespace.
func Inside() bool { return os.Getenv(marker) == "1" }

// Main runs the tests of m inside a fresh network namespace. Without root
// the tests run as they are; tests that need the namespace call Require.
func Main(m *testing.M) {
	if Inside() {
		if out, err := exec.Command("ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "netnstest: bringing lo up: %v: %s\n", err, out)
			os.Exit(1)
		}
		os.Exit(m.Run())
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "netnstest: not root, privileged tests will skip")
		os.Exit(m.Run())
	}
	cmd := exec.Command(os.Args[0], os.Args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), marker+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Run(); err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			os.Exit(ee.ExitCode())
		}
		fmt.Fprintf(os.Stderr, "netnstest: re-running in a new network namespace: %v\n", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// Require skips t with a printed reason unless the test runs inside the
// private namespace (that is, as root through Main).
func Require(t testing.TB) {
	t.Helper()
	if !Inside() {
		t.Skip("needs root: run as root (make test does) so the test runs in its own network namespace")
	}
}
