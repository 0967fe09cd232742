package vendorsim

import (
	"net/http"
	"time"

	"github.com/tokenproxy/tokenproxy/internal/vendor"
)

var (
	prodoscoreEmployees = []map[string]any{
		{"id": 1, "name": "Ada Example", "email": "ada@example.com"},
		{"id": 2, "name": "Grace Example", "email": "grace@example.com"},
	}
	prodoscoreScores = []map[string]any{
		{"employee_id": 1, "date": "2024-03-01", "score": 87},
		{"employee_id": 2, "date": "2024-03-01", "score": 91},
	}
)

func (s *Server) setupProdoscore() {
	s.tokenPath = "/realms/ind-prod/protocol/openid-connect/token"
	s.prefix = "pds_"
	s.tokenLifetime = 10 * time.Hour
	s.token = s.prodoscoreToken
	s.api.HandleFunc("GET /api/v1/employees", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, prodoscoreEmployees)
	})
	s.api.HandleFunc("GET /api/v1/scores", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, prodoscoreScores)
	})
}

// prodoscoreToken is a Keycloak token endpoint with a public client: the password grant,
// and the refresh grant with rotating, single-use refresh tokens.
func (s *Server) prodoscoreToken(w http.ResponseWriter, r *http.Request) {
	form, bad := readForm(w, r)
	if bad != "" {
		s.writeError(w, http.StatusBadRequest, "invalid_request", bad)
		return
	}
	grant := form.Get("grant_type")
	if grant == "" {
		s.writeError(w, http.StatusBadRequest, "invalid_request", "Missing form parameter: grant_type")
		return
	}
	c := s.credentials()
	clientID := form.Get("client_id")
	if !match(clientID, c["client_id"]) {
		s.writeError(w, http.StatusUnauthorized, "invalid_client", "Invalid client or Invalid client credentials")
		return
	}
	switch grant {
	case constant(s.desc.Token, "fields", "grant_type"): // password
		for _, e := range credentialsIn(expect(s.desc.Token, "fields", c)) {
			if !match(form.Get(e.name), e.want) {
				s.writeError(w, http.StatusUnauthorized, "invalid_grant", "Invalid user credentials")
				return
			}
		}
	case constant(s.desc.Refresh, "fields", "grant_type"): // refresh_token
		rt := form.Get(refreshField(s.desc.Refresh))
		if rt == "" {
			s.writeError(w, http.StatusBadRequest, "invalid_request", "Missing parameter: refresh_token")
			return
		}
		if !s.useRefresh(rt, clientID) {
			s.writeError(w, http.StatusBadRequest, "invalid_grant", "Token is not active")
			return
		}
	default:
		s.writeError(w, http.StatusBadRequest, "unsupported_grant_type", "Unsupported grant_type")
		return
	}
	access, ttl, refresh, refreshTTL := s.issue(clientID, true)
	shape := s.tokenForm()
	writeToken(w, map[string]any{
		"access_token":       access,
		"expires_in":         shape.seconds(ttl),
		"refresh_expires_in": shape.seconds(refreshTTL),
		"refresh_token":      refresh,
		"token_type":         shape.tokenType(),
	})
}

// useRefresh consumes a refresh token: whatever the outcome it cannot be used again, which
// is how Keycloak behaves with refresh token rotation on.
func (s *Server) useRefresh(token, clientID string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	g, ok := s.refresh[token]
	delete(s.refresh, token)
	return ok && g.clientID == clientID && s.now().Before(g.expires)
}

// refreshField is the form field of req that carries {refresh_token}.
func refreshField(req *vendor.Request) string {
	for _, name := range sortedNames(req.Fields) {
		if t, err := vendor.ParseTemplate(req.Fields[name]); err == nil && t.Has("refresh_token") {
			return name
		}
	}
	return ""
}
