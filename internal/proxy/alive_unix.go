//go:build unix

package proxy

import (
	"crypto/tls"
	"net"
	"syscall"
)

// alive reports whether an idle connection is still open: nothing to read
// (not even the end of the stream or a TLS close_notify), looked at without
// blocking and without consuming anything.
func alive(c net.Conn) bool {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	open := false
	var b [1]byte
	err = rc.Read(func(fd uintptr) bool {
		_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		open = err == syscall.EAGAIN || err == syscall.EWOULDBLOCK
		return true
	})
	return err == nil && open
}

// waitGone blocks until c has something to read or has ended, or a read
// deadline passes, and reports whether the peer went away (the end of the
// stream, or a reset) rather than sent more. Nothing is consumed.
func waitGone(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	var b [1]byte
	var n int
	var rerr error
	err = rc.Read(func(fd uintptr) bool {
		n, _, rerr = syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return rerr != syscall.EAGAIN && rerr != syscall.EWOULDBLOCK
	})
	return err == nil && (rerr == nil && n == 0 || rerr == syscall.ECONNRESET)
}
