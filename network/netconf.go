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
	raw       []byte // the document as read
	opts      any    // the backend's options, from its ParseOptions
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
		nc.raw = data
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
	raw, cfg, err := sm.WaitConfigRaw(ctx) // logs the document's warnings
	if err != nil {
		return nc, err
	}
	nc.raw = raw
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

// netConfWatch follows the file of --net-config-path, checked every
// period: each change of its content goes to the loop, which applies it
// live or refuses it, as a change of the etcd key (switch.go). A file
// that cannot be read is logged once; the running config stays.
type netConfWatch struct {
	path string
	last []byte // the content when last read (at start: the running one)
	gone bool   // the file was missing when last read
	log  *slog.Logger
	out  chan<- etcd.ConfigChange
}

func newNetConfWatch(path string, running []byte, log *slog.Logger, out chan<- etcd.ConfigChange) *netConfWatch {
	return &netConfWatch{path: path, last: running, log: log, out: out}
}

// run checks the file every period until ctx is done.
func (w *netConfWatch) run(ctx context.Context, period time.Duration) error {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		if ch, ok := w.check(); ok {
			select {
			case w.out <- ch:
			case <-ctx.Done():
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// check reads the file once and returns its new content, if it changed.
func (w *netConfWatch) check() (etcd.ConfigChange, bool) {
	data, err := os.ReadFile(w.path)
	if err != nil {
		if !w.gone {
			w.gone = true
			w.log.Error("the net-conf file cannot be read; the running config stays, but a restart would fail: restore the file",
				"file", w.path, "error", err)
		}
		return etcd.ConfigChange{}, false
	}
	w.gone = false
	if bytes.Equal(data, w.last) {
		return etcd.ConfigChange{}, false
	}
	w.last = data
	ch := etcd.ConfigChange{Raw: data}
	ch.Config, _, ch.Warnings, ch.Err = parseNetConf(data)
	if ch.Err != nil {
		ch.Config = nil
		ch.Err = fmt.Errorf("%w in %s: %w", etcd.ErrInvalidConfig, w.path, ch.Err)
	}
	return ch, true
}
