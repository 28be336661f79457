package network

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flanneld-go/flannel/subnet/etcd"
)

// TestLoadNetConfFile: --net-config-path reads the net-conf from the
// file (etcd is not asked: the manager has no client), with its warnings
// logged one line each; a missing or invalid file stops the daemon.
func TestLoadNetConfFile(t *testing.T) {
	dir := t.TempDir()
	sm := etcd.NewManager(nil, "/coreos.com/network", 0, nil)
	for _, c := range []struct {
		name, doc string // doc "" leaves the file missing
		backend   string
		logs, err []string
	}{
		{name: "vxlan", doc: `{"Network":"10.244.0.0/16","Backend":{"Type":"VXLAN","VNI":4,"MacPrefix":"0E-2A"}}`, backend: "vxlan",
			logs: []string{`msg="net-conf warning" file=`, `warning="Backend.MacPrefix: an option of upstream's Windows nodes; ignored here"`,
				`msg="read the net-conf from a file, not from etcd"`}},
		{name: "no backend", doc: `{"Network":"10.244.0.0/16"}`, backend: "udp", logs: []string{"Backend is not set: using the udp backend"}},
		{name: "invalid", doc: `{"Network":"10.244.0.0/33"}`, err: []string{"invalid net-conf in ", `Network: "10.244.0.0/33" is not a CIDR prefix`}},
		{name: "missing", err: []string{"--net-config-path: open ", "no such file", "or leave the flag out to read the net-conf from etcd at /coreos.com/network/config"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(dir, c.name+".json")
			if c.doc != "" {
				os.WriteFile(path, []byte(c.doc), 0o644)
			}
			var buf bytes.Buffer
			nc, err := loadNetConf(context.Background(), Config{NetConfPath: path}, sm, slog.New(slog.NewTextHandler(&buf, nil)))
			for _, w := range c.err {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("error %v, want it to contain %q", err, w)
				}
			}
			if len(c.err) > 0 {
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if nc.cfg.BackendType != c.backend || nc.opts == nil || nc.src != path {
				t.Errorf("got %+v", nc)
			}
			for _, w := range c.logs {
				if !strings.Contains(buf.String(), w) {
					t.Errorf("log lacks %q:\n%s", w, buf.String())
				}
			}
		})
	}
}

// TestNetConfWatch: each change of the file's content goes to the loop
// once (valid or not); the same content, a missing file, are not sent.
func TestNetConfWatch(t *testing.T) {
	path := filepath.Join(t.TempDir(), "net-conf.json")
	orig := `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`
	os.WriteFile(path, []byte(orig), 0o644)
	nc, err := loadNetConf(context.Background(), Config{NetConfPath: path}, etcd.NewManager(nil, "", 0, nil), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	w := newNetConfWatch(path, nc.raw, slog.New(slog.NewTextHandler(&buf, nil)), nil)
	for _, step := range []struct {
		name  string
		write string // "" removes the file
		sent  string // the backend of the change sent; "invalid"; "" for none
		log   string // the one line logged, "" for none
	}{
		{"first look, unchanged", orig, "", ""},
		{"same again", orig, "", ""},
		{"reformatted", "{\n  \"Network\": \"10.244.0.0/16\",\n  \"Backend\": {\"Type\": \"vxlan\"}\n}\n", "vxlan", ""},
		{"another backend", `{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}`, "host-gw", ""},
		{"no change since", `{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}`, "", ""},
		{"broken", `{"Network":`, "invalid", ""},
		{"removed", "", "", `level=ERROR msg="the net-conf file cannot be read; the running config stays, but a restart would fail: restore the file"`},
		{"still removed", "", "", ""},
		{"restored", orig, "vxlan", ""},
	} {
		buf.Reset()
		if step.write == "" {
			os.Remove(path)
		} else {
			os.WriteFile(path, []byte(step.write), 0o644)
		}
		ch, ok := w.check()
		got := ""
		switch {
		case ok && ch.Err != nil:
			got = "invalid"
		case ok:
			got = ch.Config.BackendType
		}
		if got != step.sent {
			t.Errorf("%s: sent %q (err %v), want %q", step.name, got, ch.Err, step.sent)
		}
		lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
		switch {
		case step.log == "" && buf.Len() != 0:
			t.Errorf("%s: logged\n%s", step.name, buf.String())
		case step.log != "" && (len(lines) != 1 || !strings.Contains(lines[0], step.log)):
			t.Errorf("%s: logged\n%s\nwant one line with %q", step.name, buf.String(), step.log)
		}
	}
}
