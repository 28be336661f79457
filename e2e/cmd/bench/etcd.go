package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"runtime"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
)

// etcdClient connects to the testbed etcd from this process, which runs in
// the root namespace where 192.168.50.1 does not exist: every connection
// is made by a dialer that opens its socket inside the switch namespace
// (a socket stays in the namespace it was created in). Nothing is created
// in the root namespace.
func etcdClient(swNS, endpoint string) (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{
		Endpoints:   []string{endpoint},
		DialTimeout: 5 * time.Second,
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(nsDialer(swNS))},
		// The storm opens hundreds of clients; their keepalive noise is
		// not what we measure.
		Logger: nopLogger,
	})
}

// nsDialer returns a dialer that creates its TCP socket in the named
// network namespace (/run/netns/<ns>). The dialing goroutine is locked to
// its OS thread, switched to the namespace for the socket and connect, and
// switched back; if switching back fails the thread is left locked, so the
// runtime discards it when the goroutine ends rather than reusing it in
// the wrong namespace.
func nsDialer(ns string) func(ctx context.Context, addr string) (net.Conn, error) {
	return func(ctx context.Context, addr string) (net.Conn, error) {
		target, err := os.Open("/run/netns/" + ns)
		if err != nil {
			return nil, err
		}
		defer target.Close()
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			return nil, err
		}
		defer orig.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			return nil, fmt.Errorf("entering netns %s: %w", ns, err)
		}
		var d net.Dialer
		conn, derr := d.DialContext(ctx, "tcp", addr)
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			if conn != nil {
				conn.Close()
			}
			return nil, fmt.Errorf("returning from netns %s: %w", ns, err) // thread stays locked: discarded
		}
		runtime.UnlockOSThread()
		return conn, derr
	}
}

var nopLogger = zap.NewNop()
