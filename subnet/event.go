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
	var batch []Event
	seen := make(map[string]bool, len(leases))
	for _, l := range leases {
		key := l.Key()
		seen[key] = true
		old, ok := known[key]
		if ok && old.Attrs.Equal(l.Attrs) && old.EtcdLeaseID == l.EtcdLeaseID {
			continue
		}
		known[key] = l
		batch = append(batch, Event{Type: EventAdded, Lease: l})
	}
	for key, old := range known {
		if !seen[key] {
			delete(known, key)
			batch = append(batch, Event{Type: EventRemoved, Lease: old})
		}
	}
	return batch
}
