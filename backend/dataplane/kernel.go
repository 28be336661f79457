package dataplane

// Kernel is the part of the kernel the backends and the reconciler use.
// Lists return current entries; deletes of entries that are already gone
// succeed, so a reconcile racing with someone else's cleanup is not an
// error.
type Kernel interface {
	// RouteList dumps the main table's unicast routes of both families.
	// Equivalent to: ip route show table main; ip -6 route show table main
	RouteList() ([]Route, error)
	// RouteReplace installs r, replacing a route to the same destination.
	// Equivalent to: ip route replace $r
	RouteReplace(r Route) error
	// RouteDelete removes r. Equivalent to: ip route del $r
	RouteDelete(r Route) error

	// NeighList dumps the permanent neighbour entries of the link (both
	// families). Equivalent to: ip neigh show dev $link nud permanent
	NeighList(linkIndex int) ([]Neigh, error)
	// NeighReplace installs n. Equivalent to: ip neigh replace $n
	NeighReplace(n Neigh) error
	// NeighDelete removes n. Equivalent to: ip neigh del $IP dev $link
	NeighDelete(n Neigh) error

	// FDBList dumps the link's forwarding entries that have a destination.
	// Equivalent to: bridge fdb show dev $link
	FDBList(linkIndex int) ([]FDB, error)
	// FDBReplace installs f. Equivalent to: bridge fdb replace $f
	FDBReplace(f FDB) error
	// FDBDelete removes f. Equivalent to: bridge fdb del $MAC dev $link dst $Dst self
	FDBDelete(f FDB) error

	// AddrList dumps the link's addresses of both families, IPv6
	// link-local ones included. Equivalent to: ip addr show dev $link
	AddrList(linkIndex int) ([]Addr, error)
	// AddrAdd adds a; IPv6 addresses are added without duplicate address
	// detection. Adding an address the link has is not an error.
	// Equivalent to: ip addr replace $a [nodad]
	AddrAdd(a Addr) error
	// AddrDelete removes a. Equivalent to: ip addr del $a
	AddrDelete(a Addr) error

	// LinkByName looks a device up; a missing device is an error that
	// IsNotFound recognises. Equivalent to: ip link show $name
	LinkByName(name string) (Link, error)
	// LinkSetMTU sets a device's MTU. Equivalent to: ip link set $link mtu $mtu
	LinkSetMTU(linkIndex, mtu int) error
	// LinkSetUp brings a device up. Equivalent to: ip link set $link up
	LinkSetUp(linkIndex int) error

	// Sysctl writes value to /proc/sys/<name> (name with slashes, such as
	// "net/ipv6/conf/flannel0/accept_ra").
	// Equivalent to: sysctl -w $name=$value
	Sysctl(name, value string) error
}
