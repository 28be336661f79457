package testbed

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

var (
	// nsPattern matches the namespaces a testbed creates: prefix "flt" + 5
	// hex digits, a dash, a short lowercase role name.
	nsPattern = regexp.MustCompile(`^flt[0-9a-f]{5}-[a-z0-9]+$`)
	// dirPattern matches the default work directories (os.MkdirTemp).
	dirPattern = regexp.MustCompile(`^flt[0-9a-f]{5}-[0-9]+$`)
	// ownerPattern matches the owner files (see owner.go).
	ownerPattern = regexp.MustCompile(`^flt[0-9a-f]{5}\.owner$`)
)

// CleanAll removes what testbeds whose prefix starts with prefix left
// behind, for example after a test binary was killed: it kills the processes
// in each such namespace, deletes the namespace, and removes the default work
// directories in os.TempDir and the owner files. Only names of the testbed's
// own form ("flt" + 5 hex digits + "-" + role) are touched, so
// CleanAll("flt") cannot hit an unrelated namespace that merely starts with
// "flt". A testbed whose owning process still runs is left alone (listed in
// kept) unless all is true. make e2e-clean runs CleanAll("flt", false).
func CleanAll(prefix string, all bool) (removed, kept []string, err error) {
	names, err := listNS(context.Background())
	if err != nil {
		return nil, nil, err
	}
	keep := map[string]bool{} // testbed prefix -> owner alive
	skip := func(name string) bool {
		p := name[:len("flt")+5]
		alive, seen := keep[p]
		if !seen {
			if pid := liveOwner(p); pid != 0 && !all {
				alive = true
				kept = append(kept, fmt.Sprintf("testbed %s (its owner, pid %d, is running)", p, pid))
			}
			keep[p] = alive
		}
		return alive
	}
	var errs []error
	for _, name := range names {
		if !strings.HasPrefix(name, prefix) || !nsPattern.MatchString(name) || skip(name) {
			continue
		}
		if err := deleteNS(name); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, "netns "+name)
	}
	entries, err := os.ReadDir(os.TempDir())
	if err != nil {
		errs = append(errs, err)
	}
	for _, e := range entries {
		path := filepath.Join(os.TempDir(), e.Name())
		switch {
		case !strings.HasPrefix(e.Name(), prefix):
			continue
		case e.IsDir() && dirPattern.MatchString(e.Name()):
		case !e.IsDir() && ownerPattern.MatchString(e.Name()):
		default:
			continue
		}
		if skip(e.Name()) {
			continue
		}
		if err := os.RemoveAll(path); err != nil {
			errs = append(errs, err)
			continue
		}
		if e.IsDir() {
			removed = append(removed, "dir "+path)
		}
	}
	return removed, kept, errors.Join(errs...)
}

// listNS returns the names of all named network namespaces.
// Equivalent to: ip netns list
func listNS(ctx context.Context) ([]string, error) {
	out, err := ip(ctx, "netns", "list")
	if err != nil {
		return nil, err
	}
	var names []string
	for line := range strings.Lines(out) {
		// "name" or "name (id: 3)"
		if f := strings.Fields(line); len(f) > 0 {
			names = append(names, f[0])
		}
	}
	return names, nil
}

// nsPIDs returns the processes running in namespace name.
// Equivalent to: ip netns pids $name
func nsPIDs(ctx context.Context, name string) ([]int, error) {
	out, err := ip(ctx, "netns", "pids", name)
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, f := range strings.Fields(out) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("ip netns pids %s: unexpected output %q", name, out)
		}
		pids = append(pids, pid)
	}
	return pids, nil
}

// deleteNS kills every process in namespace name, waits until they are gone
// and deletes the namespace. A namespace that no longer exists is not an
// error. Equivalent to: kill -9 $(ip netns pids $name); ip netns del $name
func deleteNS(name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	for {
		pids, err := nsPIDs(ctx, name)
		if isNotExist(err) {
			return nil
		}
		if err != nil {
			return err
		}
		if len(pids) == 0 {
			break
		}
		for _, pid := range pids {
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
				return fmt.Errorf("killing pid %d in netns %s: %w", pid, name, err)
			}
		}
		if err := sleep(ctx, 50*time.Millisecond); err != nil {
			return fmt.Errorf("netns %s: processes %v survive SIGKILL: %w", name, pids, err)
		}
	}
	if _, err := ip(ctx, "netns", "del", name); err != nil && !isNotExist(err) {
		return err
	}
	return nil
}

// isNotExist reports whether an ip command failed because the namespace or
// device does not exist.
func isNotExist(err error) bool {
	if err == nil {
		return false
	}
	s := err.Error()
	return strings.Contains(s, "No such file or directory") ||
		strings.Contains(s, "does not exist") ||
		strings.Contains(s, "Cannot find device")
}
