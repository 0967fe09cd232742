package vendorsim

import (
	"net/http"
	"slices"
	"strings"
)

// hgemScopes are the scopes an HGEM client holds; a token requested without scope gets all.
var hgemScopes = []string{"hgem-results-api", "visits/standard.read", "visits/extended.read"}

var hgemVisits = []map[string]any{
	{"id": "1001", "location": "Simulated Site North", "visitDate": "2024-03-01", "score": 92},
	{"id": "1002", "location": "Simulated Site South", "visitDate": "2024-03-02", "score": 78},
}

func (s *Server) setupHGEM() {
	s.tokenPath = s.desc.Token.URL
	s.prefix = "hgem_"
	s.token = s.hgemToken
	s.api.HandleFunc("GET /api/visits", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, hgemVisits)
	})
	s.api.HandleFunc("GET /api/visits/{id}", s.hgemVisit)
}

// hgemToken is an OAuth 2 client-credentials endpoint that also wants the API key header.
func (s *Server) hgemToken(w http.ResponseWriter, r *http.Request) {
	c := s.credentials()
	for _, e := range expect(s.desc.Token, "headers", c) {
		if !headerOnce(r.Header, e.name, e.want) {
			s.writeError(w, http.StatusUnauthorized, "invalid_client", "missing or invalid API key")
			return
		}
	}
	form, bad := readForm(w, r)
	if bad != "" {
		s.writeError(w, http.StatusBadRequest, "invalid_request", bad)
		return
	}
	for _, e := range credentialsIn(expect(s.desc.Token, "fields", c)) {
		if !match(form.Get(e.name), e.want) {
			s.writeError(w, http.StatusUnauthorized, "invalid_client", "invalid client credentials")
			return
		}
	}
	switch form.Get("grant_type") {
	case constant(s.desc.Token, "fields", "grant_type"):
	case "":
		s.writeError(w, http.StatusBadRequest, "invalid_request", "grant_type is missing")
		return
	default:
		s.writeError(w, http.StatusBadRequest, "unsupported_grant_type", "grant_type must be client_credentials")
		return
	}
	granted := hgemScopes
	// Like IdentityServer, a blank scope counts as omitted.
	if requested := strings.Fields(form.Get("scope")); len(requested) > 0 {
		for _, sc := range requested {
			if !slices.Contains(hgemScopes, sc) {
				s.writeError(w, http.StatusBadRequest, "invalid_scope", "unknown scope "+sc)
				return
			}
		}
		if !slices.Contains(requested, "hgem-results-api") {
			s.writeError(w, http.StatusBadRequest, "invalid_scope", "scope must include hgem-results-api")
			return
		}
		granted = requested
	}
	tok, ttl, _, _ := s.issue(c["client_id"], false)
	shape := s.tokenForm()
	writeToken(w, map[string]any{
		"access_token": tok,
		"expires_in":   shape.seconds(ttl),
		"token_type":   shape.tokenType(),
		"scope":        strings.Join(granted, " "),
	})
}

func (s *Server) hgemVisit(w http.ResponseWriter, r *http.Request) {
	for _, v := range hgemVisits {
		if v["id"] == r.PathValue("id") {
			writeJSON(w, http.StatusOK, v)
			return
		}
	}
	s.writeError(w, http.StatusNotFound, "not_found", "visit not found")
}
