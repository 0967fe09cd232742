package vendorsim

import (
	"encoding/json"
	"net/http"
	"strconv"
)

func (s *Server) setupProminsight() {
	s.tokenPath = s.desc.Token.URL
	s.prefix = "pi_"
	s.token = s.prominsightToken
	s.api.HandleFunc("POST /api/v1/tests/sessions", s.prominsightSessions)
	s.api.HandleFunc("GET /api/v1/tests/sessions/{id}", s.prominsightSession)
}

// prominsightToken exchanges a JSON {client_id, client_secret, scope} (the description's
// fields) for a token wrapped in PROMinsight's {"success", "data"} envelope with camelCase keys.
func (s *Server) prominsightToken(w http.ResponseWriter, r *http.Request) {
	if !hasMediaType(r, "application/json") {
		s.writeError(w, http.StatusBadRequest, "", "Content-Type must be application/json")
		return
	}
	body, err := readBody(w, r, maxTokenBody)
	if err != nil {
		s.writeError(w, http.StatusBadRequest, "", "Request body too large")
		return
	}
	// The fields the description names, each a string: a field of another
	// type fails to decode as a whole, before any is found missing.
	var req map[string]any
	if err := json.Unmarshal(body, &req); err != nil {
		s.writeError(w, http.StatusBadRequest, "", "Invalid JSON body")
		return
	}
	names := sortedNames(s.desc.Token.Fields)
	for _, name := range names {
		if _, ok := req[name].(string); !ok && req[name] != nil {
			s.writeError(w, http.StatusBadRequest, "", "Invalid JSON body")
			return
		}
	}
	for _, name := range names {
		if v, _ := req[name].(string); v == "" {
			s.writeError(w, http.StatusBadRequest, "", name+" is required")
			return
		}
	}
	c := s.credentials()
	for _, e := range credentialsIn(expect(s.desc.Token, "fields", c)) {
		if v, _ := req[e.name].(string); !match(v, e.want) {
			s.writeError(w, http.StatusUnauthorized, "", "Invalid credentials")
			return
		}
	}
	tok, ttl, _, _ := s.issue(c["client_id"], false)
	shape := s.tokenForm()
	writeToken(w, map[string]any{
		"success": true,
		"data": map[string]any{
			"accessToken": tok,
			"tokenType":   shape.tokenType(),
			"expiresIn":   shape.seconds(ttl),
		},
	})
}

// prominsightSessions lists up to three sessions of the requested test.
func (s *Server) prominsightSessions(w http.ResponseWriter, r *http.Request) {
	body, err := readBody(w, r, maxAPIBody)
	var req struct {
		TestCode string `json:"test_code"`
		Limit    int    `json:"limit"`
	}
	if err != nil || json.Unmarshal(body, &req) != nil {
		s.writeError(w, http.StatusBadRequest, "", "Invalid JSON body")
		return
	}
	if req.Limit <= 0 {
		req.Limit = 10
	}
	rows := []map[string]any{}
	for id := 1; id <= min(3, req.Limit); id++ {
		rows = append(rows, map[string]any{
			"test_session_id": id,
			"test_code":       req.TestCode,
			"client_code":     "CLIENT-00" + strconv.Itoa(id),
			"contract":        "SIM-CONTRACT",
		})
	}
	writeJSON(w, http.StatusOK, rows)
}

// prominsightSession returns item rows for sessions 1 to 3; any other session has none yet,
// which PROMinsight answers with 404.
func (s *Server) prominsightSession(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if id != "1" && id != "2" && id != "3" {
		s.writeError(w, http.StatusNotFound, "", "No session details found")
		return
	}
	n, _ := strconv.Atoi(id)
	rows := []map[string]any{}
	for item := 1; item <= 2; item++ {
		rows = append(rows, map[string]any{
			"test_session_id": n,
			"item_code":       "Q" + strconv.Itoa(item),
			"response":        "A",
			"score":           item % 2,
		})
	}
	writeJSON(w, http.StatusOK, rows)
}
