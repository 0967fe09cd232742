//go:build !unix

package proxy

import "net"

// alive cannot look at a connection here without blocking: a connection the
// upstream closed is found when a request fails on it.
func alive(net.Conn) bool { return true }

// waitGone cannot watch a connection here: a caller gone is found when its
// answer cannot be written.
func waitGone(net.Conn) bool { return false }
