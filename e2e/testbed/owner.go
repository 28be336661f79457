package testbed

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Every testbed records the process that owns it in <TempDir>/<prefix>.owner
// ("<pid> <start time>"), removed by Close. CleanAll leaves the testbeds of
// live owners alone, so make e2e-clean during another run's tests removes
// only what dead runs left behind. The start time (from /proc/<pid>/stat)
// tells a live owner from a new process that reused its pid.

func ownerPath(prefix string) string { return filepath.Join(os.TempDir(), prefix+".owner") }

// procStart returns the start time of process pid in clock ticks since
// boot (field 22 of /proc/<pid>/stat).
func procStart(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may contain spaces:
	// count fields after its closing parenthesis.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 20 {
		return 0, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// writeOwner records the current process as the owner of prefix.
func writeOwner(prefix string) error {
	pid := os.Getpid()
	st, err := procStart(pid)
	if err != nil {
		return err
	}
	return os.WriteFile(ownerPath(prefix), []byte(fmt.Sprintf("%d %d\n", pid, st)), 0o644)
}

// liveOwner returns the pid of the live process owning prefix, or 0 when
// there is no owner file or its process is gone.
func liveOwner(prefix string) int {
	b, err := os.ReadFile(ownerPath(prefix))
	if err != nil {
		return 0
	}
	var pid int
	var st uint64
	if _, err := fmt.Sscanf(string(b), "%d %d", &pid, &st); err != nil || pid <= 0 {
		return 0
	}
	if cur, err := procStart(pid); err != nil || cur != st {
		return 0
	}
	return pid
}
