// Package registry lists the backend types the daemon knows, explicitly,
// in one map (no init-time registration).
package registry

import (
	"fmt"
	"sort"
	"strings"

	"github.com/flanneld-go/flannel/backend"
	"github.com/flanneld-go/flannel/backend/hostgw"
	"github.com/flanneld-go/flannel/backend/udp"
	"github.com/flanneld-go/flannel/backend/vxlan"
	"github.com/flanneld-go/flannel/backend/wireguard"
)

var types = map[string]backend.Type{
	hostgw.TypeName:    hostgw.Type,
	udp.TypeName:       udp.Type,
	vxlan.TypeName:     vxlan.Type,
	wireguard.TypeName: wireguard.Type,
}

// Names returns the known type names, sorted.
func Names() []string {
	out := make([]string, 0, len(types))
	for n := range types {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Lookup finds a backend type by its net-conf name.
func Lookup(name string) (backend.Type, error) {
	if t, ok := types[name]; ok {
		return t, nil
	}
	return backend.Type{}, fmt.Errorf("Backend.Type: unknown backend type %q; known types: %s", name, strings.Join(Names(), ", "))
}
