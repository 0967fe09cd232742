// Package vendorsim owns the simulators of the four vendor APIs (PROMinsight, Inspera, HGEM,
// Prodoscore) that the tests and `tokenproxy dev` run in place of the real vendors.
//
// A simulator checks what its vendor checks (shared/VENDORS.md) and answers in the vendor's
// own shapes, because the proxy's adapters are tested against it. It also records every
// request, lets a test revoke tokens, rotate credentials, move the clock and inject faults.
package vendorsim

import (
	"bytes"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/tokenproxy/tokenproxy/internal/vendor"
)

// The simulated vendors, spelled as the config's `type`.
const (
	Prominsight = "prominsight"
	Inspera     = "inspera"
	HGEM        = "hgem"
	Prodoscore  = "prodoscore"
)

const (
	maxTokenBody    = 64 << 10 // token requests are a few hundred bytes; anything bigger is refused
	maxAPIBody      = 1 << 20
	maxRecordedBody = 64 << 10
)

// Request is one request as the simulator received it.
type Request struct {
	Method   string
	Host     string
	Path     string
	RawQuery string
	Header   http.Header
	Body     []byte // first 64 KiB only
	Status   int    // set when the handler ends (so a 101 once the switched connection closed); 0 before, and when the client went away before an answer
}

// TokenRequest is one call to the token endpoint.
type TokenRequest struct {
	Grant  string // grant_type as sent; "" for PROMinsight, which has none
	Status int
}

// Server simulates one vendor. It is an http.Handler, safe for concurrent use.
type Server struct {
	kind      string
	desc      *vendor.Description // what its requests must carry
	tokenPath string
	prefix    string // makes issued tokens easy to spot in logs
	token     http.HandlerFunc
	api       *http.ServeMux
	closed    chan struct{}
	closeOnce sync.Once

	// testHookHang, when set by a test before serving, runs as a request starts to hang,
	// so the test knows the hang is in place without sleeping.
	testHookHang func()

	mu              sync.Mutex
	creds           map[string]string // replaced whole, never mutated, so it can be handed out
	now             func() time.Time
	tokenLifetime   time.Duration
	refreshLifetime time.Duration
	access          map[string]time.Time // access token -> expiry
	refresh         map[string]refreshGrant
	issued          []string
	tokenLog        []Request
	apiLog          []Request
	tokenCalls      int
	apiCalls        int
	quiet           bool // count requests, keep no record of them
	tokenFault      faultSlot
	apiFault        faultSlot
	form            Form
	downloadBase    string
	exports         map[string]bool
}

type refreshGrant struct {
	clientID string
	expires  time.Time
}

// New returns a simulator of one vendor that accepts the given credentials.
// It fails on an unknown kind or a missing or empty credential key.
func New(kind string, creds map[string]string) (*Server, error) {
	desc, ok := vendor.Builtin(kind)
	if !ok {
		return nil, fmt.Errorf("vendorsim: unknown kind %q", kind)
	}
	for _, k := range desc.RequiredKeys() {
		if creds[k] == "" {
			return nil, fmt.Errorf("vendorsim: %s credentials: missing key %q", kind, k)
		}
	}
	s := &Server{
		kind:            kind,
		desc:            desc,
		api:             http.NewServeMux(),
		closed:          make(chan struct{}),
		creds:           maps.Clone(creds),
		now:             time.Now,
		tokenLifetime:   time.Hour,
		refreshLifetime: 7 * 24 * time.Hour,
		access:          map[string]time.Time{},
		refresh:         map[string]refreshGrant{},
		tokenFault:      faultSlot{release: make(chan struct{})},
		apiFault:        faultSlot{release: make(chan struct{})},
		downloadBase:    "https://storage.invalid",
		exports:         map[string]bool{},
	}
	switch kind {
	case Prominsight:
		s.setupProminsight()
	case Inspera:
		s.setupInspera()
	case HGEM:
		s.setupHGEM()
	case Prodoscore:
		s.setupProdoscore()
	}
	s.setupUpgrade()
	return s, nil
}

// locked runs f with the server's state locked.
func (s *Server) locked(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f()
}

// TokenPath is the path of the simulator's token endpoint.
func (s *Server) TokenPath() string { return s.tokenPath }

// SetCredentials models a rotation: from now on only creds are accepted, while tokens
// already issued keep working until they expire.
func (s *Server) SetCredentials(creds map[string]string) {
	c := maps.Clone(creds)
	s.locked(func() { s.creds = c })
}

