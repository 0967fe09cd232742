//go:build unix

package procs

import (
	"syscall"
	"time"
)

// processCPU returns the CPU time this process has used, user and system
// together (getrusage(2), RUSAGE_SELF), or 0 if it cannot be read.
var processCPU = func() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
