package testbed

import (
	"context"
	"fmt"
	"net"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// InNS runs fn on an OS thread in network namespace ns and returns its
// error. Sockets fn opens belong to ns for their whole life, whatever
// goroutine uses them afterwards. The thread goes back to this process's
// namespace before it is handed back to the scheduler. It must: the
// goroutine may run on the process's main thread, and a main thread left
// in a pod's namespace puts the whole test process in that namespace's
// "ip netns pids", whose removal kills them. A thread that cannot go back
// stays locked and ends with the goroutine.
func InNS(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		f, err := os.Open(nsPath(ns))
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("entering netns %s: %w", ns, err)
			return
		}
		err = fn()
		if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// Listen opens a listener in the pod, e.g. Listen("tcp", ":5001").
func (p *Pod) Listen(network, addr string) (net.Listener, error) {
	var ln net.Listener
	err := InNS(p.NS, func() error {
		var err error
		ln, err = net.Listen(network, addr)
		return err
	})
	return ln, err
}

// Dial connects from the pod.
func (p *Pod) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := InNS(p.NS, func() error {
		var err error
		c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
		return err
	})
	return c, err
}
