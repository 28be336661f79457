package firewall

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
)

// procSys is where sysctls live; tests in a private namespace use it as is.
const procSys = "/proc/sys"

// EnableForwarding sets net.ipv4.ip_forward=1, and
// net.ipv6.conf.all.forwarding=1 when v6 is set (sysctl -w KEY=1), logging
// only values it changed.
func EnableForwarding(log *slog.Logger, v6 bool) error {
	if log == nil {
		log = slog.Default()
	}
	keys := []string{"net/ipv4/ip_forward"}
	if v6 {
		keys = append(keys, "net/ipv6/conf/all/forwarding")
	}
	var errs []error
	for _, key := range keys {
		errs = append(errs, enableSysctl(log, key))
	}
	return errors.Join(errs...)
}

func enableSysctl(log *slog.Logger, key string) error {
	name := strings.ReplaceAll(key, "/", ".")
	path := filepath.Join(procSys, key)
	old, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading sysctl %s: %w", name, err)
	}
	if strings.TrimSpace(string(old)) == "1" {
		return nil
	}
	if err := os.WriteFile(path, []byte("1\n"), 0o644); err != nil {
		return fmt.Errorf("setting sysctl %s=1 (is /proc/sys writable, e.g. a privileged container?): %w", name, err)
	}
	log.Info("enabled forwarding", "sysctl", name, "was", strings.TrimSpace(string(old)))
	return nil
}
