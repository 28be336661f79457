package mux

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/flanneld-go/flannel/backend"
	"github.com/flanneld-go/flannel/subnet"
)

// Need makes the members match the peers' types (counts by LeaseType): a
// type with peers and no member gets one; a member other than the primary
// with no peer left is retired once it has had none for Grace. It returns
// the types retired (the engine deletes their devices), and when to call
// again for a member still in its grace (0: none is). An error is the
// first member that could not be set up; its peers are skipped until a
// later call succeeds. sample gives a peer of a type (nil: none), whose
// lease data the options of a type the net-conf never named start from
// (vxlan's VNI).
func (m *Mux) Need(ctx context.Context, byType map[string]int, sample func(typ string) subnet.Lease) (retired []string, next time.Duration, err error) {
	now := m.cfg.Now()
	for _, typ := range sortedKeys(byType) {
		if byType[typ] == 0 {
			continue
		}
		if mb := m.members[typ]; mb != nil {
			mb.idle = time.Time{}
			continue
		}
		var peer subnet.Lease
		if sample != nil {
			peer = sample(typ)
		}
		if aerr := m.addFor(ctx, typ, byType[typ], peer); aerr != nil && err == nil {
			err = aerr
		}
	}
	for _, typ := range m.typesLocked() {
		mb := m.members[typ]
		if mb == m.primary || byType[typ] > 0 || typ == m.held {
			continue
		}
		if mb.idle.IsZero() {
			mb.idle = now
		}
		if left := m.cfg.Grace - now.Sub(mb.idle); left > 0 {
			if next == 0 || left < next {
				next = left
			}
			continue
		}
		m.retire(mb, "no peer of this type is left")
	}
	retired, m.retiredSince = m.retiredSince, nil
	return retired, next, err
}

// addFor adds a member for peers of typ, with the options the net-conf
// last gave the type, or its defaults.
func (m *Mux) addFor(ctx context.Context, typ string, peers int, peer subnet.Lease) error {
	if !CanMix(typ) {
		return fmt.Errorf("peers of backend %s cannot be served beside %s", typ, m.primary.typ)
	}
	opts, ok := m.opts[typ]
	if !ok {
		var err error
		if opts, err = m.cfg.Defaults(typ, peer); err != nil {
			return fmt.Errorf("options of the %s backend: %w", typ, err)
		}
	}
	mb, err := m.add(ctx, typ, opts)
	if err != nil {
		return err
	}
	m.log.Info("serving peers of another backend type beside ours", "backend", m.primary.typ, "peer_backend", typ,
		"peers", peers, "mtu", mb.mtu)
	return nil
}

// add creates, prepares and (once the lease is known) starts a member,
// and starts its Run when the Mux runs.
func (m *Mux) add(ctx context.Context, typ string, opts any) (*member, error) {
	be, err := m.cfg.New(typ, opts)
	if err != nil {
		return nil, fmt.Errorf("creating the %s backend: %w", typ, err)
	}
	mb := &member{typ: typ, opts: opts, be: be}
	if mb.attrs, err = be.Prepare(ctx); err != nil {
		m.close(mb)
		return nil, fmt.Errorf("preparing the %s backend: %w", typ, err)
	}
	if m.started {
		if mb.mtu, err = be.Start(ctx, m.own); err != nil {
			m.close(mb)
			return nil, fmt.Errorf("starting the %s backend for %s: %w", typ, m.own.String(), err)
		}
	}
	m.mu.Lock()
	m.members[typ] = mb
	if m.runCtx != nil {
		m.runLocked(mb)
	}
	m.mu.Unlock()
	m.changed = true
	return mb, nil
}

