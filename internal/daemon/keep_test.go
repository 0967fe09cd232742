package daemon

import (
	"reflect"
	"strings"
	"testing"

	"github.com/tokenproxy/tokenproxy/internal/config"
)

func mustParse(t *testing.T, text string) *config.Config {
	t.Helper()
	cfg, err := config.Parse([]byte(text))
	if err != nil {
		t.Fatalf("%v\n%s", err, text)
	}
	return cfg
}

// The reload decision: which upstreams keep their cache (and warm token)
// from one config to the next.
func TestKeepAcrossReload(t *testing.T) {
	const vault = `
secrets:
  vault: {address: "https://v:8200", auth: {method: kubernetes, role: r}}
`
	const base = vault + `
upstreams:
  a: {type: hgem, base_url: "https://a", credentials: "vault:secret/a"}
  f: {type: hgem, base_url: "https://f", credentials: "file:/etc/f.json"}
`
	const shared = vault + `
sharing: {vault: {path: secret/shared}}
upstreams:
  a: {type: hgem, base_url: "https://a", credentials: "vault:secret/a"}
  f: {type: hgem, base_url: "https://f", credentials: "file:/etc/f.json", shared: false}
`
	cases := []struct {
		name     string
		old, new string
		want     map[string]bool
	}{
		{"same text", base, base, map[string]bool{"a": true, "f": true}},
		{"an upstream setting", base, vault + `
upstreams:
  a: {type: hgem, base_url: "https://a", credentials: "vault:secret/a", timeout: 5s}
  f: {type: hgem, base_url: "https://f", credentials: "file:/etc/f.json"}
`, map[string]bool{"a": false, "f": true}},
		{"vault changed: only vault credentials restart", base, `
secrets:
  vault: {address: "https://other:8200", auth: {method: kubernetes, role: r}}
upstreams:
  a: {type: hgem, base_url: "https://a", credentials: "vault:secret/a"}
  f: {type: hgem, base_url: "https://f", credentials: "file:/etc/f.json"}
`, map[string]bool{"a": false, "f": true}},
		{"poll interval: kept, the running watch takes it", base, vault + `
  poll_interval: 5s
upstreams:
  a: {type: hgem, base_url: "https://a", credentials: "vault:secret/a"}
  f: {type: hgem, base_url: "https://f", credentials: "file:/etc/f.json"}
`, map[string]bool{"a": true, "f": true}},
		{"sharing turned on: shared ones restart", base, shared, map[string]bool{"a": false, "f": false}},
		{"shared: true written out is the same", shared, vault + `
sharing: {vault: {path: secret/shared}}
upstreams:
  a: {type: hgem, base_url: "https://a", credentials: "vault:secret/a", shared: true}
  f: {type: hgem, base_url: "https://f", credentials: "file:/etc/f.json", shared: false}
`, map[string]bool{"a": false, "f": true}},
		{"lease changed", shared, vault + `
sharing: {vault: {path: secret/shared}, lease: 60s}
upstreams:
  a: {type: hgem, base_url: "https://a", credentials: "vault:secret/a"}
  f: {type: hgem, base_url: "https://f", credentials: "file:/etc/f.json", shared: false}
`, map[string]bool{"a": false, "f": true}},
		{"a new upstream starts", base, base + `  n: {type: hgem, base_url: "https://n", credentials: "env:N"}
`, map[string]bool{"a": true, "f": true, "n": false}},
		{"the same pointer values parsed twice", shared, shared, map[string]bool{"a": true, "f": true}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			old, cfg := mustParse(t, tc.old), mustParse(t, tc.new)
			for name, want := range tc.want {
				if got := keep(old, cfg, name); got != want {
					t.Errorf("keep(%s) = %v, want %v", name, got, want)
				}
			}
		})
	}
}

