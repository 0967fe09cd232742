package procs

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

func TestGovernorNext(t *testing.T) {
	for _, tc := range []struct {
		name  string
		loads []float64
		want  []bool
	}{
		{"light for Calm intervals goes to one P", []float64{0.1, 0.1, 0.1}, []bool{false, false, true}},
		{"a busy interval restarts the count", []float64{0.1, 0.1, 0.3, 0.1, 0.1, 0.1}, []bool{false, false, false, false, false, true}},
		{"at one P, Busy goes back at once", []float64{0, 0, 0, 0.6}, []bool{false, false, true, false}},
		{"at one P, between Light and Busy stays", []float64{0, 0, 0, 0.59, 0.3, 0.45}, []bool{false, false, true, true, true, true}},
		{"after going back, the count starts again", []float64{0, 0, 0, 2, 0, 0, 0}, []bool{false, false, true, false, false, false, true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := Default()
			for i, load := range tc.loads {
				if got := g.Next(load); got != tc.want[i] {
					t.Fatalf("interval %d (load %.2f): single = %v, want %v", i, load, got, tc.want[i])
				}
			}
		})
	}
}

// Run measures load as CPU time over wall time and calls set only on a
// change.
func TestRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex // the race detector does not see synctest.Wait's ordering
		var cpu time.Duration
		rate := 0.1 // cores the fake process uses, changed by the test
		last := time.Now()
		cpuNow := func() time.Duration {
			mu.Lock()
			defer mu.Unlock()
			now := time.Now()
			cpu += time.Duration(rate * float64(now.Sub(last)))
			last = now
			return cpu
		}
		var sets []bool
		setsNow := func() []bool { mu.Lock(); defer mu.Unlock(); return append([]bool(nil), sets...) }
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() {
			defer close(done)
			Run(ctx, time.Second, Default(), cpuNow, func(single bool) { mu.Lock(); sets = append(sets, single); mu.Unlock() })
		}()

		time.Sleep(3*time.Second + time.Millisecond)
		synctest.Wait()
		if sets := setsNow(); len(sets) != 1 || !sets[0] {
			t.Fatalf("after 3 s at 0.1 core: set calls %v, want [true]", sets)
		}
		mu.Lock()
		rate = 1.5
		mu.Unlock()
		time.Sleep(time.Second)
		synctest.Wait()
		if sets := setsNow(); len(sets) != 2 || sets[1] {
			t.Fatalf("after 1 s at 1.5 cores: set calls %v, want [true false]", sets)
		}
		time.Sleep(5 * time.Second)
		synctest.Wait()
		if sets := setsNow(); len(sets) != 2 {
			t.Fatalf("busy for 5 s more: set calls %v, want no more", sets)
		}
		cancel()
		<-done
	})
}
