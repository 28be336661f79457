package backend

import (
	"log/slog"
)

// PeerLog reports problems with individual peers without flooding the log:
// a problem is logged when first seen for a peer and again only when its
// reason changes, although reconcile runs every few seconds. It is not safe
// for concurrent use; backends call it from Reconcile, which the engine
// never runs concurrently.
type PeerLog struct {
	log  *slog.Logger
	seen map[string]string // peer key (optionally "key/aspect") -> reason logged
}

// NewPeerLog returns a PeerLog writing to log.
func NewPeerLog(log *slog.Logger) *PeerLog {
	return &PeerLog{log: log, seen: map[string]string{}}
}

// Warn logs msg for key unless the same reason was the last one logged.
func (p *PeerLog) Warn(key, reason, msg string, args ...any) {
	if p.seen[key] == reason {
		return
	}
	p.seen[key] = reason
	p.log.Warn(msg, args...)
}
