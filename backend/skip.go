package backend

import (
	"github.com/flanneld-go/flannel/subnet"
)

// Skip says why a backend's desired state leaves out a peer (or one
// aspect of it, such as its IPv6 half). Desired-state functions return
// skips instead of logging, so they stay pure; the backend hands them to
// its PeerLog, which logs each once.
type Skip struct {
	Peer subnet.Lease
	// Aspect tells apart several problems of one peer ("v6", "IPv4").
	Aspect string
	// Reason identifies the problem: a change of reason is logged again.
	Reason string
	Msg    string
	Attrs  []any
}

func (s Skip) key() string {
	if s.Aspect == "" {
		return s.Peer.Key()
	}
	return s.Peer.Key() + "/" + s.Aspect
}

// Report logs the skips of one reconcile: each problem once, and again
// when its reason changes. Problems that went away (the peer was fixed, or
// left) are forgotten, so they are logged again if they come back.
func (p *PeerLog) Report(skips []Skip) {
	current := make(map[string]bool, len(skips))
	for _, s := range skips {
		current[s.key()] = true
		p.Warn(s.key(), s.Reason, s.Msg, s.Attrs...)
	}
	for key := range p.seen {
		if !current[key] {
			delete(p.seen, key)
		}
	}
}

// ReportPeer logs the skips of one peer whose part was rebuilt:
// each new problem once, as Report does; the problems it had before
// (old) that are gone are forgotten, so they are logged again if they
// come back. The skips of other peers are left alone.
func (p *PeerLog) ReportPeer(old, skips []Skip) {
	now := make(map[string]bool, len(skips))
	for _, s := range skips {
		now[s.key()] = true
		p.Warn(s.key(), s.Reason, s.Msg, s.Attrs...)
	}
	for _, s := range old {
		if !now[s.key()] {
			delete(p.seen, s.key())
		}
	}
}
