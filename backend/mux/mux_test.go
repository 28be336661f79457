package mux

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/flanneld-go/flannel/backend"
	"github.com/flanneld-go/flannel/backend/dataplane"
	"github.com/flanneld-go/flannel/backend/hostgw"
	"github.com/flanneld-go/flannel/subnet"
)

// fakeMember is a tunnel backend over the fake kernel: a device of its
// own, its address as host part, a route per peer through the device
// when perPeer (vxlan-like) or one route for the Network (udp-like).
type fakeMember struct {
	typ, dev string
	opts     any
	cfg      *subnet.Config
	k        *dataplane.Fake
	link     int
	own      subnet.Lease
	perPeer  bool
	fresh    bool
	tracked  map[string]bool
	commits  int
	atCommit string // the kernel's routes at the last Commit
	closed   bool
	running  chan struct{}
}

func (f *fakeMember) Prepare(context.Context) (subnet.LeaseAttrs, error) {
	f.link = f.k.AddLink(dataplane.Link{Name: f.dev, Type: "tun"})
	return subnet.LeaseAttrs{BackendType: f.typ, BackendData: []byte(fmt.Sprintf(`{"Opts":%q}`, fmt.Sprint(f.opts)))}, nil
}
func (f *fakeMember) Start(_ context.Context, own subnet.Lease) (int, error) {
	f.own = own
	return map[string]int{"vxlan": 1450, "udp": 1472}[f.typ], nil
}
func (f *fakeMember) Reconcile(context.Context, []subnet.Lease) (dataplane.Changes, error) {
	return dataplane.Changes{}, errors.New("not used")
}
func (f *fakeMember) Refresh(context.Context) (bool, error) {
	c := !f.fresh
	f.fresh = true
	return c, nil
}
func (f *fakeMember) HostState() dataplane.State {
	s := dataplane.State{Addrs: []dataplane.Addr{{LinkIndex: f.link, Prefix: netip.PrefixFrom(f.own.Subnet.Addr(), 32)}}}
	if !f.perPeer {
		s.Routes = []dataplane.Route{{Dst: f.cfg.Network, LinkIndex: f.link, Proto: dataplane.Proto}}
	}
	return s
}
func (f *fakeMember) PeerState(p subnet.Lease) (dataplane.State, []backend.Skip) {
	if !f.perPeer {
		return dataplane.State{}, nil
	}
	return dataplane.State{Routes: []dataplane.Route{{Dst: p.Subnet, LinkIndex: f.link, Proto: dataplane.Proto, OnLink: true,
		Gw: p.Subnet.Addr()}}}, nil
}
func (f *fakeMember) Links() []int             { return []int{f.link} }
func (f *fakeMember) Kernel() dataplane.Kernel { return f.k }
func (f *fakeMember) PeerLog() *backend.PeerLog {
	return backend.NewPeerLog(slog.New(slog.NewTextHandler(io.Discard, nil)))
}
func (f *fakeMember) Devices() []string    { return []string{f.dev} }
func (f *fakeMember) Track(p subnet.Lease) { f.tracked[p.Key()] = true }
func (f *fakeMember) Forget(key string)    { delete(f.tracked, key) }
func (f *fakeMember) Commit()              { f.commits++; f.atCommit = f.k.Dump() }
func (f *fakeMember) Close() error         { f.closed = true; f.k.DelLink(f.link); return nil }
func (f *fakeMember) Run(ctx context.Context) error {
	close(f.running)
	<-ctx.Done()
	return nil
}

type rig struct {
	m       *Mux
	k       *dataplane.Fake
	now     time.Time
	made    []*fakeMember
	failNew map[string]bool
}

func newRig(t *testing.T, primary string) *rig {
	t.Helper()
	cfg, _, err := subnet.ParseConfig([]byte(`{"Network":"10.244.0.0/16","Backend":{"Type":"` + primary + `"}}`))
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{k: dataplane.NewFake(), now: time.Unix(1000, 0), failNew: map[string]bool{}}
	eth := r.k.AddLink(dataplane.Link{Name: "eth0", Type: "veth"})
	r.k.Addrs[dataplane.Addr{LinkIndex: eth, Prefix: netip.MustParsePrefix("192.168.50.11/24")}] = true
	ext := &backend.ExternalInterface{Name: "eth0", Index: eth, MTU: 1500}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	factory := func(typ string, opts any) (backend.PerPeer, error) {
		if r.failNew[typ] {
			return nil, fmt.Errorf("no %s here", typ)
		}
		if typ == "host-gw" {
			return hostgw.New(ext, cfg, log, r.k), nil
		}
		f := &fakeMember{typ: typ, dev: map[string]string{"vxlan": "flannel.1", "udp": "flannel0"}[typ], opts: opts, cfg: cfg, k: r.k,
			perPeer: typ == "vxlan", tracked: map[string]bool{}, running: make(chan struct{})}
		r.made = append(r.made, f)
		return f, nil
	}
	r.m, err = New(Config{Log: log, New: factory, Defaults: func(typ string, _ subnet.Lease) (any, error) { return "default", nil },
		Now: func() time.Time { return r.now }}, primary, "configured")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := r.m.Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := r.m.Start(ctx, lease("10.244.1.0/24", "192.168.50.11", primary)); err != nil {
		t.Fatal(err)
	}
	return r
}

