package backend

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
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

// CheckOptionNames rejects keys of a backend's net-conf object other than
// Type and known (compared without regard to case, like every net-conf
// key), so a misspelt option is an error instead of silently ignored.
func CheckOptionNames(raw []byte, typ string, known ...string) error {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return fmt.Errorf("Backend: must be a JSON object: %w", err)
	}
	keys := slices.Sorted(maps.Keys(fields))
	for _, k := range keys {
		if strings.EqualFold(k, "Type") || slices.ContainsFunc(known, func(n string) bool { return strings.EqualFold(k, n) }) {
			continue
		}
		if len(known) == 0 {
			return fmt.Errorf("Backend.%s: %s has no options; remove it", k, typ)
		}
		return fmt.Errorf("Backend.%s: unknown %s option; known options: %s", k, typ, strings.Join(known, ", "))
	}
	return nil
}
