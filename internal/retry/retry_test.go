package retry

import (
	"testing"
	"time"
)

// Every wait is within [d/2, d] of its step's d (Base doubling to Max), and
// the draws reach both ends of that range.
func TestSchedule(t *testing.T) {
	cases := []struct {
		b     Backoff
		steps []float64 // d in seconds after failures 1, 2, ...
	}{
		{Backoff{Base: time.Second, Max: time.Minute}, []float64{1, 2, 4, 8, 16, 32, 60, 60}},
		{Backoff{Base: 30 * time.Second, Max: 5 * time.Minute}, []float64{30, 60, 120, 240, 300, 300}},
		// A poll interval shorter than the first retry caps even that.
		{Backoff{Base: time.Second, Max: 300 * time.Millisecond}, []float64{0.3, 0.3, 0.3}},
	}
	for _, tc := range cases {
		for i, s := range tc.steps {
			d := time.Duration(s * float64(time.Second))
			lowest, highest := d, time.Duration(0)
			for range 2000 {
				w := tc.b.Wait(i + 1)
				if w < d/2 || w > d {
					t.Fatalf("%+v: failure %d waits %s, want within [%s, %s]", tc.b, i+1, w, d/2, d)
				}
				lowest, highest = min(lowest, w), max(highest, w)
			}
			// 2000 uniform draws leave less than 1% of the range at each end.
			if lowest > d/2+d/100 || highest < d-d/100 {
				t.Errorf("%+v: failure %d waited %s to %s, want the whole of [%s, %s]", tc.b, i+1, lowest, highest, d/2, d)
			}
		}
	}
}

// Counts past any shift, and below one, stay on the schedule.
func TestEdges(t *testing.T) {
	b := Backoff{Base: time.Second, Max: time.Hour}
	for _, n := range []int{1000, 1 << 30} {
		if w := b.Wait(n); w < 30*time.Minute || w > time.Hour {
			t.Errorf("failure %d waits %s, want the cap's [30m, 1h]", n, w)
		}
	}
	// A cap near the largest Duration, or an odd one, is reached, not
	// overflowed or circled.
	for _, b := range []Backoff{{Base: time.Hour, Max: 1<<63 - 1}, {Base: 2, Max: 1001}} {
		if w := b.Wait(1 << 30); w < b.Max/2 || w > b.Max {
			t.Errorf("%+v: failure 2^30 waits %s", b, w)
		}
	}
	for _, n := range []int{0, -5} {
		if w := b.Wait(n); w < time.Second/2 || w > time.Second {
			t.Errorf("Wait(%d) = %s, want the first step's", n, w)
		}
	}
	if w := (Backoff{}).Wait(3); w != 0 {
		t.Errorf("the zero Backoff waits %s", w)
	}
}
