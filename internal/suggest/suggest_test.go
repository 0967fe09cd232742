package suggest

import "testing"

func TestNearest(t *testing.T) {
	commands := []string{"run", "validate", "check", "dev", "version", "help"}
	keys := []string{"admin_listen", "drain_delay", "listen", "log_level", "read_header_timeout", "secrets", "shutdown_timeout", "upstreams"}
	cases := []struct {
		word  string
		known []string
		want  string
	}{
		{"valdate", commands, "validate"},
		{"valdiate", commands, "validate"},
		{"rn", commands, "run"},
		{"rnu", commands, "run"},
		{"hgme", []string{"prominsight", "inspera", "hgem", "prodoscore"}, "hgem"},
		{"warning", []string{"debug", "info", "warn", "error"}, "warn"},
		{"log", keys, "log_level"},
		{"lo", keys, ""},
		{"chek", commands, "check"},
		{"verison", commands, "version"},
		{"Validate", commands, "validate"},
		{"deploy", commands, ""},
		{"x", commands, ""},
		{"listne", keys, "listen"},
		{"adminlisten", keys, "admin_listen"},
		{"upstream", keys, "upstreams"},
		{"secret", keys, "secrets"},
		{"shutdown_timout", keys, "shutdown_timeout"},
		{"timeout", keys, ""},
		{"", keys, ""},
	}
	for _, c := range cases {
		if got := Nearest(c.word, c.known); got != c.want {
			t.Errorf("Nearest(%q) = %q, want %q", c.word, got, c.want)
		}
	}
	if got := DidYouMean("listne", keys); got != `; did you mean "listen"?` {
		t.Errorf("DidYouMean = %q", got)
	}
	if got := DidYouMean("zzz", keys); got != "" {
		t.Errorf("DidYouMean = %q, want empty", got)
	}
}
