package subnet

// EventType says whether a lease appeared (or changed) or went away.
type EventType int

const (
	// EventAdded: a lease appeared or its attributes changed.
	EventAdded EventType = iota
	// EventRemoved: a lease was deleted or expired.
	EventRemoved
)

func (t EventType) String() string {
	if t == EventRemoved {
		return "removed"
	}
	return "added"
}

// Event is a change of one lease.
type Event struct {
	Type  EventType
	Lease Lease
}

// DiffLeases updates known (leases by Key) to leases, the complete current
// set, and returns the events between them: EventAdded for a lease that is
// new or changed (attributes or etcd lease), EventRemoved for one that is
// gone.
func DiffLeases(known map[string]Lease, leases []Lease) []Event {
	// Against nothing known (the first list) no lease can be gone, and
	// the batch holds every one: no set of the keys seen, and the batch
	// allocated once.
	first := len(known) == 0
	var batch []Event
	var seen map[string]bool
	if first && len(leases) > 0 {
		batch = make([]Event, 0, len(leases))
	} else if !first {
		seen = make(map[string]bool, len(leases))
	}
	for _, l := range leases {
		key := l.Key()
		if !first {
			seen[key] = true
		}
		old, ok := known[key]
		if ok && old.Attrs.Equal(l.Attrs) && old.EtcdLeaseID == l.EtcdLeaseID {
			continue
		}
		known[key] = l
		batch = append(batch, Event{Type: EventAdded, Lease: l})
	}
	if first {
		return batch
	}
	for key, old := range known {
		if !seen[key] {
			delete(known, key)
			batch = append(batch, Event{Type: EventRemoved, Lease: old})
		}
	}
	return batch
}
