//go:build unix

package proxy

import (
	"crypto/tls"
	"errors"
	"net"
	"syscall"
)

// peek looks at c's next byte without consuming it: at once, or with wait
// when there is none yet, until there is, the stream ends or a read
// deadline passes. n is 0 at the end of the stream; err is the peek's
// (EAGAIN: nothing to read) or, first, the connection's.
func peek(c net.Conn, wait bool) (n int, err error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return 0, errors.ErrUnsupported
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0, err
	}
	var b [1]byte
	var perr error
	err = rc.Read(func(fd uintptr) bool {
		n, _, perr = syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return !wait || perr != syscall.EAGAIN && perr != syscall.EWOULDBLOCK
	})
	if err != nil {
		return 0, err
	}
	return n, perr
}

// alive reports whether an idle connection is still open: nothing to read
// (not even the end of the stream or a TLS close_notify), looked at without
// blocking and without consuming anything.
func alive(c net.Conn) bool {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	_, err := peek(c, false)
	return err == syscall.EAGAIN || err == syscall.EWOULDBLOCK || err == errors.ErrUnsupported
}

// waitGone blocks until c has something to read or has ended, or a read
// deadline passes, and reports whether the peer went away (the end of the
// stream, or a reset) rather than sent more. Nothing is consumed.
func waitGone(c net.Conn) bool {
	n, err := peek(c, true)
	return err == nil && n == 0 || err == syscall.ECONNRESET
}
