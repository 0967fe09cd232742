// Package retry is tokenproxy's one backoff after failures, used by the
// broker (token requests, the fleet's store), the credentials watch and
// the Vault login.
//
// It is a function of the number of failures in a row rather than a
// stateful timer such as github.com/cenkalti/backoff/v4's
// ExponentialBackOff, because the broker needs exactly that: one count of
// failures in a row, whatever their kind and whichever replica of a fleet
// met them, under the schedule of the latest failure's kind.
package retry

import (
	"math/rand/v2"
	"time"
)

// Backoff is an exponential backoff with jitter: after the nth failure in
// a row the wait is within [d/2, d], d being Base doubled n-1 times, at
// most Max ("equal jitter": callers that failed together spread out, and
// none comes back sooner than half the schedule). A Retry-After the other
// side sends is a floor the caller applies on top.
type Backoff struct{ Base, Max time.Duration }

// Wait is the wait after the nth failure in a row (n < 1 counts as 1). It
// reads no clock, so it behaves alike inside a testing/synctest bubble.
func (b Backoff) Wait(n int) time.Duration {
	d := b.Base
	if d <= 0 || d > b.Max {
		d = b.Max
	}
	for i := 1; i < n && d < b.Max; i++ {
		if d >= b.Max/2 {
			d = b.Max // doubling would pass it (or overflow)
		} else {
			d *= 2
		}
	}
	if d <= 0 {
		return 0
	}
	return d/2 + rand.N(d-d/2+1)
}
