package e2e

import (
	"fmt"
	"strings"
	"testing"

	"github.com/tokenproxy/tokenproxy/internal/vendorsim"
)

// TestNoSecretReachesAnyOutput plants canary values in every credential key
// (newEnv does), runs at debug level through successes, refusals, a vendor
// that echoes what it was sent, 401 replays and a rotation, and searches
// every byte the process wrote and every body it served, every admin
// endpoint in each of its forms included. The harness's
// cleanup searches the process output once more for every token issued.
func TestNoSecretReachesAnyOutput(t *testing.T) {
	e := newEnv(t)
	cfg := e.allUpstreams()
	cfg.AdminPprof = true
	p := e.start(cfg)
	p.ready(t)

	var bodies []string
	keep := func(r *response) { bodies = append(bodies, fmt.Sprint(r.Header), string(r.body)) }
	for kind := range e.vendors {
		keep(call(t, p, kind))
	}
	// A 401 from the API and a replay.
	e.vendors["inspera"].sim.RevokeAll()
	keep(call(t, p, "inspera"))

	// Refusals from vendors that echo the credentials they were sent.
	for kind, v := range e.vendors {
		var echo []string
		for k, val := range v.creds {
			echo = append(echo, k+"="+val)
		}
		v.sim.SetTokenFault(&vendorsim.Fault{Status: 401,
			Body: fmt.Sprintf(`{"success":false,"error":"invalid_client","error_description":"unknown %s","description":"unknown %s"}`,
				strings.Join(echo, " "), strings.Join(echo, " "))})
		v.sim.RevokeAll()
		r := call(t, p, kind)
		keep(r)
		if r.StatusCode == 200 {
			t.Fatalf("%s: 200 with every token revoked and the token endpoint refusing", kind)
		}
		if kind != "prominsight" && r.StatusCode == 502 && !strings.Contains(string(r.body), "REDACTED") {
			t.Errorf("%s: a refusal echoing the credentials should show REDACTED: %s", kind, r.body)
		}
	}
	// Every admin output, in each of its forms.
	for _, path := range []string{"/", "/status", "/readyz", "/metrics", "/healthz", "/config", "/loglevel", "/debug/pprof/cmdline"} {
		keep(get(t, p.admin+path))
	}
	for _, path := range []string{"/", "/status"} {
		keep(get(t, p.admin+path, "Accept", "text/html"))
	}
	keep(get(t, p.admin+"/config", "Accept", "application/yaml"))
	keep(get(t, p.admin+"/metrics", "Accept", "application/openmetrics-text;version=1.0.0"))
	if r := get(t, p.admin+"/config"); !strings.Contains(string(r.body), "file:"+e.dir) {
		t.Errorf("/config should show the credentials references: %s", r.body)
	}

	var secrets []string
	for _, v := range e.vendors {
		for _, c := range v.creds {
			secrets = append(secrets, c)
		}
		secrets = append(secrets, v.sim.Tokens()...)
	}
	all := strings.Join(bodies, "\n")
	for _, s := range secrets {
		if strings.Contains(all, s) {
			t.Errorf("a response body or header holds a secret or token (%.20s...)", s)
		}
	}
	if !strings.Contains(p.out.String(), `"level":"debug"`) && !strings.Contains(p.out.String(), `"level":"info"`) {
		t.Fatal("the process wrote no log lines to search")
	}
}