// Switch makes a backend of typ with opts the primary: the member of that
// type if it has the same options, else a new one (a member of the type
// with other options is retired first: two of a type would hold the same
// devices and port). The old primary stays a member while peers of its
// type are left (see Need). It returns what to publish and the pods' MTU.
// On failure the primary is unchanged; if the member it had to retire
// cannot be brought back, the error wraps ErrBroken (the Mux has no
// primary that works: the daemon must start again). A member retired on
// the way is reported by the next Need, so its devices get deleted.
func (m *Mux) Switch(ctx context.Context, typ string, opts any) (subnet.LeaseAttrs, int, error) {
	if !CanMix(typ) {
		return subnet.LeaseAttrs{}, 0, fmt.Errorf("the %s backend cannot be switched to live", typ)
	}
	old := m.primary
	mb := m.members[typ]
	var replaced *member
	if mb != nil && !sameOptions(mb.opts, opts) {
		replaced = mb
		m.retire(mb, "its options changed")
		mb = nil
	}
	if mb == nil {
		var err error
		if mb, err = m.add(ctx, typ, opts); err != nil {
			if replaced != nil {
				if rerr := m.restore(ctx, replaced); rerr != nil {
					return subnet.LeaseAttrs{}, 0, fmt.Errorf("%w: %w (and bringing the %s backend back: %w)", ErrBroken, err, replaced.typ, rerr)
				}
			}
			return subnet.LeaseAttrs{}, 0, err
		}
	}
	m.opts[typ] = opts
	m.primary, mb.idle = mb, time.Time{}
	m.changed = true
	if old != mb && m.members[old.typ] == old {
		m.held = old.typ
	}
	return mb.attrs, mb.mtu, nil
}

// Published tells the Mux that our lease advertises the primary now: the
// type it advertised before is no longer held (peers that still reach us
// by it had not seen the new lease; its grace starts with the next Need).
func (m *Mux) Published() {
	if mb := m.members[m.held]; mb != nil {
		mb.idle = time.Time{}
	}
	m.held = ""
}

// ErrBroken: a failed Switch could not bring back the backend it retired.
var ErrBroken = errors.New("the running backend could not be restored")

// restore brings back a member retired by a Switch that failed.
func (m *Mux) restore(ctx context.Context, old *member) error {
	mb, err := m.add(ctx, old.typ, old.opts)
	if err != nil {
		return err
	}
	if old == m.primary {
		m.primary = mb
	}
	return nil
}

// retire removes a member: its Run is stopped and it is closed. Its
// entries leave the kernel with the next full reconcile, its devices
// when the engine deletes them.
func (m *Mux) retire(mb *member, why string) {
	m.mu.Lock()
	if m.members[mb.typ] == mb {
		delete(m.members, mb.typ)
	}
	m.mu.Unlock()
	m.changed, m.retiredSince = true, append(m.retiredSince, mb.typ)
	m.close(mb)
	m.log.Info("retired a backend", "backend", m.primary.typ, "retired_backend", mb.typ, "reason", why)
}

func (m *Mux) close(mb *member) {
	if mb.cancel != nil {
		mb.cancel()
		<-mb.done
	}
	if c, ok := mb.be.(backend.Closer); ok {
		if err := c.Close(); err != nil {
			m.log.Warn("closing a retired backend", "backend", mb.typ, "error", err)
		}
	}
}

// Run implements backend.Runner: the Run of every member that has one,
// as members come and go. It returns when ctx is done, or with the first
// error of a member still serving.
func (m *Mux) Run(ctx context.Context) error {
	m.mu.Lock()
	m.runCtx = ctx
	for _, mb := range m.members {
		m.runLocked(mb)
	}
	m.mu.Unlock()
	var err error
	select {
	case <-ctx.Done():
	case err = <-m.runErr:
	}
	// The members' Runs end with ctx (or end the daemon with err): wait
	// for them, so udp's device and port are released when Run returns.
	m.mu.Lock()
	var dones []chan struct{}
	for _, mb := range m.members {
		if mb.done != nil {
			dones = append(dones, mb.done)
		}
	}
	m.mu.Unlock()
	for _, d := range dones {
		<-d
	}
	return err
}

// runLocked starts mb's Run; the caller holds mu.
func (m *Mux) runLocked(mb *member) {
	r, ok := mb.be.(backend.Runner)
	if !ok || mb.cancel != nil {
		return
	}
	rctx, cancel := context.WithCancel(m.runCtx)
	mb.cancel, mb.done = cancel, make(chan struct{})
	go func() {
		defer close(mb.done)
		if err := r.Run(rctx); err != nil && rctx.Err() == nil {
			select {
			case m.runErr <- fmt.Errorf("%s backend: %w", mb.typ, err):
			default:
			}
		}
	}()
}

func sortedKeys(byType map[string]int) []string {
	out := make([]string, 0, len(byType))
	for t := range byType {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}
