package etcd

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/flanneld-go/flannel/subnet"
)

// ErrHostConflict means a lease under this host's PublicIP belongs to
// another host identity: two hosts are using one PublicIP. Waiting does not
// help; the operator must give one of them another address.
var ErrHostConflict = errors.New("another host holds a lease for this host's public IP")

// HostConflictError is an ErrHostConflict with what the operator needs:
// both identities, the PublicIP, the lease and the command that frees it.
type HostConflictError struct {
	Key      string     // the lease's etcd key
	Subnet   string     // the lease's subnets, as in logs
	PublicIP netip.Addr // ours, and the lease's
	Theirs   string     // the lease's HostID
	Ours     string     // this host's HostID ("" when it has none)
	// Fix is the command that frees the lease if it really is this host:
	// etcdctl del for a lease, an etcdctl put of the value without
	// HostID for a reservation (the operator's, so it is kept).
	Fix      string
	Reserved bool
}

func (e *HostConflictError) Is(target error) bool { return target == ErrHostConflict }

func (e *HostConflictError) Error() string {
	what := "lease"
	if e.Reserved {
		what = "reservation"
	}
	ours := "this host is " + e.Ours
	if e.Ours == "" {
		ours = "this host has no identity (set --host-id)"
	}
	return fmt.Sprintf("%s: %s %s (subnet %s) for public IP %s belongs to host %s, %s. "+
		"Two hosts cannot share a public IP, so this one stops: give it its own address (--public-ip, --iface). "+
		"If it really is the same host (its network card was replaced, or its --host-id changed), free the %s and start again: %s",
		ErrHostConflict.Error(), what, e.Key, e.Subnet, e.PublicIP, e.Theirs, ours, what, e.Fix)
}

// checkOwner returns a *HostConflictError when l, a lease under our
// PublicIP, carries another host's identity. A lease with no identity
// (written by upstream flanneld, an older version of ours, or an operator)
// is anyone's with this PublicIP, as upstream has it.
func (m *Manager) checkOwner(l subnet.Lease, attrs subnet.LeaseAttrs) error {
	if l.Attrs.HostID == "" || l.Attrs.HostID == attrs.HostID {
		return nil
	}
	key := m.LeaseKey(l)
	fix := delHint(key)
	if l.Reserved() {
		unbound := l.Attrs
		unbound.HostID = ""
		value, err := json.Marshal(unbound)
		if err != nil {
			return err
		}
		fix = "etcdctl put " + shellQuote(key) + " " + shellQuote(string(value))
	}
	return &HostConflictError{Key: key, Subnet: l.String(), PublicIP: attrs.PublicIP, Theirs: l.Attrs.HostID, Ours: attrs.HostID,
		Fix: fix, Reserved: l.Reserved()}
}

// delHint is the command that deletes key.
func delHint(key string) string { return "etcdctl del " + shellQuote(key) }

// shellQuote quotes s for a POSIX shell unless it holds only letters,
// digits and "/.:-_".
func shellQuote(s string) string {
	plain := s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/.:-_", r))
	}) < 0
	if plain {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
