// Package procs sizes the Go scheduler to tokenproxy's load: one P
// (GOMAXPROCS=1) while the process is light, the runtime's default once it
// is busy.
//
// Why: a sidecar spends most of its life at a low request rate, where what
// a request costs is mostly the scheduler's. With two or more Ps, each
// goroutine that the network poller readies makes the runtime wake another
// thread, which spins looking for work and goes back to sleep
// (runtime.wakep); a proxied request readies two or three. On the
// benchmark's 2-core machine at 1,000 req/s (BENCHMARKS.md), one P cut
// tokenproxy's CPU from 0.166–0.187 to 0.130–0.147 core and its p50 from
// 0.28–0.32 to 0.26–0.30 ms; under wrk -c64 it cost a tenth of the
// throughput. So one P is right only while
// the process is light. Go 1.25's container-aware default does not help
// here: it rounds a CPU limit below 2 up to 2.
//
// The rule is Governor's: every interval, the process's CPU time over the
// interval (user and system, from getrusage) gives its load in cores. At
// one P, a load of Busy or more returns to the runtime's default at once
// (runtime.SetDefaultGOMAXPROCS, which also resumes the runtime's own
// updates when a cgroup limit changes). At the default, a load under Light
// for Calm intervals in a row goes to one P. The gap between Busy and Light
// and the count keep it from flapping: the same request rate costs more
// CPU at two Ps than at one.
//
// Off when the GOMAXPROCS environment variable is set to a value (the
// operator's choice stands; the runtime ignores an empty one, and so does
// this), when the runtime's default is already 1, and where
// getrusage does not exist.
//
// Concurrency: Run's goroutine is the only caller of runtime.GOMAXPROCS in
// the process. Each change stops the world for a few microseconds; the
// rule makes changes rare (at most one per Calm intervals going down).
package procs

import (
	"context"
	"os"
	"runtime"
	"time"

	"go.uber.org/zap"
)

// Governor decides from each interval's load whether the process should
// run on one P. The zero value is not useful; see Default.
type Governor struct {
	Busy  float64 // cores: at one P, a load this high or higher goes to the default
	Light float64 // cores: at the default, a load below this counts towards one P
	Calm  int     // intervals in a row below Light before going to one P

	single bool // the decision in force
	calm   int  // intervals in a row below Light so far
}

// Default is the rule tokenproxy runs with: back to the default at 0.6
// core (the one P more than half used, where waiting for it starts to add
// latency), to one P after 3 intervals under 0.3 core.
func Default() *Governor { return &Governor{Busy: 0.6, Light: 0.3, Calm: 3} }

// Next takes the load over the last interval, in cores (CPU seconds per
// wall-clock second), and returns whether the process should now run on
// one P.
func (g *Governor) Next(load float64) bool {
	if g.single {
		if load >= g.Busy {
			g.single, g.calm = false, 0
		}
		return g.single
	}
	if load >= g.Light {
		g.calm = 0
		return false
	}
	g.calm++
	if g.calm >= g.Calm {
		g.single, g.calm = true, 0
	}
	return g.single
}

// Run applies g every interval until ctx is done. cpu returns the
// process's CPU time so far; set applies a decision that differs from the
// one before (g starts at "not single", the runtime's default).
func Run(ctx context.Context, interval time.Duration, g *Governor, cpu func() time.Duration, set func(single bool)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	lastCPU, lastWall := cpu(), time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			used := cpu()
			wall := now.Sub(lastWall)
			if wall <= 0 {
				continue
			}
			load := (used - lastCPU).Seconds() / wall.Seconds()
			lastCPU, lastWall = used, now
			if was := g.single; g.Next(load) != was {
				set(g.single)
			}
		}
	}
}

// Start runs the Default rule every second on this process's GOMAXPROCS
// until ctx is done, and logs each change at debug level. It does nothing
// when the GOMAXPROCS environment variable has a value, when the runtime's
// default is 1, or where the process's CPU time cannot be read.
func Start(ctx context.Context, log *zap.Logger) {
	if os.Getenv("GOMAXPROCS") != "" || processCPU == nil || runtime.GOMAXPROCS(0) < 2 {
		return
	}
	go Run(ctx, time.Second, Default(), processCPU, func(single bool) {
		if single {
			runtime.GOMAXPROCS(1)
		} else {
			runtime.SetDefaultGOMAXPROCS()
		}
		log.Debug("GOMAXPROCS changed", zap.Int("gomaxprocs", runtime.GOMAXPROCS(0)))
	})
}
