package proxy

import (
	"fmt"
	"testing"

	"github.com/tokenproxy/tokenproxy/internal/config"
)

// config warns of two upstreams that forward-proxy mode cannot tell apart
// (Config.Warnings) exactly when this table sends a forward request for
// one's host and path (not a longer path another holds) to the other: every pair of base_urls from a grid of
// host spellings, ports and paths is routed here and checked there.
func TestConfigWarnsOfEveryForwardShadow(t *testing.T) {
	var bases []string
	for _, host := range []string{"h.example", "H.EXAMPLE", "g.example"} {
		for _, port := range []string{"", ":80", ":443", ":8443"} {
			for _, path := range []string{"", "/", "/v1", "/v1/", "/V1", "/v1/x"} {
				bases = append(bases, "https://"+host+port+path)
			}
		}
	}
	bases = append(bases, "http://127.0.0.1:9000/v1", "https://127.0.0.1:9000/v1/")
	warned := 0
	for _, a := range bases {
		for _, b := range bases {
			tb := table(t, map[string]string{"a": a, "b": b})
			shadowed := reaches(t, tb, "b", "a") || reaches(t, tb, "a", "b")
			cfg, err := config.Parse(fmt.Appendf(nil, "upstreams:\n  a: {type: hgem, base_url: %q, credentials: 'env:A'}\n  b: {type: hgem, base_url: %q, credentials: 'env:B'}\n", a, b))
			if err != nil {
				t.Fatal(err)
			}
			ws := cfg.Warnings()
			if warn := len(ws) > 0; warn != shadowed {
				t.Errorf("a %s, b %s: forward requests for b reach a: %v; warnings %v", a, b, shadowed, ws)
			}
			if shadowed {
				warned++
			}
		}
	}
	if warned == 0 {
		t.Fatal("no pair shadows another: the grid tests nothing")
	}
	t.Logf("%d of %d pairs shadowed", warned, len(bases)*len(bases))
}

// reaches reports whether a forward request that upstream from's base_url
// accepts, on a port it takes and a path it alone holds, goes to to.
func reaches(t *testing.T, tb *Table, from, to string) bool {
	base := tb.byName[from].Base
	ports := []string{"", ":80", ":443"}
	if p := base.Port(); p != "" {
		ports = []string{":" + p}
	}
	for _, port := range ports {
		r := mustRequest(t, "http://"+base.Hostname()+port+tb.byName[from].basePath()+"/probe")
		if rt, _, err := tb.forward(r); err == nil && rt.Name == to {
			return true
		}
	}
	return false
}
