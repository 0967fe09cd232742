package vendorsim

import (
	"cmp"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Fault makes the token endpoint or the API misbehave, to test how the proxy copes.
// Fields combine: Delay or Hang first, then Truncate, Malformed or Status, in that order.
type Fault struct {
	Status      int           // answer with this status (0 = no status fault)
	Body        string        // body for Status; default a JSON error in the vendor's shape
	ContentType string        // default application/json
	Header      http.Header   // extra headers on the fault's answer (e.g. Retry-After)
	Delay       time.Duration // wait this long before answering (until the request context ends)
	Hang        bool          // never answer until the request context ends, the fault is cleared, or Close
	Truncate    bool          // declare a longer Content-Length than is sent, then abort the connection
	Malformed   bool          // answer 200 with a body that is not valid JSON
	Count       int           // apply to the next Count requests only; 0 = until cleared
	// Grant limits a token fault to requests of this grant_type ("refresh_token" refuses
	// Prodoscore's refresh grant alone); other requests pass untouched and are not counted.
	Grant string
	// Code is the error code in the default body for Status, for vendors whose errors carry
	// one (all but PROMinsight); default the code the vendor would give with that status.
	Code string
}

// SetTokenFault applies f to the token endpoint; nil clears it. Either way, requests hanging
// on the previous fault are released and handled normally.
func (s *Server) SetTokenFault(f *Fault) {
	s.locked(func() { s.tokenFault.set(f) })
}

// SetAPIFault applies f to every API request; nil clears it. Either way, requests hanging
// on the previous fault are released and handled normally.
func (s *Server) SetAPIFault(f *Fault) {
	s.locked(func() { s.apiFault.set(f) })
}

// faultSlot holds one fault and the channel that releases requests hanging on it.
// Its methods are called with Server.mu held.
type faultSlot struct {
	fault   *Fault
	release chan struct{}
}

func (fs *faultSlot) set(f *Fault) {
	close(fs.release)
	fs.release = make(chan struct{})
	fs.fault = nil
	if f != nil {
		c := *f
		c.Header = f.Header.Clone()
		fs.fault = &c
	}
}

// take returns the fault for one request of the given grant, counting it down. A fault that runs out clears
// itself without closing release: that would free the request it was just given to.
func (fs *faultSlot) take(grant string) (*Fault, <-chan struct{}) {
	if fs.fault == nil || fs.fault.Grant != "" && fs.fault.Grant != grant {
		return nil, nil
	}
	c := *fs.fault
	if fs.fault.Count > 0 {
		fs.fault.Count--
		if fs.fault.Count == 0 {
			fs.fault = nil
		}
	}
	return &c, fs.release
}

// serveFault answers r as f says. It returns false when normal handling should follow:
// after a Delay alone, or when a Hang or Delay was cut short by clearing the fault.
func (s *Server) serveFault(w http.ResponseWriter, r *http.Request, f *Fault, release <-chan struct{}, isToken bool) bool {
	if f.Hang || f.Delay > 0 {
		var delay <-chan time.Time // nil, so never ready, while hanging
		if f.Hang && s.testHookHang != nil {
			s.testHookHang()
		}
		if !f.Hang {
			t := time.NewTimer(f.Delay)
			defer t.Stop()
			delay = t.C
		}
		select {
		case <-delay:
		case <-release:
			return false // the fault was cleared or replaced: answer normally
		case <-r.Context().Done():
			// The client is gone. Abort rather than return: returning would
			// send an empty 200 that a client closing its end may still read.
			panic(http.ErrAbortHandler)
		case <-s.closed:
			s.writeError(w, http.StatusServiceUnavailable, "temporarily_unavailable", "simulator closed")
			return true
		}
	}
	if !f.Truncate && !f.Malformed && f.Status == 0 {
		return false
	}

	for k, v := range f.Header {
		w.Header()[k] = append([]string(nil), v...)
	}
	ct := f.ContentType
	if ct == "" {
		ct = "application/json"
	}
	w.Header().Set("Content-Type", ct)
	switch {
	case f.Truncate:
		body := f.Body
		if body == "" {
			body = `{"access_token":"trunc`
		}
		status := f.Status
		if status == 0 {
			status = http.StatusOK
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(body)+1024))
		w.WriteHeader(status)
		w.Write([]byte(body))
		http.NewResponseController(w).Flush()
		// Closes the connection mid-body; net/http does not log this panic.
		panic(http.ErrAbortHandler)
	case f.Malformed:
		w.WriteHeader(http.StatusOK)
		w.Write([]byte(`{"access_token": "half a token`))
	default:
		if f.Body != "" {
			w.WriteHeader(f.Status)
			w.Write([]byte(f.Body))
			return true
		}
		code, desc := s.faultError(f.Status, isToken)
		// writeError labels its answer JSON; the fault's label goes on over it.
		s.writeError(&formWriter{ResponseWriter: w, form: Form{ContentType: ct}}, f.Status, cmp.Or(f.Code, code), desc)
	}
	return true
}

// faultError picks the error a vendor would give with this status.
func (s *Server) faultError(status int, isToken bool) (code, desc string) {
	if s.kind == Inspera && isToken {
		// The two token failures Inspera documents, word for word.
		switch status {
		case http.StatusConflict:
			return "Multiple tokens for user", "Please contact inspera support"
		case http.StatusInternalServerError:
			return "Internal error authenticating user", "Please contact inspera support"
		}
	}
	switch {
	case status == http.StatusServiceUnavailable || status == http.StatusTooManyRequests:
		code = "temporarily_unavailable"
	case status >= 500:
		code = "server_error"
	default:
		code = strings.ToLower(strings.ReplaceAll(http.StatusText(status), " ", "_"))
	}
	return code, http.StatusText(status)
}
