package udp

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/flanneld-go/flannel/backend"
	"github.com/flanneld-go/flannel/backend/dataplane"
	"github.com/flanneld-go/flannel/subnet"
)

// How the engine drives the backend (backend.PerPeer and backend.Tracker).
// The kernel state is flannel0's addresses and the Network routes alone
// (HostState); a peer's part of it is empty, since the daemon, not the
// kernel, picks the peer of each packet. What a peer changes is the
// forwarding table: Track and Forget record the leases, Commit rebuilds
// the table from them and publishes it with one atomic store, before the
// reconciler touches the kernel. Reconcile, the whole-set entry point, is
// the same steps over the whole peer set.

var (
	_ backend.PerPeer = (*Backend)(nil)
	_ backend.Tracker = (*Backend)(nil)
	_ backend.Closer  = (*Backend)(nil)
)

// member is what the table needs of one tracked lease.
type member struct {
	subnet4, subnet6 netip.Prefix // subnet6 invalid without dual-stack
	ip               netip.Addr   // the IPv4 PublicIP
	forward          bool         // a udp lease: packets go to it
	// lingerUntil: a udp lease that moved to another backend is still
	// forwarded to until then (see switchLinger).
	lingerUntil time.Time
}

// switchLinger is how long packets are still sent by udp to a peer whose
// lease moved to another backend. Packets the kernel routed into flannel0
// before the peer's new route appeared are still in the TUN queue when
// the table forgets the peer; without it they would be dropped
// (no_route), dozens of them under a TCP transfer. The peer keeps its udp
// side at least as long (mux.DefaultGrace).
const switchLinger = time.Second

// IsUDP reports whether a lease is of a udp host: BackendType udp or, as
// upstream's udp backend writes, none.
func IsUDP(l subnet.Lease) bool {
	return l.Attrs.BackendType == "" || l.Attrs.BackendType == TypeName
}

// memberOf is the table's view of l; false when l has no IPv4 subnet and
// PublicIP, without which no datagram goes to it or comes from it.
func memberOf(cfg *subnet.Config, l subnet.Lease) (member, bool) {
	if !l.Subnet.IsValid() || !l.Attrs.PublicIP.Is4() {
		return member{}, false
	}
	m := member{subnet4: l.Subnet.Masked(), ip: l.Attrs.PublicIP, forward: IsUDP(l)}
	if cfg.EnableIPv6 && l.IPv6Subnet.IsValid() {
		m.subnet6 = l.IPv6Subnet.Masked()
	}
	return m, true
}

// appendTo appends m's entries: its subnets (both families with
// dual-stack) at its IPv4 PublicIP and the backend port. The underlay of
// this backend is IPv4, as upstream's.
func (m member) appendTo(ps []peer, port int, now time.Time) []peer {
	ap := netip.AddrPortFrom(m.ip, uint16(port))
	acceptOnly := !m.forward && !now.Before(m.lingerUntil)
	ps = append(ps, peer{addr: ap, subnet: m.subnet4, acceptOnly: acceptOnly})
	if m.subnet6.IsValid() {
		ps = append(ps, peer{addr: ap, subnet: m.subnet6, acceptOnly: acceptOnly})
	}
	return ps
}

// skip is the problem a lease has for this backend, if any: a udp lease
// without an IPv4 subnet and PublicIP cannot be served. A lease of
// another type has none: nothing goes to it through us.
func skip(cfg *subnet.Config, l subnet.Lease) []backend.Skip {
	if _, ok := memberOf(cfg, l); ok || !IsUDP(l) {
		return nil
	}
	return []backend.Skip{{Peer: l, Reason: "v4", Msg: "ignoring peer without an IPv4 subnet and PublicIP",
		Attrs: []any{"peer_subnet", l.String(), "peer_ip", l.Attrs.PublicIP}}}
}

// Peers turns leases into forwarding-table entries, by the rule of Track:
// a udp lease's subnets go to its IPv4 PublicIP and our port, a lease of
// another type may only send to us. Leases it cannot serve are returned
// as skips.
func Peers(cfg *subnet.Config, o Options, leases []subnet.Lease) ([]peer, []backend.Skip) {
	var out []peer
	var skips []backend.Skip
	for _, l := range leases {
		if m, ok := memberOf(cfg, l); ok {
			out = m.appendTo(out, o.Port, time.Time{})
		}
		skips = append(skips, skip(cfg, l)...)
	}
	return out, skips
}

// Track implements backend.Tracker: p's entries are in the table from the
// next Commit (a lease it cannot serve is left out).
func (b *Backend) Track(p subnet.Lease) {
	m, ok := memberOf(b.cfg, p)
	key := p.Key()
	b.mu.Lock()
	defer b.mu.Unlock()
	old, had := b.tracked[key]
	switch {
	case ok && had && !m.forward && old.forward:
		m.lingerUntil = b.clock().Add(switchLinger)
	case ok && had && !m.forward:
		m.lingerUntil = old.lingerUntil
	}
	switch {
	case ok && (!had || old != m):
		b.tracked[key] = m
		b.dirty = true
	case !ok && had:
		delete(b.tracked, key)
		b.dirty = true
	}
}

