package udp

import (
	"fmt"
	"strings"
	"sync/atomic"
)

// Drop reasons. Every packet the backend does not forward is counted under
// exactly one of them.
const (
	dropNotPeer        = iota // datagram from an address that is not a current peer's PublicIP
	dropWrongPort             // from a peer's PublicIP, but not from the backend port
	dropSpoofedSource         // from a peer, inner source outside that peer's subnets
	dropBadChecksum           // from the wire, a TCP segment to coalesce whose checksum fails
	dropTruncated             // shorter than its headers or its IP length says
	dropMalformed             // bad IP header: length fields, header length
	dropNotIP                 // version nibble neither 4 nor 6
	dropNotOurSubnet          // from the wire, inner destination outside our lease
	dropNoRoute               // from the TUN, no lease covers the destination (ICMP sent)
	dropOutsideNetwork        // from the TUN, destination outside the Network
	dropBadOffload            // from the TUN, a GSO packet we cannot segment
	dropSendError             // sendmmsg failed for the datagram
	dropTunWriteError         // writing to the TUN failed
	numDrops
)

var dropNames = [numDrops]string{
	"not_peer", "wrong_port", "spoofed_source", "bad_checksum", "truncated", "malformed", "not_ip", "not_our_subnet",
	"no_route", "outside_network", "bad_offload", "send_error", "tun_write_error",
}

// Stats is a snapshot of the backend's counters, summed over all queues.
// Packets are inner IP packets (a TCP super-packet counts as the segments
// it carries on the wire).
type Stats struct {
	TxPackets, TxBytes uint64 // TUN -> UDP
	RxPackets, RxBytes uint64 // UDP -> TUN
	ICMPSent           uint64 // destination-unreachable written to the TUN
	Drops              map[string]uint64
}

// String renders the non-zero counters as key=value pairs, for logs.
func (s Stats) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "tx_packets=%d tx_bytes=%d rx_packets=%d rx_bytes=%d icmp_unreachable=%d", s.TxPackets, s.TxBytes, s.RxPackets, s.RxBytes, s.ICMPSent)
	for _, n := range dropNames {
		if v := s.Drops[n]; v != 0 {
			fmt.Fprintf(&b, " drop_%s=%d", n, v)
		}
	}
	return b.String()
}

// counters belong to one packet-path goroutine: only it adds, Stats reads.
// The padding keeps two goroutines' counters off one cache line.
type counters struct {
	txPackets, txBytes atomic.Uint64
	rxPackets, rxBytes atomic.Uint64
	icmp               atomic.Uint64
	drops              [numDrops]atomic.Uint64
	last               [numDrops]offender // for the drop warnings (dropwarn.go)
	_                  [64]byte
}

func (c *counters) drop(reason int) { c.drops[reason].Add(1) }

func (c *counters) addTo(s *Stats) {
	s.TxPackets += c.txPackets.Load()
	s.TxBytes += c.txBytes.Load()
	s.RxPackets += c.rxPackets.Load()
	s.RxBytes += c.rxBytes.Load()
	s.ICMPSent += c.icmp.Load()
	for i := range c.drops {
		s.Drops[dropNames[i]] += c.drops[i].Load()
	}
}