// The whole reload plan: which upstreams keep, start and stop, whether
// Vault restarts and the sharing store is checked again, whether the log
// level is set, and which changes wait for a restart.
func TestReloadPlan(t *testing.T) {
	const vault = "secrets:\n  vault: {address: \"https://v:8200\", auth: {method: kubernetes, role: r}}\n"
	const ups = `upstreams:
  a: {type: hgem, base_url: "https://a", credentials: "vault:secret/a"}
  f: {type: hgem, base_url: "https://f", credentials: "file:/etc/f.json"}
`
	base := vault + ups
	cases := []struct {
		name     string
		old, new string
		want     plan
	}{
		{"same text", base, base, plan{Keep: []string{"a", "f"}}},
		{"one upstream changed", base, vault + strings.Replace(ups, `"https://f"`, `"https://f2"`, 1),
			plan{Keep: []string{"a"}, Start: []string{"f"}, Stop: []string{"f"}}},
		{"one added, one gone", base, vault + `upstreams:
  a: {type: hgem, base_url: "https://a", credentials: "vault:secret/a"}
  n: {type: hgem, base_url: "https://n", credentials: "env:N"}
`, plan{Keep: []string{"a"}, Start: []string{"n"}, Stop: []string{"f"}}},
		{"vault changed: it restarts, its upstreams too", base, strings.Replace(base, "https://v:8200", "https://w:8200", 1),
			plan{Keep: []string{"f"}, Start: []string{"a"}, Stop: []string{"a"}, Vault: true, CheckSharing: true}},
		{"sharing turned on", base, vault + "sharing: {vault: {path: secret/shared}}\n" + ups,
			plan{Start: []string{"a", "f"}, Stop: []string{"a", "f"}, CheckSharing: true}},
		{"log level", base, "log_level: debug\n" + base, plan{Keep: []string{"a", "f"}, LogLevel: true}},
		{"what waits for a restart", base, "listen: 127.0.0.1:1\nadmin_listen: 127.0.0.1:2\nread_header_timeout: 3s\n" +
			"tracing: {endpoint: \"http://127.0.0.1:4318\"}\n" + base,
			plan{Keep: []string{"a", "f"}, AtRestart: []string{"listen", "admin_listen", "read_header_timeout", "tracing"}}},
		{"settings applied at once are no restart's", base, "drain_delay: 3s\nshutdown_timeout: 5s\nadmin_pprof: true\n" + base,
			plan{Keep: []string{"a", "f"}}},
		{"an explicit default is the same setting", base, vault + strings.Replace(ups, `"file:/etc/f.json"}`, `"file:/etc/f.json", timeout: 30s, max_connections: 64}`, 1),
			plan{Keep: []string{"a", "f"}}},
		{"an explicit zero is not", base, vault + strings.Replace(ups, `"file:/etc/f.json"}`, `"file:/etc/f.json", replay_max_bytes: 0}`, 1),
			plan{Keep: []string{"a"}, Start: []string{"f"}, Stop: []string{"f"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := planReload(mustParse(t, tc.old), mustParse(t, tc.new)); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("plan\n  %+v\nwant\n  %+v", got, tc.want)
			}
		})
	}
}

// What a reload puts in force keeps the running value of every setting
// that waits for a restart, and takes the file's for the rest; a second
// reload of the same file still names what is pending.
func TestInForceKeepsRestartOnlySettings(t *testing.T) {
	base := "upstreams:\n  a: {type: hgem, base_url: \"https://a\", credentials: \"env:A\"}\n"
	running := mustParse(t, base)
	file := mustParse(t, "listen: 127.0.0.1:1\nadmin_listen: 127.0.0.1:2\nread_header_timeout: 3s\n"+
		"tracing: {endpoint: \"http://127.0.0.1:4318\"}\nlog_level: debug\ndrain_delay: 3s\n"+base)
	next, pending := inForce(running, file)
	keys := make([]string, len(restartOnly))
	for i, s := range restartOnly {
		keys[i] = s.key
		got, was := reflect.ValueOf(s.field(next)).Elem().Interface(), reflect.ValueOf(s.field(running)).Elem().Interface()
		if !reflect.DeepEqual(got, was) {
			t.Errorf("%s in force: %v, want the running %v", s.key, got, was)
		}
	}
	if !reflect.DeepEqual(pending, keys) {
		t.Errorf("pending %v, want %v", pending, keys)
	}
	if next.LogLevel != "debug" || next.DrainDelay != file.DrainDelay || !reflect.DeepEqual(next.Upstreams, file.Upstreams) {
		t.Errorf("settings a reload applies: log_level %q, drain_delay %v: want the file's", next.LogLevel, next.DrainDelay)
	}
	if file.Listen != "127.0.0.1:1" {
		t.Errorf("inForce changed the config it was given: listen %q", file.Listen)
	}
	if _, again := inForce(next, file); !reflect.DeepEqual(again, keys) {
		t.Errorf("a second reload of the same file: pending %v, want %v", again, keys)
	}
	if _, none := inForce(running, mustParse(t, base)); none != nil {
		t.Errorf("no change: pending %v", none)
	}
}
