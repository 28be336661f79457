package wireguard

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestOptions(t *testing.T) {
	o, err := parseOptions([]byte(`{"Type":"wireguard"}`))
	want := Options{Type: TypeName, ListenPort: 51820, ListenPortV6: 51821, Mode: ModeSeparate}
	if err != nil || o.(Options) != want {
		t.Fatalf("defaults: %+v %v", o, err)
	}
	o, err = parseOptions([]byte(`{"type":"wireguard","listenport":5000,"ListenPortV6":5001,"MTU":9000,"Mode":"Auto","PersistentKeepaliveInterval":25}`))
	want = Options{Type: TypeName, ListenPort: 5000, ListenPortV6: 5001, MTU: 9000, Mode: ModeAuto, PersistentKeepaliveInterval: 25}
	if err != nil || o.(Options) != want {
		t.Fatalf("options: %+v %v", o, err)
	}
	for raw, want := range map[string]string{
		`{"ListenPort":0}`:                      "Backend.ListenPort: 0 is not a UDP port",
		`{"ListenPortV6":65536}`:                "Backend.ListenPortV6: 65536 is not a UDP port",
		`{"Mode":"both"}`:                       `Backend.Mode: "both" is not a mode`,
		`{"MTU":100}`:                           "Backend.MTU: 100 is out of range",
		`{"PersistentKeepaliveInterval":-1}`:    "Backend.PersistentKeepaliveInterval: -1 is out of range",
		`{"PersistentKeepaliveInterval":"25s"}`: "Backend.PersistentKeepaliveInterval: expected a number",
	} {
		if _, err := parseOptions([]byte(raw)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", raw, err, want)
		}
	}
}

// The PSK never shows: not in the error for a bad one, not when the
// options are printed, marshalled (config check) or logged.
func TestPSKNeverShown(t *testing.T) {
	const bad = "c2VjcmV0LXZhbHVlLXRoYXQtaXMtbm90LWEta2V5"
	if _, err := parseOptions([]byte(`{"PSK":"` + bad + `"}`)); err == nil || strings.Contains(err.Error(), bad) {
		t.Errorf("bad PSK: %v", err)
	}
	psk := testKey(1).String()
	o, err := parseOptions([]byte(`{"PSK":"` + psk + `"}`))
	if err != nil {
		t.Fatal(err)
	}
	js, _ := json.Marshal(o)
	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("options", "options", o, "psk", o.(Options).PSK)
	slog.New(slog.NewTextHandler(&logs, nil)).Info("options", "options", o)
	for _, s := range []string{fmt.Sprint(o), fmt.Sprintf("%+v %#v %s", o, o, o.(Options).PSK), string(js), logs.String()} {
		if strings.Contains(s, psk) || strings.Contains(s, strings.TrimRight(psk, "=")[:20]) {
			t.Errorf("PSK shown: %s", s)
		}
	}
	if !strings.Contains(string(js), `"PSK":"(redacted)"`) {
		t.Errorf("marshalled: %s", js)
	}
	if o.(Options).psk() == nil || *o.(Options).psk() != testKey(1) {
		t.Error("the PSK itself is lost")
	}
}

func TestKeyFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "wgkey")
	k, created, err := loadOrCreateKey(path)
	if err != nil || !created {
		t.Fatalf("create: %v %v", created, err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v %v", fi.Mode(), err)
	}
	k2, created, err := loadOrCreateKey(path)
	if err != nil || created || k2 != k {
		t.Fatalf("reuse: created %v, same %v, %v", created, k2 == k, err)
	}
	// Upstream writes its key file 0400: accepted.
	os.Chmod(path, 0o400)
	if _, _, err := loadOrCreateKey(path); err != nil {
		t.Errorf("0400: %v", err)
	}
	os.Chmod(path, 0o644)
	_, _, err = loadOrCreateKey(path)
	if err == nil || !strings.Contains(err.Error(), "chmod 600 "+path) || strings.Contains(err.Error(), k.String()) {
		t.Errorf("0644: %v", err)
	}
	os.WriteFile(path, []byte("secret-but-not-a-key\n"), 0o600)
	os.Chmod(path, 0o600)
	_, _, err = loadOrCreateKey(path)
	if err == nil || strings.Contains(err.Error(), "secret-but") || !strings.Contains(err.Error(), "delete it") {
		t.Errorf("garbage: %v", err)
	}
	// A key written by wg genkey (no newline handling issues).
	os.WriteFile(path, []byte(k.String()), 0o600)
	if k3, _, err := loadOrCreateKey(path); err != nil || k3 != k {
		t.Errorf("wg genkey form: %v", err)
	}
	env := func(v string, ok bool) func(string) (string, bool) {
		return func(string) (string, bool) { return v, ok }
	}
	if keyFile(env("", false)) != DefaultKeyFile || keyFile(env("/etc/wg.key", true)) != "/etc/wg.key" {
		t.Error("WIREGUARD_KEY_FILE")
	}
}
