package network

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/flanneld-go/flannel/subnet"
	"github.com/flanneld-go/flannel/subnet/etcd"
)

// checkDefaultBackend refuses a net-conf without Backend (udp, by
// upstream's rule) in a cluster whose leases say another backend: hosts
// of an older version of ours, which took vxlan for a missing Backend,
// or a net-conf whose Backend was dropped by mistake. Starting would
// replace this host's devices with udp's and split the cluster into two
// groups that cannot reach each other, so it stops first, touching
// nothing. A cluster that wants udp says so: "Backend":{"Type":"udp"}.
func checkDefaultBackend(cfg *subnet.Config, leases []subnet.Lease, src string) error {
	if !cfg.BackendDefaulted {
		return nil
	}
	other := map[string]int{}
	var example subnet.Lease
	n := 0
	for _, l := range leases {
		if t := BackendType(l); t != cfg.BackendType {
			if n == 0 {
				example = l
			}
			other[t]++
			n++
		}
	}
	if n == 0 {
		return nil
	}
	var kinds []string
	for t, c := range other {
		kinds = append(kinds, fmt.Sprintf("%d %s", c, t))
	}
	slices.Sort(kinds)
	return fmt.Errorf("the net-conf at %s has no Backend, which upstream flanneld and this version read as %s, "+
		"but %d of the %d leases in etcd use another backend (%s; e.g. %s of %s is %s): "+
		"starting would split the cluster; set the backend explicitly in the net-conf, "+
		`e.g. "Backend": {"Type": %q} to keep it, or {"Type": %q} to move to %s`,
		src, cfg.BackendType, n, len(leases), strings.Join(kinds, ", "),
		example.String(), example.Attrs.PublicIP, BackendType(example), BackendType(example), cfg.BackendType, cfg.BackendType)
}

// defaultBackendLeases lists the leases for checkDefaultBackend, only
// when the net-conf has no Backend.
func defaultBackendLeases(ctx context.Context, cfg *subnet.Config, sm *etcd.Manager) ([]subnet.Lease, error) {
	if !cfg.BackendDefaulted {
		return nil, nil
	}
	leases, _, err := sm.List(ctx, false)
	return leases, err
}
