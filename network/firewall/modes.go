package firewall

import (
	"errors"
	"log/slog"
	"os/exec"
)

// RemoveOthers deletes the rules of every mode but keep, so a host that
// moves between modes (or from upstream flanneld, whose tables and chains
// are named as ours) is left with one set of rules. Each removal is logged.
// A mode whose binaries are missing has nothing to remove.
func RemoveOthers(log *slog.Logger, keep Mode) ([]string, error) {
	return removeModes(log, keep)
}

// RemoveAll deletes the rules of both modes (flanneld cleanup, or both
// features off), logging each removal.
func RemoveAll(log *slog.Logger) ([]string, error) { return removeModes(log, "") }

func removeModes(log *slog.Logger, keep Mode) ([]string, error) {
	if log == nil {
		log = slog.Default()
	}
	var (
		removed []string
		errs    []error
	)
	for _, mode := range []Mode{IPTables, NFTables} {
		if mode == keep {
			continue
		}
		fw, err := New(log, mode)
		if errors.Is(err, exec.ErrNotFound) {
			log.Debug("not removing rules of a mode whose binaries are missing", "mode", mode, "error", err)
			continue
		}
		if err == nil {
			var r []string
			r, err = fw.Remove()
			removed = append(removed, r...)
		}
		errs = append(errs, err)
	}
	return removed, errors.Join(errs...)
}