// SetTokenLifetime sets the lifetime of access tokens issued from now on.
func (s *Server) SetTokenLifetime(d time.Duration) {
	s.locked(func() { s.tokenLifetime = d })
}

// SetRefreshLifetime sets the lifetime of Prodoscore refresh tokens issued from now on.
func (s *Server) SetRefreshLifetime(d time.Duration) {
	s.locked(func() { s.refreshLifetime = d })
}

// SetClock replaces the clock used for issuing and checking tokens; nil restores time.Now.
func (s *Server) SetClock(now func() time.Time) {
	if now == nil {
		now = time.Now
	}
	s.locked(func() { s.now = now })
}

// SetDownloadBaseURL sets where Inspera export downloads point. It models object storage on
// another host, which must never see credentials. The default is https://storage.invalid.
func (s *Server) SetDownloadBaseURL(u string) {
	s.locked(func() { s.downloadBase = strings.TrimSuffix(u, "/") })
}

// TokenCalls counts the requests that reached the token endpoint, whatever their outcome.
// A request is counted as soon as it arrives, so a test can wait for a hanging one.
func (s *Server) TokenCalls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tokenCalls
}

// SetRecording turns the record of requests (TokenRequestsSeen,
// APIRequests, ...) on, the default, or off; counts are kept either way. A
// long-running `tokenproxy dev` turns it off so that its memory stays flat.
func (s *Server) SetRecording(on bool) {
	s.locked(func() { s.quiet = !on })
}

// TokenRequests returns the grant and status of every token call so far.
func (s *Server) TokenRequests() []TokenRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]TokenRequest, len(s.tokenLog))
	for i, r := range s.tokenLog {
		out[i] = TokenRequest{Grant: s.grantOf(r), Status: r.Status}
	}
	return out
}

// grantIn is where the vendor's description puts grant_type: "query",
// "fields" (a form body), or "" for a vendor without one (PROMinsight).
func (s *Server) grantIn() string {
	switch {
	case constant(s.desc.Token, "query", "grant_type") != "":
		return "query"
	case constant(s.desc.Token, "fields", "grant_type") != "" && s.desc.Token.BodyOf() == vendor.BodyForm:
		return "fields"
	}
	return ""
}

// grantOf reads grant_type from where the vendor expects it.
func (s *Server) grantOf(r Request) string {
	switch s.grantIn() {
	case "query":
		q, _ := url.ParseQuery(r.RawQuery)
		return q.Get("grant_type")
	case "fields":
		f, _ := url.ParseQuery(string(r.Body))
		return f.Get("grant_type")
	}
	return ""
}

// grantOfRequest reads grant_type from a token request as it arrives, as grantOf does from
// its record, and leaves the body to be read again.
func (s *Server) grantOfRequest(r *http.Request) string {
	switch s.grantIn() {
	case "query":
		return r.URL.Query().Get("grant_type")
	case "fields":
		head, _ := io.ReadAll(io.LimitReader(r.Body, maxTokenBody))
		r.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(head), r.Body), r.Body}
		f, _ := url.ParseQuery(string(head))
		return f.Get("grant_type")
	}
	return ""
}

// TokenRequestsSeen returns every token request in full, so tests can check what was sent.
func (s *Server) TokenRequestsSeen() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return cloneLog(s.tokenLog)
}

// APICalls counts the requests that were not token calls.
func (s *Server) APICalls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.apiCalls
}

// APIRequests returns every request that was not a token call.
func (s *Server) APIRequests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return cloneLog(s.apiLog)
}

// Tokens returns every access and refresh token issued so far, so tests can search logs for them.
func (s *Server) Tokens() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.issued...)
}

// RevokeAll makes every issued access and refresh token stop working.
func (s *Server) RevokeAll() {
	s.locked(func() { clear(s.access); clear(s.refresh) })
}

// Revoke makes one access or refresh token stop working.
func (s *Server) Revoke(token string) {
	s.locked(func() { delete(s.access, token); delete(s.refresh, token) })
}

// HandleAPI adds an API route (an http.ServeMux pattern such as "GET /api/stream") behind the
// same token check as the built-in routes.
func (s *Server) HandleAPI(pattern string, h http.Handler) {
	s.api.Handle(pattern, h)
}

// Close releases requests held by a Hang or Delay fault. The simulator still answers afterwards.
func (s *Server) Close() {
	s.closeOnce.Do(func() { close(s.closed) })
}
