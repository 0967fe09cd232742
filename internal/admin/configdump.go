package admin

import (
	"net/http"
	"strings"

	"gopkg.in/yaml.v3"
)

// config shows the config in force, after defaults, with the file's keys:
// references and settings only (config.Redacted). JSON, or YAML when Accept
// names yaml (application/yaml, text/yaml, application/x-yaml); the YAML
// loads back as a config.
func (s *Server) config(w http.ResponseWriter, r *http.Request) {
	info := s.Config()
	if info.Config == nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "no config loaded yet"})
		return
	}
	// The config's types carry yaml tags alone: YAML is its one form, and
	// JSON is that YAML's tree.
	b, err := yaml.Marshal(info.Config.Redacted())
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		return
	}
	if strings.Contains(r.Header.Get("Accept"), "yaml") {
		w.Header().Set("Content-Type", "application/yaml")
		w.Header().Set("Cache-Control", "no-store")
		w.Write(b)
		return
	}
	var tree map[string]any
	if err := yaml.Unmarshal(b, &tree); err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, tree)
}
