package vendorsim

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"net/url"
	"time"
)

// ServeHTTP records the request, applies any fault, and then answers as the vendor would.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	isToken := r.URL.Path == s.tokenPath
	sw := &statusWriter{ResponseWriter: w}
	finish := s.record(r, isToken)
	defer func() { finish(sw.status) }()

	slot, grant := &s.apiFault, ""
	if isToken {
		slot, grant = &s.tokenFault, s.grantOfRequest(r)
	}
	s.mu.Lock()
	f, release := slot.take(grant)
	s.mu.Unlock()
	if f != nil && s.serveFault(sw, r, f, release, isToken) {
		return
	}

	if isToken {
		tw := &formWriter{ResponseWriter: sw, form: s.tokenForm()}
		if r.Method != http.MethodPost {
			// Inspera treats a wrong method as a malformed OAuth request; the others answer 405.
			if s.kind == Inspera {
				s.writeError(tw, http.StatusBadRequest, "invalid_request", "")
				return
			}
			tw.Header().Set("Allow", http.MethodPost)
			s.writeError(tw, http.StatusMethodNotAllowed, "invalid_request", "Method not allowed")
			return
		}
		s.token(tw, r)
		return
	}
	if reason := s.checkAuth(r); reason != "" {
		sw.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		s.writeError(sw, http.StatusUnauthorized, "invalid_token", reason)
		return
	}
	s.api.ServeHTTP(sw, r)
}

// record logs r at once, so a hanging request is already visible, and returns the function
// that fills in its status (and, for a streamed body, what of it was read) when it ends.
func (s *Server) record(r *http.Request, isToken bool) func(status int) {
	s.mu.Lock()
	log := &s.apiLog
	if isToken {
		log = &s.tokenLog
		s.tokenCalls++
	} else {
		s.apiCalls++
	}
	quiet := s.quiet
	s.mu.Unlock()
	if quiet {
		return func(int) {}
	}
	req := Request{
		Method:   r.Method,
		Host:     r.Host,
		Path:     r.URL.Path,
		RawQuery: r.URL.RawQuery,
		Header:   r.Header.Clone(),
	}
	var tap *bodyTap
	switch {
	case r.ContentLength > 0:
		// A client that declared the length sends the body regardless, so reading it
		// now cannot deadlock, and the record is complete even if the request hangs.
		head, _ := io.ReadAll(io.LimitReader(r.Body, maxRecordedBody))
		req.Body = head
		r.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(head), r.Body), r.Body}
	case r.Body != nil && r.Body != http.NoBody:
		// A streamed body may wait on our answer; keep only what the handler reads.
		tap = &bodyTap{ReadCloser: r.Body}
		r.Body = tap
	}

	s.mu.Lock()
	i := len(*log)
	*log = append(*log, req)
	s.mu.Unlock()

	return func(status int) {
		s.mu.Lock()
		defer s.mu.Unlock()
		(*log)[i].Status = status
		if tap != nil {
			(*log)[i].Body = bytes.Clone(tap.buf.Bytes())
		}
	}
}

// checkAuth returns why r may not call the API, or "" when it may.
func (s *Server) checkAuth(r *http.Request) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	why, tok := apiAuth(s.desc, r.Header, s.creds)
	if why != "" {
		return why
	}
	exp, ok := s.access[tok]
	switch {
	case !ok:
		return "Invalid token"
	case !s.now().Before(exp):
		return "Token expired"
	}
	return ""
}

// issue mints an access token and, when withRefresh, a refresh token bound to clientID.
func (s *Server) issue(clientID string, withRefresh bool) (access string, accessTTL time.Duration, refresh string, refreshTTL time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	access = s.prefix + randomString()
	accessTTL = s.tokenLifetime
	s.access[access] = now.Add(accessTTL)
	s.issued = append(s.issued, access)
	if withRefresh {
		refresh = s.prefix + "r_" + randomString()
		refreshTTL = s.refreshLifetime
		s.refresh[refresh] = refreshGrant{clientID: clientID, expires: now.Add(refreshTTL)}
		s.issued = append(s.issued, refresh)
	}
	return access, accessTTL, refresh, refreshTTL
}

func (s *Server) credentials() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.creds
}

// writeError answers with an error in the vendor's own shape.
func (s *Server) writeError(w http.ResponseWriter, status int, code, desc string) {
	var body map[string]any
	switch s.kind {
	case Prominsight:
		body = map[string]any{"success": false, "error": desc}
	case Inspera:
		body = map[string]any{"error": code}
		if desc != "" {
			body["description"] = desc
		}
	default: // HGEM and Prodoscore speak RFC 6749.
		body = map[string]any{"error": code}
		if desc != "" {
			body["error_description"] = desc
		}
	}
	writeJSON(w, status, body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v) // only maps and slices of plain values come here
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(b)
}

// writeToken answers a successful token request; RFC 6749 §5.1 forbids caching it.
func writeToken(w http.ResponseWriter, v any) {
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, v)
}

// readBody reads a request body up to limit bytes.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	return io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
}

// readForm reads an OAuth 2 token request body: RFC 6749 §3.2 wants the form media type,
// and no parameter may appear twice. It returns a description of what is wrong, if anything.
func readForm(w http.ResponseWriter, r *http.Request) (url.Values, string) {
	if !hasMediaType(r, "application/x-www-form-urlencoded") {
		return nil, "Content-Type must be application/x-www-form-urlencoded"
	}
	body, err := readBody(w, r, maxTokenBody)
	if err != nil {
		return nil, "request body too large or unreadable"
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, "malformed form body"
	}
	for k, v := range form {
		if len(v) > 1 {
			return nil, "parameter " + k + " given more than once"
		}
	}
	return form, ""
}

func hasMediaType(r *http.Request, want string) bool {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return err == nil && mt == want
}

// match reports whether a presented secret equals the expected one; an unset expectation
// never matches, so a missing key cannot be satisfied by sending nothing.
func match(got, want string) bool {
	return want != "" && got == want
}

// randomString returns 32 random bytes, base64url-encoded.
func randomString() string {
	b := make([]byte, 32)
	rand.Read(b) // never fails: crypto/rand aborts the program instead
	return base64.RawURLEncoding.EncodeToString(b)
}

func cloneLog(log []Request) []Request {
	out := make([]Request, len(log))
	for i, r := range log {
		r.Header = r.Header.Clone()
		r.Body = bytes.Clone(r.Body)
		out[i] = r
	}
	return out
}

// statusWriter remembers the status sent, for the request log.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	// 101 is final too: what follows is another protocol.
	if w.status == 0 && (code >= 200 || code == http.StatusSwitchingProtocols) {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Flush is spelled out, not left to Unwrap, because streaming handlers assert http.Flusher.
func (w *statusWriter) Flush() {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	http.NewResponseController(w.ResponseWriter).Flush()
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// bodyTap keeps the first bytes of a streamed request body as the handler reads them.
type bodyTap struct {
	io.ReadCloser
	buf bytes.Buffer
}

func (t *bodyTap) Read(p []byte) (int, error) {
	n, err := t.ReadCloser.Read(p)
	if room := maxRecordedBody - t.buf.Len(); room > 0 {
		t.buf.Write(p[:min(n, room)])
	}
	return n, err
}
