package vendorsim

import (
	"net/http"
)

func (s *Server) setupInspera() {
	s.tokenPath = s.desc.Token.URL
	s.prefix = "ins_"
	s.token = s.insperaToken
	s.api.HandleFunc("GET /api/v1/test/{id}", s.insperaTest)
	s.api.HandleFunc("GET /api/v1/test/{id}/results/export", s.insperaExport)
	s.api.HandleFunc("GET /api/v1/export/{job}", s.insperaExportStatus)
}

// insperaToken takes grant_type and client_id in the query, the API key in the `code`
// header and an empty form body, and answers without a token_type.
func (s *Server) insperaToken(w http.ResponseWriter, r *http.Request) {
	invalid := func() { s.writeError(w, http.StatusBadRequest, "invalid_request", "") }
	if !hasMediaType(r, "application/x-www-form-urlencoded") {
		invalid()
		return
	}
	body, err := readBody(w, r, maxTokenBody)
	if err != nil || len(body) != 0 {
		invalid()
		return
	}
	q := r.URL.Query()
	c := s.credentials()
	for _, e := range expect(s.desc.Token, "query", c) {
		if !match(q.Get(e.name), e.want) {
			invalid()
			return
		}
	}
	for _, e := range expect(s.desc.Token, "headers", c) {
		if !headerOnce(r.Header, e.name, e.want) {
			s.writeError(w, http.StatusUnauthorized, "invalid_grant", "")
			return
		}
	}
	tok, ttl, _, _ := s.issue(c["client_id"], false)
	writeToken(w, map[string]any{"access_token": tok, "expires_in": s.tokenForm().seconds(ttl)})
}

func (s *Server) insperaTest(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{
		"testId": r.PathValue("id"),
		"title":  "Simulated test " + r.PathValue("id"),
		"status": "published",
	})
}

// insperaExport starts an asynchronous export and answers with a callback on the Inspera host.
func (s *Server) insperaExport(w http.ResponseWriter, r *http.Request) {
	job := randomString()[:16]
	s.mu.Lock()
	s.exports[job] = true
	s.mu.Unlock()
	scheme := "https"
	if r.TLS == nil {
		scheme = "http" // plain httptest servers, so the callback can be followed
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"callbackUrl": scheme + "://" + r.Host + "/api/v1/export/" + job,
	})
}

// insperaExportStatus reports an export as done, with a signed download URL on another
// host: the proxy must not send credentials there.
func (s *Server) insperaExportStatus(w http.ResponseWriter, r *http.Request) {
	job := r.PathValue("job")
	s.mu.Lock()
	known, base := s.exports[job], s.downloadBase
	s.mu.Unlock()
	if !known {
		s.writeError(w, http.StatusNotFound, "not_found", "No such export")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"status": "done",
		"url":    base + "/exports/" + job + ".json?sig=" + randomString(),
	})
}
