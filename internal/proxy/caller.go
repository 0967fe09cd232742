package proxy

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// watchAfter is how long the upstream may take before the data plane
// starts watching the caller's connection for the caller going away. A
// quick answer then costs a timer, not a goroutine, a system call and a
// wake-up per request (bench/sketch: 0.116-0.121 core per 1,000 req/s
// against 0.146-0.165 with the watch from the start), and a caller gone is
// noticed at most this much later.
const watchAfter = 10 * time.Millisecond

// callerWatch notices a caller that goes away while the upstream is asked,
// as net/http's server did with its background read (fasthttp's server has
// no such signal): once armed, after watchAfter, a goroutine waits until
// the caller's connection is readable and peeks at it; its end, or a reset,
// is a caller gone and runs gone; bytes (a pipelined request) end the watch
// quietly. A request with a body is armed when its body has been read
// whole: before that, its bytes are what the connection holds.
//
// Races, on paper: arm (the handler's goroutine, or the body writer's at
// the body's end) and stop (the handler's, once the upstream answered)
// meet under mu. stop marks the watch stopped; a timer that fires later
// sees that and returns; a watch already waiting is woken by a read
// deadline in the past and stop waits for it to return, so that fasthttp
// reads the connection alone afterwards (it sets its own deadline before
// it reads the next request).
type callerWatch struct {
	conn net.Conn
	gone func()

	mu      sync.Mutex
	timer   *time.Timer
	waiting chan struct{} // closed when a started watch returns
	stopped bool
	left    atomic.Bool
}

// arm starts the watch after watchAfter, unless it is stopped or armed.
func (w *callerWatch) arm() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped || w.timer != nil {
		return
	}
	w.timer = time.AfterFunc(watchAfter, w.watch)
}

func (w *callerWatch) watch() {
	w.mu.Lock()
	if w.stopped {
		w.mu.Unlock()
		return
	}
	w.waiting = make(chan struct{})
	w.mu.Unlock()
	defer close(w.waiting)
	if waitGone(w.conn) {
		w.left.Store(true)
		w.gone()
	}
}

// stop ends the watch and reports whether the caller was seen gone.
func (w *callerWatch) stop() bool {
	w.mu.Lock()
	w.stopped = true
	if w.timer != nil {
		w.timer.Stop()
	}
	waiting := w.waiting
	w.mu.Unlock()
	if waiting != nil {
		select {
		case <-waiting:
		default:
			w.conn.SetReadDeadline(aLongTimeAgo)
			<-waiting
			w.conn.SetReadDeadline(time.Time{})
		}
	}
	return w.left.Load()
}
