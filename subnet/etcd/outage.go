package etcd

import (
	"log/slog"
	"time"
)

// OutageLog reports an etcd outage as one activity (dialling, watching,
// acquiring, renewing, the engine's etcd check) sees it: once when it
// starts failing, a reminder every minute while it keeps failing, and once
// when it recovers, instead of a line per retry. Each activity has its
// own; it is not safe for concurrent use.
type OutageLog struct {
	log     *slog.Logger
	what    string
	since   time.Time
	lastLog time.Time
	fails   int
}

// NewOutageLog returns an OutageLog for the activity what.
func NewOutageLog(log *slog.Logger, what string) *OutageLog {
	return &OutageLog{log: log, what: what}
}

// Fail records a failed attempt.
func (o *OutageLog) Fail(err error) {
	now := time.Now()
	o.fails++
	if o.since.IsZero() {
		o.since, o.lastLog = now, now
		o.log.Warn("etcd unavailable; retrying with backoff", "activity", o.what, "error", err)
		return
	}
	if now.Sub(o.lastLog) >= time.Minute {
		o.lastLog = now
		o.log.Warn("etcd still unavailable", "activity", o.what, "for", now.Sub(o.since).Round(time.Second), "attempts", o.fails, "error", err)
	}
}

// OK records a success, logging the recovery after an outage.
func (o *OutageLog) OK() {
	if o.since.IsZero() {
		return
	}
	o.log.Info("etcd available again", "activity", o.what, "after", time.Since(o.since).Round(time.Millisecond), "attempts", o.fails)
	o.since, o.fails = time.Time{}, 0
}

// Failing reports whether the last attempt failed.
func (o *OutageLog) Failing() bool { return !o.since.IsZero() }
