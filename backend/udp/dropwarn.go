package udp

import (
	"log/slog"
	"net/netip"
	"sync"
	"time"
)

// Drops that point at a misconfigured or hostile sender (a host outside
// the cluster, a peer sending from another port, a peer forwarding
// packets from addresses it does not own, corrupt segments) get a warning
// of their own, naming the last offending datagram: one line per reason at
// most every dropWarnPeriod, with the number dropped since the previous
// line. The counters count every drop; the packet path only records the
// offender (one uncontended lock, no allocation) and the logger reads it.

const dropWarnPeriod = time.Minute

// offender is the last datagram one packet goroutine dropped for one
// reason.
type offender struct {
	mu     sync.Mutex
	from   netip.AddrPort
	src    netip.Addr   // inner source, when decoded
	subnet netip.Prefix // the sending peer's subnet, when it is a peer
}

// dropWarning is the warning of one reason: what happened and what to do.
type dropWarning struct {
	reason int
	msg    string
}

var dropWarnings = []dropWarning{
	{dropNotPeer, "dropping datagrams from an address that is no peer's PublicIP: a host outside the cluster sends to the udp port, " +
		"or a new peer whose lease this host has not seen yet (compare with flanneld leases)"},
	{dropWrongPort, "dropping datagrams from a peer's PublicIP but not from the udp port: every host must use the same Backend.Port, " +
		"and nothing between the hosts may rewrite ports (NAT); anything else sending from that host is not its flanneld"},
	{dropSpoofedSource, "dropping datagrams whose inner source is outside the sending peer's subnet: that host forwards packets " +
		"it does not own (a pod with a forged address, or a route sending foreign traffic into flannel0); check that host"},
	{dropBadChecksum, "dropping TCP segments whose checksum does not verify: the sending host or something on the way corrupts them; " +
		"compare with FLANNEL_UDP_OFFLOAD=off on that host"},
}

// dropFrom counts n packets dropped for reason and records the offender.
func (c *counters) dropFrom(reason int, n uint64, from netip.AddrPort, src netip.Addr, sn netip.Prefix) {
	c.drops[reason].Add(n)
	o := &c.last[reason]
	o.mu.Lock()
	o.from, o.src, o.subnet = from, src, sn
	o.mu.Unlock()
}

// dropWarner logs the warnings; it belongs to the stats logger.
type dropWarner struct {
	log    *slog.Logger
	port   int
	warned [numDrops]uint64    // the count at the last warning
	at     [numDrops]time.Time // when it was logged
}

// check logs a warning for each reason whose count grew since its last
// warning, unless that was less than dropWarnPeriod before now.
func (w *dropWarner) check(now time.Time, cs []*counters) {
	for _, dw := range dropWarnings {
		r := dw.reason
		var total uint64
		var last *offender
		for _, c := range cs {
			if n := c.drops[r].Load(); n > 0 {
				total += n
				last = &c.last[r]
			}
		}
		if total == w.warned[r] || (!w.at[r].IsZero() && now.Sub(w.at[r]) < dropWarnPeriod) {
			continue
		}
		last.mu.Lock()
		from, src, sn := last.from, last.src, last.subnet
		last.mu.Unlock()
		attrs := []any{"reason", dropNames[r], "dropped", total - w.warned[r], "from", from}
		switch r {
		case dropWrongPort:
			attrs = append(attrs, "udp_port", w.port)
		case dropSpoofedSource, dropBadChecksum:
			attrs = append(attrs, "inner_src", src, "peer_subnet", sn)
		}
		w.log.Warn(dw.msg, attrs...)
		w.warned[r], w.at[r] = total, now
	}
}
