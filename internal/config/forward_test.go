package config

import (
	"fmt"
	"testing"
)

// forwardCases are pairs of base_urls, upstreams a and b, and whether
// forward-proxy mode sends some of b's requests to a: the same host name
// (case aside), a port both accept (none takes none, 80 or 443) and the
// same path (a trailing slash aside). internal/proxy's
// TestConfigWarnsOfEveryForwardShadow checks the rule against its table.
var forwardCases = []struct {
	A, B     string
	Shadowed bool
}{
	{"https://results-api.hgem.com", "https://results-api.hgem.com", true},
	{"https://results-api.hgem.com/", "https://RESULTS-API.hgem.com", true},
	{"https://h.example/v1", "https://h.example/v1/", true},
	{"https://h.example:8443/v1", "https://h.example:8443/v1", true},
	{"http://127.0.0.1:9000", "https://127.0.0.1:9000", true}, // forward mode matches no scheme
	{"https://h.example", "https://h.example:443", true},      // both take h.example:443
	{"https://h.example:443", "https://h.example", true},
	{"https://h.example", "https://h.example:80", true},
	{"https://h.example/v1", "https://h.example/v2", false},
	{"https://h.example/api", "https://h.example/api/v2", false}, // the longer path wins its own
	{"https://h.example/v1", "https://h.example/V1", false},
	{"https://h.example:8443", "https://h.example", false},
	{"https://h.example:8443", "https://h.example:9443", false},
	{"https://h.example", "https://g.example", false},
}

// Two upstreams at one host pass (two accounts at one vendor are a route
// mode setup), with a warning on the one forward-proxy mode never reaches,
// naming both, the host, the winner, and both lines.
func TestForwardProxyShadowsAreWarned(t *testing.T) {
	for _, c := range forwardCases {
		text := fmt.Sprintf("upstreams:\n  a: {type: hgem, base_url: %q, credentials: 'env:A'}\n  b: {type: hgem, base_url: %q, credentials: 'env:B'}\n", c.A, c.B)
		cfg, err := Parse([]byte(text))
		if err != nil {
			t.Fatalf("%s, %s: %v", c.A, c.B, err)
		}
		ws := cfg.Warnings()
		if got := len(ws) > 0; got != c.Shadowed {
			t.Errorf("%s, %s: warnings %v, want shadowed %v", c.A, c.B, ws, c.Shadowed)
		}
	}

	cfg, err := Parse([]byte(`upstreams:
  hgem-eu:
    type: hgem
    base_url: https://results-api.hgem.com
    credentials: env:HGEM_EU
  hgem-uk:
    type: hgem
    base_url: https://results-api.hgem.com/
    credentials: env:HGEM_UK
  hgem-us:
    type: hgem
    base_url: https://results-api.hgem.com
    credentials: env:HGEM_US
  other:
    type: hgem
    base_url: https://results-api.hgem.com/v2
    credentials: env:O
`))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, w := range cfg.Warnings() {
		got = append(got, w.String())
	}
	want := []string{
		"upstreams.hgem-uk.base_url: upstreams hgem-eu and hgem-uk have the same host and path: forward-proxy requests (HTTP_PROXY) for results-api.hgem.com at any path all reach hgem-eu, the first by name; hgem-uk gets them only by route (/hgem-uk/...) (lines 8 and 4)",
		"upstreams.hgem-us.base_url: upstreams hgem-eu and hgem-us have the same host and path: forward-proxy requests (HTTP_PROXY) for results-api.hgem.com at any path all reach hgem-eu, the first by name; hgem-us gets them only by route (/hgem-us/...) (lines 12 and 4)",
	}
	sameLines(t, "warnings", got, want)

	cfg, err = Parse([]byte("upstreams:\n  a: {type: hgem, base_url: 'https://h.example:443/v1', credentials: 'env:A'}\n  b: {type: hgem, base_url: 'https://h.example/v1', credentials: 'env:B'}\n"))
	if err != nil {
		t.Fatal(err)
	}
	ws := cfg.Warnings()
	const partial = "upstreams.b.base_url: upstreams a and b have the same host and path: forward-proxy requests (HTTP_PROXY) for h.example:443 under its path /v1/ all reach a, the first by name; b gets them only by route (/b/...) (lines 3 and 2)"
	if len(ws) != 1 || ws[0].String() != partial {
		t.Errorf("warnings %v, want [%s]", ws, partial)
	}
}
