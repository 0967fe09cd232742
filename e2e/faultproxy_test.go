package e2e

import (
	"net"
	"sync"
	"testing"
	"time"
)

// netFault is what a faultProxy does to the bytes it carries.
type netFault struct {
	kind     faultKind
	latency  time.Duration // latency: the wait before each chunk read is passed on
	cutAfter int           // cut: bytes of the target's answer passed on before both ends close
}

type faultKind int

const (
	passThrough faultKind = iota
	addLatency            // every chunk read, either way, waits latency before it is written
	hangConn              // nothing is forwarded; connections are held until the fault changes, then closed
	resetConn             // connections are reset (SO_LINGER 0), the open ones at once
	cutConn               // the target's answer is cut after cutAfter bytes (counted per connection from the change)
)

// faultProxy is a TCP proxy on 127.0.0.1 in front of one target address,
// whose fault a test switches while traffic flows. It sees only bytes (TLS
// passes through it untouched), so it can model the network failing under
// a client but not an HTTP answer; the simulators' own faults do that.
type faultProxy struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup

	mu      sync.Mutex
	fault   netFault
	gen     int           // counts changes, so a cut counts bytes from its own start
	changed chan struct{} // closed at each change of fault, and at Close
	pairs   map[*connPair]struct{}
	closed  bool
}

// connPair is one proxied connection: the client's end and the target's.
type connPair struct{ client, target net.Conn }

// newFaultProxy starts a pass-through proxy to target; the test's cleanup closes it.
func newFaultProxy(t *testing.T, target string) *faultProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fp := &faultProxy{ln: ln, target: target, changed: make(chan struct{}), pairs: map[*connPair]struct{}{}}
	fp.wg.Add(1)
	go fp.accept()
	t.Cleanup(fp.Close)
	return fp
}

// addr is host:port to dial instead of the target.
func (fp *faultProxy) addr() string { return fp.ln.Addr().String() }

// set switches the fault for open and new connections alike.
func (fp *faultProxy) set(f netFault) {
	fp.mu.Lock()
	defer fp.mu.Unlock()
	if fp.closed {
		return
	}
	fp.fault = f
	fp.gen++
	close(fp.changed)
	fp.changed = make(chan struct{})
	if f.kind == resetConn {
		for p := range fp.pairs {
			p.close(true)
		}
	}
}

// Close stops accepting, ends every connection and waits for all the
// proxy's goroutines.
func (fp *faultProxy) Close() {
	fp.mu.Lock()
	if !fp.closed {
		fp.closed = true
		close(fp.changed) // never replaced: whatever waits on it is released for good
		fp.ln.Close()
		for p := range fp.pairs {
			p.close(false)
		}
	}
	fp.mu.Unlock()
	fp.wg.Wait()
}

// now returns the fault in force, its generation and the channel closed at
// its next change.
func (fp *faultProxy) now() (netFault, int, <-chan struct{}) {
	fp.mu.Lock()
	defer fp.mu.Unlock()
	return fp.fault, fp.gen, fp.changed
}

func (fp *faultProxy) accept() {
	defer fp.wg.Done()
	for {
		c, err := fp.ln.Accept()
		if err != nil {
			return // closed
		}
		fp.wg.Add(1)
		go fp.serve(c)
	}
}

func (fp *faultProxy) serve(c net.Conn) {
	defer fp.wg.Done()
	f, _, changed := fp.now()
	switch f.kind {
	case hangConn:
		<-changed
		c.Close()
		return
	case resetConn:
		reset(c)
		return
	}
	up, err := net.DialTimeout("tcp", fp.target, 5*time.Second)
	if err != nil {
		reset(c)
		return
	}
	p := &connPair{client: c, target: up}
	fp.mu.Lock()
	if fp.closed {
		fp.mu.Unlock()
		p.close(false)
		return
	}
	fp.pairs[p] = struct{}{}
	fp.mu.Unlock()

	var both sync.WaitGroup
	both.Go(func() { fp.pump(p, up, c, false) })
	both.Go(func() { fp.pump(p, c, up, true) })
	both.Wait()

	fp.mu.Lock()
	delete(fp.pairs, p)
	fp.mu.Unlock()
}

// pump copies src to dst chunk by chunk, applying the fault in force when
// each chunk arrives. When either way ends, both connections are closed.
func (fp *faultProxy) pump(p *connPair, dst, src net.Conn, toClient bool) {
	defer p.close(false)
	buf := make([]byte, 32<<10)
	gen, sent := -1, 0
	for {
		n, err := src.Read(buf)
		if n > 0 {
			f, g, changed := fp.now()
			if g != gen {
				gen, sent = g, 0
			}
			chunk := buf[:n]
			switch f.kind {
			case addLatency:
				t := time.NewTimer(f.latency)
				select {
				case <-t.C:
				case <-changed: // the fault changed: let it through now
				}
				t.Stop()
			case hangConn:
				<-changed
				return
			case resetConn:
				p.close(true)
				return
			case cutConn:
				if toClient {
					if left := f.cutAfter - sent; n >= left {
						dst.Write(chunk[:max(left, 0)])
						return
					}
				}
			}
			if _, werr := dst.Write(chunk); werr != nil {
				return
			}
			sent += n
		}
		if err != nil {
			return
		}
	}
}

// close ends both connections; with rst the client's end is reset rather
// than closed in order.
func (p *connPair) close(rst bool) {
	if rst {
		reset(p.client)
	} else {
		p.client.Close()
	}
	p.target.Close()
}

// reset closes c with SO_LINGER 0, so that the peer gets an RST.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}
