package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/flanneld-go/flannel/network"
)

// TestDistEnvDocumentsEveryFlag keeps dist/flanneld.env in step with the
// flags: every flag has its FLANNELD_* line.
func TestDistEnvDocumentsEveryFlag(t *testing.T) {
	data, err := os.ReadFile("dist/flanneld.env")
	if err != nil {
		t.Fatal(err)
	}
	cmd := newRootCmd(&bytes.Buffer{}, &bytes.Buffer{})
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if f.Hidden || f.Name == "version" || f.Name == "help" {
			return
		}
		name := "FLANNELD_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_")) + "="
		if !bytes.Contains(data, []byte(name)) {
			t.Errorf("dist/flanneld.env does not document %s", name)
		}
	})
}

func TestDistNetConfSamplesAreValid(t *testing.T) {
	files, _ := filepath.Glob("dist/*.json")
	if len(files) == 0 {
		t.Fatal("no samples")
	}
	for _, f := range files {
		data, _ := os.ReadFile(f)
		if _, warnings, err := network.CheckConfig(data); err != nil || len(warnings) > 0 {
			t.Errorf("%s: %v %v", f, err, warnings)
		}
	}
}

// TestUnitFile checks the unit's contract with the daemon.
func TestUnitFile(t *testing.T) {
	data, err := os.ReadFile("dist/flanneld.service")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Type=notify", "After=network-online.target etcd.service", "Wants=network-online.target",
		"EnvironmentFile=-/etc/flannel/flanneld.env", "Restart=always", "CAP_NET_ADMIN", "CAP_NET_RAW"} {
		if !bytes.Contains(data, []byte(want)) {
			t.Errorf("unit lacks %q", want)
		}
	}
	if path, err := exec.LookPath("systemd-analyze"); err == nil {
		out, _ := exec.Command(path, "verify", "dist/flanneld.service").CombinedOutput()
		for _, line := range strings.Split(string(out), "\n") {
			if line != "" && !strings.Contains(line, "is not executable") {
				t.Errorf("systemd-analyze verify: %s", line)
			}
		}
	}
}

// TestMakeInstall lays the files out under a DESTDIR.
func TestMakeInstall(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary; skipped with -short")
	}
	dest := t.TempDir()
	out, err := exec.Command("make", "install", "DESTDIR="+dest).CombinedOutput()
	if err != nil {
		t.Fatalf("make install: %v\n%s", err, out)
	}
	for _, f := range []string{"usr/local/bin/flanneld", "etc/systemd/system/flanneld.service", "etc/flannel/flanneld.env",
		"usr/share/doc/flanneld/net-conf-vxlan.json", "usr/share/doc/flanneld/configuration.md"} {
		if _, err := os.Stat(filepath.Join(dest, f)); err != nil {
			t.Errorf("missing %s", f)
		}
	}
	if st, err := os.Stat(filepath.Join(dest, "etc/flannel/flanneld.env")); err == nil && st.Mode().Perm() != 0o600 {
		t.Errorf("flanneld.env mode %v, want 0600 (it may hold a password)", st.Mode().Perm())
	}
}
