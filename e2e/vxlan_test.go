package e2e_test

import (
	"net/netip"
	"testing"

	"github.com/flanneld-go/flannel/e2e/testbed"
)

const vxlanBackend = `{"Type":"vxlan"}`

func vxlanRoute(_ *testbed.Host, sn netip.Prefix) string {
	return sn.String() + " via " + sn.Addr().String() + " dev flannel.1 proto 98 onlink"
}

func TestVXLANMesh(t *testing.T) { meshSuite(t, vxlanBackend, vxlanRoute) }
