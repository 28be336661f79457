package network

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/flanneld-go/flannel/backend/registry"
	"github.com/flanneld-go/flannel/subnet"
	"github.com/flanneld-go/flannel/subnet/etcd"
)

// netConf is the validated net-conf the daemon runs with, and where it
// came from: "file" or "key" and the path or key, for log lines.
type netConf struct {
	cfg       *subnet.Config
	opts      any // the backend's options, from its ParseOptions
	kind, src string
}

// loadNetConf reads the net-conf from c.NetConfPath when it is set, else
// from etcd, waiting for the key. Warnings are logged, one line each; an
// invalid net-conf, or a file that cannot be read, is an error (a missing
// file is not waited for: upstream stops too).
func loadNetConf(ctx context.Context, c Config, sm *etcd.Manager, log *slog.Logger) (netConf, error) {
	if c.NetConfPath != "" {
		nc := netConf{kind: "file", src: c.NetConfPath}
		data, err := os.ReadFile(c.NetConfPath)
		if err != nil {
			return nc, fmt.Errorf("--net-config-path: %w; create the file, or leave the flag out to read the net-conf from etcd at %s", err, sm.ConfigKey())
		}
		var warnings []string
		nc.cfg, nc.opts, warnings, err = parseNetConf(data)
		for _, w := range warnings {
			log.Warn("net-conf warning", "file", nc.src, "warning", w)
		}
		if err != nil {
			return nc, fmt.Errorf("invalid net-conf in %s: %w", nc.src, err)
		}
		log.Info("read the net-conf from a file, not from etcd", "file", nc.src, "backend", nc.cfg.BackendType, "network", nc.cfg.Network)
		return nc, nil
	}
	nc := netConf{kind: "key", src: sm.ConfigKey()}
	cfg, err := sm.WaitConfig(ctx) // logs the document's warnings
	if err != nil {
		return nc, err
	}
	bt, err := registry.Lookup(cfg.BackendType)
	if err != nil {
		return nc, fmt.Errorf("invalid net-conf at %s: %w", nc.src, err)
	}
	for _, w := range bt.OptionWarnings(cfg.Backend) {
		log.Warn("net-conf warning", "key", nc.src, "warning", w)
	}
	if nc.opts, err = bt.ParseOptions(cfg.Backend); err != nil {
		return nc, fmt.Errorf("invalid net-conf at %s: %w", nc.src, err)
	}
	nc.cfg = cfg
	return nc, nil
}

// netConfWatch follows the file of --net-config-path. The net-conf is read
// once, at start-up, wherever it comes from (an etcd key is not watched
// either): a change of the file is reported, one line per change, with
// what a restart would do, and the running config stays.
type netConfWatch struct {
	path    string
	running []byte // the running config's effective form
	last    []byte // the file's content when last read; nil before
	gone    bool   // the file was missing when last read
	log     *slog.Logger
}

func newNetConfWatch(path string, running *subnet.Config, log *slog.Logger) *netConfWatch {
	eff, _ := running.Effective(nil) // nil only if it cannot be rendered: then any change is reported
	return &netConfWatch{path: path, running: eff, log: log}
}

// run checks the file every period until ctx is done.
func (w *netConfWatch) run(ctx context.Context, period time.Duration) error {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		w.check()
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// check reads the file once and logs what changed since the last check.
func (w *netConfWatch) check() {
	data, err := os.ReadFile(w.path)
	if err != nil {
		if !w.gone {
			w.gone = true
			w.log.Error("the net-conf file cannot be read; the running config stays, but a restart would fail: restore the file",
				"file", w.path, "error", err)
		}
		return
	}
	changed := w.last != nil || w.gone // a first read is a change only if it differs
	if w.last != nil && bytes.Equal(data, w.last) && !w.gone {
		return
	}
	w.last, w.gone = data, false
	cfg, _, _, err := parseNetConf(data)
	if err != nil {
		w.log.Error("the net-conf file changed and is invalid; the running config stays, fix the file before the next restart",
			"file", w.path, "error", err)
		return
	}
	eff, err := cfg.Effective(nil)
	switch {
	case err == nil && bytes.Equal(eff, w.running):
		if changed {
			w.log.Info("the net-conf file changed; it means the running config, nothing to do", "file", w.path)
		}
	default:
		w.log.Warn("the net-conf file changed; restart flanneld to apply it (as for a change of the etcd key)",
			"file", w.path, "backend", cfg.BackendType, "network", cfg.Network)
	}
}