// Forget implements backend.Tracker: the peer's entries leave the table at
// the next Commit.
func (b *Backend) Forget(key string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.tracked[key]; ok {
		delete(b.tracked, key)
		b.dirty = true
	}
}

// Commit implements backend.Tracker: the table is rebuilt from the tracked
// leases and published, if any changed since the last one.
func (b *Backend) Commit() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.dirty {
		b.dirty = false
		b.publish()
	}
}

// forgetAllBut forgets the tracked leases whose keys are not in keep.
func (b *Backend) forgetAllBut(keep map[string]struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for key := range b.tracked {
		if _, ok := keep[key]; !ok {
			delete(b.tracked, key)
			b.dirty = true
		}
	}
}

// publish swaps in a table for the current lease and the tracked leases.
// The caller holds b.mu.
func (b *Backend) publish() {
	var own4, own6, net6 netip.Prefix
	if b.own.Subnet.IsValid() {
		own4 = b.own.Subnet.Masked()
	}
	per := 1
	if b.cfg.EnableIPv6 {
		net6, per = b.cfg.IPv6Network, 2
		if b.own.IPv6Subnet.IsValid() {
			own6 = b.own.IPv6Subnet.Masked()
		}
	}
	ps := make([]peer, 0, per*len(b.tracked))
	now := b.clock()
	for _, m := range b.tracked {
		ps = m.appendTo(ps, b.opts.Port, now)
		if !m.lingerUntil.IsZero() && now.Before(m.lingerUntil) {
			b.dirty = true // the next Commit drops the lingering entry if it is over
		}
	}
	b.table.Store(newTable(b.cfg.Network, net6, own4, own6, ps))
}

// Reconcile implements backend.Backend: the whole-set form of what the
// reconciler does, over the same steps: every peer tracked, the others
// forgotten, the table committed, and flannel0's addresses and routes
// made sure of.
func (b *Backend) Reconcile(ctx context.Context, peers []subnet.Lease) (dataplane.Changes, error) {
	var skips []backend.Skip
	keep := make(map[string]struct{}, len(peers))
	for _, p := range peers {
		keep[p.Key()] = struct{}{}
		b.Track(p)
		skips = append(skips, skip(b.cfg, p)...)
	}
	b.forgetAllBut(keep)
	b.peerLog.Report(skips)
	b.Commit()
	if _, err := b.Refresh(ctx); err != nil {
		return dataplane.Changes{}, err
	}
	return dataplane.Apply(b.k, b.Links(), b.HostState())
}

// Refresh implements backend.PerPeer: flannel0's index, which HostState
// and Links use. It does not re-create a missing flannel0, unlike vxlan's:
// the device lives with its queues, which the packet loops hold, and Run
// re-creates it as soon as they see it gone; a second creator could
// replace a device Run has just made, or make one after shutdown. Until
// Run has done so, Refresh fails and the engine retries.
func (b *Backend) Refresh(context.Context) (bool, error) {
	if b.down.Load() {
		return false, errClosed
	}
	link, err := b.k.LinkByName(DeviceName)
	if dataplane.IsNotFound(err) {
		return false, fmt.Errorf("%s is missing (the packet loop re-creates it): %w", DeviceName, err)
	}
	if err != nil {
		return false, fmt.Errorf("%s: %w", DeviceName, err)
	}
	if !link.Up {
		// Set down by hand: the kernel dropped its routes, which the
		// reconcile that follows puts back.
		b.log.Warn("udp device was down; bringing it up", "device", DeviceName)
		if err := b.k.LinkSetUp(link.Index); err != nil {
			return false, fmt.Errorf("bringing %s up: %w", DeviceName, err)
		}
	}
	changed := !b.refreshed || link.Index != b.index
	b.index, b.refreshed = link.Index, true
	return changed, nil
}

// HostState implements backend.PerPeer: State for our lease on flannel0.
func (b *Backend) HostState() dataplane.State {
	b.mu.Lock()
	own := b.own
	b.mu.Unlock()
	return State(b.cfg, own, b.index)
}

// PeerState implements backend.PerPeer: no kernel state depends on a
// peer; only the skip of a udp lease that cannot be served.
func (b *Backend) PeerState(p subnet.Lease) (dataplane.State, []backend.Skip) {
	return dataplane.State{}, skip(b.cfg, p)
}

// Links implements backend.PerPeer: flannel0.
func (b *Backend) Links() []int { return []int{b.index} }

// Kernel implements backend.PerPeer.
func (b *Backend) Kernel() dataplane.Kernel { return b.k }

// PeerLog implements backend.PerPeer.
func (b *Backend) PeerLog() *backend.PeerLog { return b.peerLog }

// clock is b.now, time.Now when unset.
func (b *Backend) clock() time.Time {
	if b.now == nil {
		return time.Now()
	}
	return b.now()
}
