package network

import (
	"net/netip"
	"testing"

	"github.com/flanneld-go/flannel/subnet"
)

func TestCheckDefaultBackend(t *testing.T) {
	lease := func(sn, ip, typ string) subnet.Lease {
		return subnet.Lease{Subnet: netip.MustParsePrefix(sn), Attrs: subnet.LeaseAttrs{PublicIP: netip.MustParseAddr(ip), BackendType: typ}}
	}
	udpUp := lease("10.244.1.0/24", "192.168.50.11", "") // upstream's udp writes no type
	vx := lease("10.244.2.0/24", "192.168.50.12", "vxlan")
	noBackend := mustConfig(t, `{"Network":"10.244.0.0/16"}`)
	explicit := mustConfig(t, `{"Network":"10.244.0.0/16","Backend":{"Type":"udp"}}`)
	for _, c := range []struct {
		name   string
		cfg    *subnet.Config
		leases []subnet.Lease
		want   string // "" for no error
	}{
		{"empty cluster", noBackend, nil, ""},
		{"udp cluster, upstream's leases", noBackend, []subnet.Lease{udpUp}, ""},
		{"vxlan lease", noBackend, []subnet.Lease{udpUp, vx},
			`the net-conf at KEY has no Backend, which upstream flanneld and this version read as udp, but 1 of the 2 leases in etcd use another backend (1 vxlan; e.g. 10.244.2.0/24 of 192.168.50.12 is vxlan): starting would split the cluster; set the backend explicitly in the net-conf, e.g. "Backend": {"Type": "vxlan"} to keep it, or {"Type": "udp"} to move to udp`},
		{"udp chosen explicitly", explicit, []subnet.Lease{vx}, ""},
	} {
		err := checkDefaultBackend(c.cfg, c.leases, "KEY")
		if c.want == "" && err != nil || c.want != "" && (err == nil || err.Error() != c.want) {
			t.Errorf("%s: %v\nwant %q", c.name, err, c.want)
		}
	}
	if !noBackend.BackendDefaulted || explicit.BackendDefaulted {
		t.Errorf("BackendDefaulted: %v %v", noBackend.BackendDefaulted, explicit.BackendDefaulted)
	}
}
