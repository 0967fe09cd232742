//go:build !unix

package procs

import "time"

// processCPU is nil where getrusage does not exist: Start does nothing.
var processCPU func() time.Duration
