package vaulttest

import (
	"os/exec"
	"syscall"
)

// setDeathSignal kills the server if the test binary dies without cleaning
// up (a panic, or go test's -timeout), so no dev server outlives its test.
func setDeathSignal(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
