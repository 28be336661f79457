package testbed

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// proc is a long-running process inside a namespace (etcd, flanneld) whose
// standard output and error are appended to a log file.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{} // closed by the waiter once err is set
	err  error         // result of cmd.Wait
}

// startProc starts argv in namespace ns, appending its output to logPath
// after a header line. env, when not nil, replaces the environment.
// Equivalent to: ip netns exec $ns $argv >>$logPath 2>&1 &
func startProc(ns, logPath string, env []string, argv ...string) (*proc, error) {
	f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer f.Close() // the child holds its own copy
	full := append([]string{"ip", "netns", "exec", ns}, argv...)
	fmt.Fprintf(f, "=== testbed %s: %s\n", time.Now().Format(time.RFC3339Nano), quote(full))
	cmd := command(nil, full...)
	cmd.Stdout, cmd.Stderr, cmd.Env = f, f, env
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: %w", quote(full), err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// exited reports whether the process has exited and, if so, the result of
// Wait (nil for exit status 0, an *exec.ExitError otherwise).
func (p *proc) exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// wait waits for the process to exit and returns its exit code (-1 when a
// signal killed it).
func (p *proc) wait(ctx context.Context) (int, error) {
	select {
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-p.done:
		return p.cmd.ProcessState.ExitCode(), nil
	}
}

// stop sends SIGTERM, waits up to grace, then sends SIGKILL. It returns nil
// once the process is gone, whatever its exit status.
func (p *proc) stop(grace time.Duration) error {
	if ok, _ := p.exited(); ok {
		return nil
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
		return nil
	case <-t.C:
	}
	return p.kill()
}

// kill sends SIGKILL and waits (up to 10 s) until the process is reaped.
func (p *proc) kill() error {
	if ok, _ := p.exited(); ok {
		return nil
	}
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("pid %d survived SIGKILL for 10s", p.cmd.Process.Pid)
	}
}

// tail returns the last n lines of the file at path ("" if unreadable).
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
