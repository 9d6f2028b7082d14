package redistest

import "syscall"

// sysProcAttr makes the server die with the test binary, so that a
// crashed or killed test run leaves no server behind.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
