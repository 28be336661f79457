package testbed

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// command builds argv with Pdeathsig set, so that a child never outlives the
// test process. Without ctx (nil) the command is not bound to a context:
// long-running processes use that and are stopped explicitly.
func command(ctx context.Context, argv ...string) *exec.Cmd {
	var cmd *exec.Cmd
	if ctx == nil {
		cmd = exec.Command(argv[0], argv[1:]...)
	} else {
		cmd = exec.CommandContext(ctx, argv[0], argv[1:]...)
		// A grandchild holding the output pipe must not hang Wait.
		cmd.WaitDelay = 2 * time.Second
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

// run runs argv and returns its combined output. A failure names the full
// command line and includes the output.
func run(ctx context.Context, argv ...string) (string, error) {
	cmd := command(ctx, argv...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), cmdError(ctx, argv, err, out)
	}
	return string(out), nil
}

// runSplit runs argv with stdin and returns its standard output only; the
// error includes standard error.
func runSplit(ctx context.Context, stdin string, argv ...string) (string, error) {
	cmd := command(ctx, argv...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	if err := cmd.Run(); err != nil {
		return stdout.String(), cmdError(ctx, argv, err, append(stdout.Bytes(), stderr.Bytes()...))
	}
	return stdout.String(), nil
}

func cmdError(ctx context.Context, argv []string, err error, out []byte) error {
	if ctx != nil && ctx.Err() != nil {
		err = fmt.Errorf("%w (%v)", ctx.Err(), err)
	}
	msg := strings.TrimSpace(string(out))
	if msg == "" {
		return fmt.Errorf("%s: %w", quote(argv), err)
	}
	return fmt.Errorf("%s: %w: %s", quote(argv), err, msg)
}

// quote renders argv as a shell would need it, for error messages.
func quote(argv []string) string {
	var b strings.Builder
	for i, a := range argv {
		if i > 0 {
			b.WriteByte(' ')
		}
		if a == "" || strings.ContainsAny(a, " \t\n'\"\\$*?{}[]();&|<>") {
			b.WriteString("'" + strings.ReplaceAll(a, "'", `'\''`) + "'")
		} else {
			b.WriteString(a)
		}
	}
	return b.String()
}

// ip runs "ip args...". Equivalent to: ip $args
func ip(ctx context.Context, args ...string) (string, error) {
	return run(ctx, append([]string{"ip"}, args...)...)
}

// ipn runs "ip -n ns args...", a change inside namespace ns.
func ipn(ctx context.Context, ns string, args ...string) error {
	_, err := run(ctx, append([]string{"ip", "-n", ns}, args...)...)
	return err
}

// execIn runs argv inside namespace ns. Equivalent to: ip netns exec $ns $argv
func execIn(ctx context.Context, ns string, argv ...string) (string, error) {
	return run(ctx, append([]string{"ip", "netns", "exec", ns}, argv...)...)
}

// sysctl sets key to value inside namespace ns.
// Equivalent to: ip netns exec $ns sysctl -q -w $key=$value
func sysctl(ctx context.Context, ns, key, value string) error {
	_, err := execIn(ctx, ns, "sysctl", "-q", "-w", key+"="+value)
	return err
}

// sleep waits for d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