func lease(sn, ip, typ string) subnet.Lease {
	return subnet.Lease{Subnet: netip.MustParsePrefix(sn), Attrs: subnet.LeaseAttrs{PublicIP: netip.MustParseAddr(ip), BackendType: typ}}
}

// pass runs what the engine runs before a pass, then a full pass.
func (r *rig) pass(t *testing.T, rec *backend.Reconciler, peers []subnet.Lease) []string {
	t.Helper()
	retired, _, err := r.m.Need(context.Background(), CountTypes(peers), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rec.Full(context.Background(), peers); err != nil {
		t.Fatal(err)
	}
	return retired
}

func (r *rig) routes() string {
	var out []string
	for _, l := range strings.Split(r.k.Dump(), "\n") {
		if strings.HasPrefix(l, "ip route") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// Each peer is reached by the backend it advertises, through one table
// and one Apply: a vxlan peer through the VXLAN device, a host-gw peer by
// a direct route, udp peers through flannel0's Network route; the udp
// member hears of every peer (it accepts datagrams from all of them).
func TestMuxServesEachPeerByItsType(t *testing.T) {
	r := newRig(t, "vxlan")
	rec := backend.NewReconciler(r.m)
	peers := []subnet.Lease{lease("10.244.2.0/24", "192.168.50.12", "vxlan"), lease("10.244.3.0/24", "192.168.50.13", "host-gw"),
		lease("10.244.4.0/24", "192.168.50.14", "udp"), lease("10.244.5.0/24", "192.168.50.15", "")}
	r.pass(t, rec, peers)
	if got := strings.Join(r.m.Types(), " "); got != "host-gw udp vxlan" {
		t.Fatalf("members %s", got)
	}
	want := strings.Join([]string{
		"ip route 10.244.0.0/16 dev flannel0 proto 98",
		"ip route 10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink proto 98",
		"ip route 10.244.3.0/24 via 192.168.50.13 dev eth0 proto 98",
	}, "\n")
	if got := r.routes(); got != want {
		t.Errorf("routes:\n%s\nwant:\n%s", got, want)
	}
	udp := r.made[1]
	if len(udp.tracked) != 4 || udp.commits == 0 {
		t.Errorf("udp member tracked %v (commits %d), want every peer", udp.tracked, udp.commits)
	}
	if got := strings.Join(r.m.Devices(), " "); got != "flannel.1 flannel0" {
		t.Errorf("devices %s", got)
	}
	// The whole-set Reconcile gives the same kernel state.
	before := r.k.Dump()
	if _, err := r.m.Reconcile(context.Background(), peers); err != nil {
		t.Fatal(err)
	}
	if after := r.k.Dump(); after != before {
		t.Errorf("Reconcile changed the state:\n%s\nwas:\n%s", after, before)
	}
}

// A member whose last peer left is kept for the grace, then retired: its
// Run stops, it is closed, and its routes leave with the next full pass.
func TestMuxRetiresAfterGrace(t *testing.T) {
	r := newRig(t, "vxlan")
	rec := backend.NewReconciler(r.m)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- r.m.Run(ctx) }()
	udpPeer := lease("10.244.4.0/24", "192.168.50.14", "udp")
	r.pass(t, rec, []subnet.Lease{udpPeer})
	udp := r.made[1]
	<-udp.running
	switched := lease("10.244.4.0/24", "192.168.50.14", "vxlan")
	if retired := r.pass(t, rec, []subnet.Lease{switched}); len(retired) != 0 || udp.closed {
		t.Fatalf("retired %v at once (closed %v), want a grace", retired, udp.closed)
	}
	_, next, _ := r.m.Need(ctx, CountTypes([]subnet.Lease{switched}), nil)
	if next != DefaultGrace {
		t.Errorf("next %v, want %v", next, DefaultGrace)
	}
	if !strings.Contains(r.routes(), "dev flannel0") {
		t.Errorf("flannel0's route went during the grace:\n%s", r.routes())
	}
	r.now = r.now.Add(DefaultGrace)
	if retired := r.pass(t, rec, []subnet.Lease{switched}); !slices.Equal(retired, []string{"udp"}) || !udp.closed {
		t.Fatalf("retired %v (closed %v), want udp", retired, udp.closed)
	}
	if want := "ip route 10.244.4.0/24 via 10.244.4.0 dev flannel.1 onlink proto 98"; r.routes() != want {
		t.Errorf("routes:\n%s\nwant:\n%s", r.routes(), want)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// Switch makes another type the primary; the old primary serves its
// peers until they switch too. A type whose options changed gets a new
// backend; a switch that cannot be set up leaves the primary as it was.
func TestMuxSwitch(t *testing.T) {
	r := newRig(t, "vxlan")
	rec := backend.NewReconciler(r.m)
	ctx := context.Background()
	peer := lease("10.244.2.0/24", "192.168.50.12", "vxlan")
	r.pass(t, rec, []subnet.Lease{peer})
	attrs, mtu, err := r.m.Switch(ctx, "host-gw", hostgw.Options{Type: "host-gw"})
	if err != nil || attrs.BackendType != "host-gw" || mtu != 1500 || r.m.Primary() != "host-gw" {
		t.Fatalf("switch: %+v %d %v (primary %s)", attrs, mtu, err, r.m.Primary())
	}
	if !r.m.Changed() {
		t.Error("a switch must ask for a full pass")
	}
	r.pass(t, rec, []subnet.Lease{peer})
	if got := strings.Join(r.m.Types(), " "); got != "host-gw vxlan" {
		t.Errorf("members after the switch %s, want the old one kept for its peer", got)
	}
	// Back to vxlan with other options: a new device in place of the old.
	old := r.made[0]
	attrs, _, err = r.m.Switch(ctx, "vxlan", "other")
	if err != nil || !old.closed || len(r.made) != 2 || !strings.Contains(string(attrs.BackendData), "other") {
		t.Fatalf("switch with new options: %v closed %v made %d data %s", err, old.closed, len(r.made), attrs.BackendData)
	}
	r.failNew["udp"] = true
	if _, _, err := r.m.Switch(ctx, "udp", "x"); err == nil || r.m.Primary() != "vxlan" {
		t.Fatalf("failed switch: %v, primary %s", err, r.m.Primary())
	}
	if _, _, err := r.m.Switch(ctx, "wireguard", nil); err == nil {
		t.Fatal("wireguard cannot be switched to live")
	}
}

// A peer type whose backend cannot be set up is skipped, and the error
// returned for the engine to log; the other peers are served.
func TestMuxMemberFailure(t *testing.T) {
	r := newRig(t, "vxlan")
	r.failNew["udp"] = true
	rec := backend.NewReconciler(r.m)
	peers := []subnet.Lease{lease("10.244.2.0/24", "192.168.50.12", "vxlan"), lease("10.244.4.0/24", "192.168.50.14", "udp")}
	if _, _, err := r.m.Need(context.Background(), CountTypes(peers), nil); err == nil || !strings.Contains(err.Error(), "no udp here") {
		t.Fatalf("Need: %v", err)
	}
	if _, err := rec.Full(context.Background(), peers); err != nil {
		t.Fatal(err)
	}
	if want := "ip route 10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink proto 98"; r.routes() != want {
		t.Errorf("routes:\n%s\nwant:\n%s", r.routes(), want)
	}
}

// udp's table changes between the kernel's additions and deletions: a
// peer moving from udp to vxlan has its VXLAN route when udp forgets it,
// and one moving back is in udp's table before that route goes.
func TestMuxCommitBetweenAddsAndDeletes(t *testing.T) {
	r := newRig(t, "vxlan")
	rec := backend.NewReconciler(r.m)
	asUDP, asVXLAN := lease("10.244.4.0/24", "192.168.50.14", "udp"), lease("10.244.4.0/24", "192.168.50.14", "vxlan")
	other := lease("10.244.5.0/24", "192.168.50.15", "udp") // keeps the udp member
	r.pass(t, rec, []subnet.Lease{asUDP, other})
	udp := r.made[1]
	const vxRoute = "ip route 10.244.4.0/24 via 10.244.4.0 dev flannel.1 onlink proto 98"
	if _, err := rec.Update([]subnet.Lease{asVXLAN}, nil); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(udp.atCommit, vxRoute) {
		t.Errorf("udp committed before the VXLAN route was in:\n%s", udp.atCommit)
	}
	if _, err := rec.Update([]subnet.Lease{asUDP}, nil); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(udp.atCommit, vxRoute) || strings.Contains(r.routes(), vxRoute) {
		t.Errorf("udp committed after the VXLAN route went:\n%s\nnow:\n%s", udp.atCommit, r.routes())
	}
}
