package network

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/vishvananda/netlink"

	"github.com/flanneld-go/flannel/backend/dataplane"
	"github.com/flanneld-go/flannel/network/firewall"
	"github.com/flanneld-go/flannel/subnet/etcd"
)

// Cleanup decommissions this host: it deletes the devices our backends
// create (flannel.N, flannel-v6.N, flannel0), the routes and nexthop
// objects marked proto 98, the FLANNEL-* iptables chains and their jumps, the flannel-ipv4 and
// flannel-ipv6 nftables tables (ours or upstream's), this host's lease in etcd
// (found by its public IP, unless the lease names another host identity;
// reservations are kept: they are the operator's)
// and the subnet file, printing one line per thing removed. Run it with the
// daemon stopped. Local cleanup goes on when etcd cannot be reached; the
// error then says what is left.
func Cleanup(ctx context.Context, c Config, w io.Writer) error {
	log := c.Log
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	var errs []error
	h := &netlink.Handle{}

	// The lease first: while it exists, other hosts keep routing to us.
	ext, err := FindExternal(h, c.Iface, log)
	if err != nil {
		errs = append(errs, fmt.Errorf("finding this host's address to delete its lease: %w", err))
	} else if id, err := cleanupHostID(c, ext.Name, ext.Index); err != nil {
		errs = append(errs, fmt.Errorf("the lease of %s stays in etcd: %w", ext.PublicIP, err))
	} else if err := deleteOwnLeases(ctx, c, ext.PublicIP, id, w, log); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, removeDevices(h, w), removeRoutes(h, w), removeRules(log, w))
	if c.SubnetFile != "" {
		if err := os.Remove(c.SubnetFile); err == nil {
			fmt.Fprintf(w, "removed %s\n", c.SubnetFile)
		} else if !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// removeDevices deletes the devices our backends create: ip link del DEV.
func removeDevices(h *netlink.Handle, w io.Writer) error {
	var errs []error
	links, err := h.LinkList()
	if err != nil {
		// An interrupted dump still returns links: delete those of ours.
		errs = append(errs, fmt.Errorf("listing links: %w", err))
	}
	for _, l := range links {
		if name := l.Attrs().Name; ourDevice.MatchString(name) {
			if err := h.LinkDel(l); err != nil {
				errs = append(errs, fmt.Errorf("ip link del %s: %w", name, err))
				continue
			}
			fmt.Fprintf(w, "removed device %s\n", name)
		}
	}
	return errors.Join(errs...)
}

// removeRoutes deletes the routes marked as ours, blackholes included,
// then the nexthop objects marked as ours that are left (a route's
// nexthop goes with its last route): ip route del ... proto 98;
// ip nexthop flush protocol 98.
func removeRoutes(h *netlink.Handle, w io.Writer) error {
	k := dataplane.NewNetlink(h)
	var errs []error
	routes, err := k.RouteList()
	if err != nil {
		errs = append(errs, fmt.Errorf("listing routes: %w", err))
	}
	for _, r := range routes {
		if r.Proto != dataplane.Proto {
			continue
		}
		if err := k.RouteDelete(r); err != nil {
			errs = append(errs, fmt.Errorf("ip route del %s: %w", r.Dst, err))
			continue
		}
		if r.Type == dataplane.Blackhole {
			fmt.Fprintf(w, "removed route blackhole %s\n", r.Dst)
			continue
		}
		fmt.Fprintf(w, "removed route %s\n", r.Dst)
	}
	ids, err := k.RemoveNexthops()
	for _, id := range ids {
		fmt.Fprintf(w, "removed nexthop %d\n", id)
	}
	if err != nil {
		errs = append(errs, fmt.Errorf("removing nexthops: %w", err))
	}
	return errors.Join(errs...)
}

// removeRules deletes the rules of both modes: the FLANNEL-* iptables
// chains and their jumps, and the flannel-ipv4 / flannel-ipv6 nftables
// tables (ours or upstream's). A mode whose binaries are missing is skipped.
func removeRules(log *slog.Logger, w io.Writer) error {
	removed, err := firewall.RemoveAll(log)
	for _, r := range removed {
		fmt.Fprintf(w, "removed %s\n", r)
	}
	if err != nil {
		return fmt.Errorf("removing firewall rules: %w", err)
	}
	return nil
}

// cleanupHostID is this host's identity, as the daemon derives it.
func cleanupHostID(c Config, iface string, index int) (string, error) {
	mac, err := interfaceMAC(index)
	if err != nil {
		return "", err
	}
	id, _, err := HostIdentity(c.HostID, c.MachineIDFile, iface, mac)
	return id, err
}

func deleteOwnLeases(ctx context.Context, c Config, public interface{ String() string }, hostID string, w io.Writer, log *slog.Logger) error {
	cli, err := etcd.NewClient(c.Etcd)
	if err != nil {
		return fmt.Errorf("the lease of %s stays in etcd: %w", public, err)
	}
	defer cli.Close()
	sm := etcd.NewManager(cli, c.Etcd.Prefix, 0, log)
	leases, _, err := sm.List(ctx, false)
	if err != nil {
		return fmt.Errorf("the lease of %s stays in etcd: %w", public, err)
	}
	for _, l := range leases {
		if l.Attrs.PublicIP.String() != public.String() {
			continue
		}
		if l.Attrs.HostID != "" && l.Attrs.HostID != hostID {
			fmt.Fprintf(w, "kept lease %s: it belongs to host %s, not to this host (%s)\n", sm.LeaseKey(l), l.Attrs.HostID, dash(hostID))
			continue
		}
		if l.Reserved() {
			fmt.Fprintf(w, "kept reservation %s (delete it with etcdctl del %s if it should go)\n", sm.LeaseKey(l), sm.LeaseKey(l))
			continue
		}
		if _, err := cli.Delete(ctx, sm.LeaseKey(l)); err != nil {
			return fmt.Errorf("deleting lease %s: %w", sm.LeaseKey(l), err)
		}
		fmt.Fprintf(w, "removed lease %s\n", sm.LeaseKey(l))
	}
	return nil
}
