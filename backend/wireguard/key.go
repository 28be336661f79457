package wireguard

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// DefaultKeyFile is where the private key lives (upstream's path);
// KeyFileEnv overrides it.
const (
	DefaultKeyFile = "/run/flannel/wgkey"
	KeyFileEnv     = "WIREGUARD_KEY_FILE"
)

// keyFile is the key file's path for the daemon's environment.
func keyFile(getenv func(string) (string, bool)) string {
	if p, ok := getenv(KeyFileEnv); ok && p != "" {
		return p
	}
	return DefaultKeyFile
}

// loadOrCreateKey reads the private key from path, or creates the file
// (mode 0600, written to a temporary file and renamed, so a crash never
// leaves half a key) with a new key when it does not exist. created says
// which. A file others may read or write is refused: the key would no
// longer be secret. Errors never contain the key or the file's content.
func loadOrCreateKey(path string) (key wgtypes.Key, created bool, err error) {
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		key, err = createKey(path)
		return key, err == nil, err
	case err != nil:
		return key, false, fmt.Errorf("WireGuard key file %s: %w", path, err)
	case !fi.Mode().IsRegular():
		return key, false, fmt.Errorf("WireGuard key file %s is not a regular file; remove it (a new key is created) or point %s at the key file", path, KeyFileEnv)
	case fi.Mode().Perm()&0o077 != 0:
		return key, false, fmt.Errorf("WireGuard key file %s has mode %04o: others can read the private key; run chmod 600 %s (or delete it to have a new key created, and its old key counts as leaked)",
			path, fi.Mode().Perm(), path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return key, false, fmt.Errorf("WireGuard key file %s: %w", path, err)
	}
	key, err = wgtypes.ParseKey(strings.TrimSpace(string(data)))
	if err != nil {
		return key, false, fmt.Errorf("WireGuard key file %s does not hold a private key (44 characters of base64, as wg genkey prints); delete it to have a new key created", path)
	}
	return key, false, nil
}

func createKey(path string) (wgtypes.Key, error) {
	key, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		return key, fmt.Errorf("generating a WireGuard private key: %w", err)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return key, fmt.Errorf("creating the directory of the WireGuard key file: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".wgkey-*")
	if err != nil {
		return key, fmt.Errorf("writing the WireGuard key file: %w", err)
	}
	defer os.Remove(tmp.Name()) // after the rename, a no-op
	// CreateTemp makes the file 0600; Chmod says so whatever the umask.
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return key, fmt.Errorf("writing the WireGuard key file: %w", err)
	}
	_, werr := tmp.WriteString(key.String() + "\n")
	serr := tmp.Sync()
	if err := errors.Join(werr, serr, tmp.Close()); err != nil {
		return key, fmt.Errorf("writing the WireGuard key file %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return key, fmt.Errorf("writing the WireGuard key file %s: %w", path, err)
	}
	return key, nil
}
