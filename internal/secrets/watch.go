package secrets

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/tokenproxy/tokenproxy/internal/retry"
)

// Watch re-reads one source every Interval, or at once when kicked, and hands
// each new good version to OnChange. A read that fails or yields unusable
// credentials goes to OnError and never replaces the last good version.
type Watch struct {
	Source Source
	Keys   []string // the keys the credentials must hold (config.Upstream.RequiredKeys)
	Ref    string   // the reference, for error messages

	OnChange func(Credentials)
	OnError  func(error)
	OnRead   func(kind string, err error) // every read, for metrics

	interval atomic.Int64 // poll interval once a good version is in hand, as a time.Duration
	kick     chan struct{}
}

// Retry bounds for reads that fail: quick at first so that a Vault that is a
// moment late at start-up costs little, never more often than minRetry, and
// never slower than the poll interval.
const (
	minRetry = time.Second
	readTTL  = 30 * time.Second
)

// NewWatch returns a Watch of src; set the callbacks before Run.
func NewWatch(src Source, keys []string, ref string, interval time.Duration) *Watch {
	w := &Watch{Source: src, Keys: keys, Ref: ref, kick: make(chan struct{}, 1)}
	w.interval.Store(int64(interval))
	return w
}

// SetInterval changes the poll interval of a running Watch (a reload that
// changed only secrets.poll_interval); it applies from the next wait.
func (w *Watch) SetInterval(d time.Duration) { w.interval.Store(int64(d)) }

// Kick asks for a read now (after the vendor refused the credentials).
// Kicks closer together than a second are merged.
func (w *Watch) Kick() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// Run reads at once and then keeps reading until ctx ends.
func (w *Watch) Run(ctx context.Context) {
	var last Credentials
	failures := 0
	for {
		c, err := w.read(ctx)
		switch {
		case err != nil:
			failures++
			w.OnError(err)
		case c.FleetVersion() != last.FleetVersion():
			// Not Version: the same number may be another secret's, or
			// the same path's written again after a delete.
			failures = 0
			last = c
			w.OnChange(c)
		default:
			failures = 0
		}
		interval := time.Duration(w.interval.Load())
		wait := interval
		if failures > 0 {
			wait = retry.Backoff{Base: minRetry, Max: interval}.Wait(failures)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		case <-w.kick:
			t.Stop()
			// Merge a burst of kicks into one read.
			pause := time.NewTimer(minRetry)
			select {
			case <-ctx.Done():
				pause.Stop()
				return
			case <-pause.C:
			}
			select {
			case <-w.kick:
			default:
			}
		}
	}
}

func (w *Watch) read(ctx context.Context) (Credentials, error) {
	ctx, cancel := context.WithTimeout(ctx, readTTL)
	defer cancel()
	c, err := Load(ctx, w.Source, w.Keys, w.Ref)
	if w.OnRead != nil {
		w.OnRead(w.Source.Kind(), err)
	}
	return c, err
}
