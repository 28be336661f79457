package network

import (
	"testing"

	"github.com/flanneld-go/flannel/backend/vxlan"
	"github.com/flanneld-go/flannel/subnet"
)

// A member for peers of a type the net-conf never named takes that type's
// defaults, but for vxlan the VNI the peer's lease carries: a cluster on
// VNI 4096 restarted onto host-gw host by host still reaches its vxlan
// hosts.
func TestDefaultOptionsFromPeer(t *testing.T) {
	peer := subnet.Lease{Attrs: subnet.LeaseAttrs{BackendType: "vxlan", BackendData: []byte(`{"VNI":4096,"VtepMAC":"0a:00:00:00:00:02"}`)}}
	o, err := defaultOptions("vxlan", peer)
	if err != nil {
		t.Fatal(err)
	}
	if got := o.(vxlan.Options).VNI; got != 4096 {
		t.Errorf("VNI %d, want the peer's 4096", got)
	}
	if o, err = defaultOptions("vxlan", subnet.Lease{}); err != nil || o.(vxlan.Options).VNI != 1 {
		t.Errorf("without a peer: %+v %v, want VNI 1", o, err)
	}
	if _, err := defaultOptions("udp", peer); err != nil {
		t.Errorf("udp: %v", err)
	}
}
