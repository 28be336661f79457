package backend

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/flanneld-go/flannel/internal/suggest"
)

// OptionWarnings are the warnings for the keys of a net-conf Backend
// object that the type does not read, one line each, sorted. Upstream
// ignores such keys, and a net-conf shared with upstream's Windows nodes
// carries some, so they are reported rather than refused; the line names
// the closest known option, as most are misspellings. Keys are compared
// without regard to case, like every net-conf key. A raw value that is not
// an object gives no warnings (ParseOptions reports it).
func (t Type) OptionWarnings(raw []byte) []string {
	var fields map[string]json.RawMessage
	if json.Unmarshal(raw, &fields) != nil {
		return nil
	}
	is := func(k string) func(string) bool { return func(n string) bool { return strings.EqualFold(k, n) } }
	var w []string
	for _, k := range slices.Sorted(maps.Keys(fields)) {
		switch {
		case strings.EqualFold(k, "Type") || slices.ContainsFunc(t.Options, is(k)):
		case slices.ContainsFunc(t.WindowsOptions, is(k)):
			w = append(w, fmt.Sprintf("Backend.%s: an option of upstream's Windows nodes; ignored here", k))
		case len(t.Options) == 0:
			w = append(w, fmt.Sprintf("Backend.%s: %s has no options; ignored", k, t.Name))
		default:
			w = append(w, fmt.Sprintf("Backend.%s: unknown %s option, ignored; the closest known option is %q", k, t.Name, suggest.Closest(k, t.Options)))
		}
	}
	return w
}
