package testbed

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"sync"
)

// capture is one tcpdump run of CaptureSources and what it printed so far.
type capture struct {
	argv  []string
	cmd   *exec.Cmd
	ready chan struct{} // closed once tcpdump says it is listening
	done  chan struct{} // closed once tcpdump exited and its output is read

	mu      sync.Mutex
	sources []netip.Addr
	errText strings.Builder
	waitErr error // tcpdump's exit, set before done is closed
}

func (tb *Testbed) captureSources(ctx context.Context, ns, filter string, count int) (wait func() ([]netip.Addr, error), err error) {
	if count < 1 {
		return nil, errors.New("testbed: CaptureSources needs count >= 1")
	}
	argv := []string{"ip", "netns", "exec", ns, "tcpdump", "-n", "-l", "-t", "-Q", "in", "-i", "eth0", "-c", strconv.Itoa(count)}
	if filter != "" {
		argv = append(argv, filter)
	}
	c, err := tb.startCapture(argv)
	if err != nil {
		return nil, err
	}
	if err := c.waitReady(ctx); err != nil {
		return nil, err
	}
	return func() ([]netip.Addr, error) { return c.wait(ctx) }, nil
}

// waitReady waits until tcpdump listens; if it exits first, or ctx ends,
// the error carries what it printed.
func (c *capture) waitReady(ctx context.Context) error {
	select {
	case <-c.ready:
		return nil
	case <-c.done:
		return c.failure(fmt.Errorf("exited before capturing (%v)", c.waitErr))
	case <-ctx.Done():
		c.cmd.Process.Kill()
		<-c.done
		return c.failure(ctx.Err())
	}
}

// startCapture starts tcpdump (argv) and the goroutines that read its
// output; the testbed kills it on Close.
func (tb *Testbed) startCapture(argv []string) (*capture, error) {
	c := &capture{argv: argv, cmd: command(nil, argv...), ready: make(chan struct{}), done: make(chan struct{})}
	stdout, err := c.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	stderr, err := c.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	tb.mu.Lock()
	if err := tb.checkOpen(); err != nil {
		tb.mu.Unlock()
		return nil, err
	}
	if err := c.cmd.Start(); err != nil {
		tb.mu.Unlock()
		return nil, fmt.Errorf("%s: %w", quote(argv), err)
	}
	tb.addCleanup("kill tcpdump", func() error {
		c.cmd.Process.Kill()
		<-c.done
		return nil
	})
	tb.mu.Unlock()

	var readers sync.WaitGroup
	readers.Add(2)
	go func() {
		defer readers.Done()
		c.readStderr(stderr)
	}()
	go func() {
		defer readers.Done()
		c.readStdout(stdout)
	}()
	go func() {
		readers.Wait()
		c.waitErr = c.cmd.Wait()
		close(c.done)
	}()
	return c, nil
}

// readStderr keeps tcpdump's messages for errors and closes ready at its
// "listening on" line.
func (c *capture) readStderr(stderr io.Reader) {
	sc := bufio.NewScanner(stderr)
	signalled := false
	for sc.Scan() {
		c.mu.Lock()
		c.errText.WriteString(sc.Text() + "\n")
		c.mu.Unlock()
		if !signalled && strings.Contains(sc.Text(), "listening on") { // "tcpdump: listening on" with -w
			signalled = true
			close(c.ready)
		}
	}
	io.Copy(io.Discard, stderr)
}

// readStdout collects the source address of every packet line.
func (c *capture) readStdout(stdout io.Reader) {
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if a, ok := parseSource(sc.Text()); ok {
			c.mu.Lock()
			c.sources = append(c.sources, a)
			c.mu.Unlock()
		}
	}
	io.Copy(io.Discard, stdout)
}

// wait is CaptureSources' wait: until tcpdump has its count of packets, or
// ctx ends and tcpdump is killed.
func (c *capture) wait(ctx context.Context) ([]netip.Addr, error) {
	select {
	case <-c.done:
		if c.waitErr != nil {
			return c.result(), c.failure(c.waitErr)
		}
		return c.result(), nil
	case <-ctx.Done():
		c.cmd.Process.Kill()
		<-c.done
		return c.result(), c.failure(ctx.Err())
	}
}

func (c *capture) result() []netip.Addr {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]netip.Addr(nil), c.sources...)
}

// failure wraps err with the command and what tcpdump printed on stderr.
func (c *capture) failure(err error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return fmt.Errorf("%s: %w: %s", quote(c.argv), err, strings.TrimSpace(c.errText.String()))
}

// parseSource returns the source address of a tcpdump -n -t line such as
//
//	IP 10.244.1.2 > 192.168.50.200: ICMP echo request, id 7, seq 1, length 64
//	IP 192.168.50.11.41234 > 192.168.50.200.5201: Flags [S], ...
//	IP6 fd00:50::11 > fd00:50::200: ICMP6, echo request, id 7, seq 1, length 64
//	IP6 fd00:50::11.41234 > fd00:50::200.5201: Flags [S], ...
//
// ok is false for other lines (ARP, continuation lines).
func parseSource(line string) (netip.Addr, bool) {
	f := strings.Fields(line)
	if len(f) < 3 || (f[0] != "IP" && f[0] != "IP6") || f[2] != ">" {
		return netip.Addr{}, false
	}
	src := f[1]
	if a, err := netip.ParseAddr(src); err == nil {
		return a, true
	}
	// A trailing .port.
	if i := strings.LastIndexByte(src, '.'); i > 0 {
		if a, err := netip.ParseAddr(src[:i]); err == nil {
			return a, true
		}
	}
	return netip.Addr{}, false
}
