package network

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/flanneld-go/flannel/subnet"
)

// benchLeases are n vxlan leases of distinct hosts in 10.0.0.0/8.
func benchLeases(n int) []subnet.Lease {
	out := make([]subnet.Lease, n)
	for i := range n {
		j := i + 2 // 10.0.1.0/24 is ours
		out[i] = subnet.Lease{
			Subnet:         netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(j >> 8), byte(j), 0}), 24),
			CreateRevision: int64(j),
			Attrs: subnet.LeaseAttrs{PublicIP: netip.AddrFrom4([4]byte{172, 16, byte(j >> 8), byte(j)}), BackendType: "vxlan",
				BackendData: []byte(fmt.Sprintf(`{"VNI":1,"VtepMAC":"0e:00:00:00:%02x:%02x"}`, byte(j>>8), byte(j)))},
		}
	}
	return out
}

func benchSet(b *testing.B) *PeerSet {
	s := NewPeerSet(mustConfig(b, `{"Network":"10.0.0.0/8","Backend":{"Type":"vxlan"}}`), netip.MustParseAddr("172.16.0.1"))
	s.SetOwnAttrs(subnet.LeaseAttrs{PublicIP: netip.MustParseAddr("172.16.0.1"), BackendType: "vxlan",
		BackendData: []byte(`{"VNI":1,"VtepMAC":"0e:00:00:00:00:01"}`)})
	s.SetOwn(subnet.Lease{Subnet: netip.MustParsePrefix("10.0.1.0/24")})
	return s
}

// BenchmarkPeerSet: at 10,000 leases, the first batch (every lease), and
// the batches of a churning cluster: a host leaving and another joining,
// then the peers handed to the reconcile; and a hostile lease (a copied
// VtepMAC and a duplicate subnet) appearing and going away.
func BenchmarkPeerSet(b *testing.B) {
	const n = 10000
	leases := benchLeases(n + 1)
	spare := leases[n]
	leases = leases[:n]
	b.Run("first-batch-10k", func(b *testing.B) {
		evs := add(leases...)
		for b.Loop() {
			s := benchSet(b)
			if f := s.Apply(evs); len(f.Joined) != n {
				b.Fatalf("%d joined", len(f.Joined))
			}
		}
	})
	b.Run("churn-10k", func(b *testing.B) {
		s := benchSet(b)
		s.Apply(add(leases...))
		in, out := spare, leases[0]
		for b.Loop() {
			f := s.Apply(append(del(out), add(in)...))
			if len(f.Joined) != 1 || len(f.Left) != 1 {
				b.Fatalf("fold %+v", f)
			}
			in, out = out, in
		}
	})
	b.Run("churn-and-peers-10k", func(b *testing.B) {
		s := benchSet(b)
		s.Apply(add(leases...))
		in, out := spare, leases[0]
		for b.Loop() {
			s.Apply(append(del(out), add(in)...))
			if len(s.Peers()) != n {
				b.Fatal("peers lost")
			}
			in, out = out, in
		}
	})
	b.Run("hostile-10k", func(b *testing.B) {
		s := benchSet(b)
		s.Apply(add(leases...))
		bad := leases[5]
		bad.Subnet, bad.CreateRevision = spare.Subnet, spare.CreateRevision
		dup := leases[7]
		dup.IPv6Subnet, dup.CreateRevision = netip.MustParsePrefix("fd00::/64"), spare.CreateRevision+1
		for b.Loop() {
			if f := s.Apply(add(bad, dup)); len(f.Rejected) != 2 {
				b.Fatalf("fold %+v", f)
			}
			s.Apply(del(bad, dup))
		}
	})
}
