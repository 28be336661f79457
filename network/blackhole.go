package network

import (
	"github.com/flanneld-go/flannel/backend/dataplane"
)

// syncBlackholes keeps the routes of --ip-blackhole-route: with the flag,
// a blackhole for each of this host's subnets, so traffic to an address
// of the subnet that no pod holds is dropped here instead of following the
// default route out (upstream's reason: a CNI set-up without the bridge,
// such as Canal's per-pod routes); without it, none of ours, so turning
// the flag off (or a new subnet) removes the old ones. The routes carry
// dataplane.BlackholeMetric, so they never shadow the bridge's own route
// for the subnet. It runs with every lease applied and, with the flag, on
// every reconcile, so a route deleted by hand comes back. A failure is
// logged once per distinct error and retried at the next reconcile.
func (e *Engine) syncBlackholes() {
	var want []dataplane.Route
	if e.cfg.BlackholeRoute {
		want = dataplane.BlackholeRoutes(e.lease.Subnet)
		if e.net.EnableIPv6 {
			want = append(want, dataplane.BlackholeRoutes(e.lease.IPv6Subnet)...)
		}
	}
	ch, err := dataplane.ApplyBlackholes(e.kernel, want)
	e.health.metrics.countChanges(ch)
	if ch.Any() {
		e.log.Info("blackhole routes updated", append([]any{"subnet", e.lease.String(), "enabled", e.cfg.BlackholeRoute}, ch.LogAttrs()...)...)
	}
	switch {
	case err == nil:
		e.blackholeErr = ""
	case err.Error() != e.blackholeErr:
		e.blackholeErr = err.Error()
		e.log.Error("cannot keep the blackhole routes; retrying at every reconcile", "subnet", e.lease.String(), "error", err)
	}
}
