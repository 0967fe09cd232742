package admin

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenproxy/tokenproxy/internal/broker"
)

// twoUpstreams is hgem with a token and inspera without one.
func twoUpstreams() []Upstream {
	return []Upstream{
		{Type: "hgem", State: broker.State{Name: "hgem", Ready: true, State: "ready", TokenExpiresAt: time.Now().Add(time.Hour)}},
		{Type: "inspera", State: broker.State{Name: "inspera", State: "error", Reason: "token endpoint refused: 409 conflict"}},
	}
}

type answer struct {
	status int
	body   struct {
		Ready     bool   `json:"ready"`
		Draining  bool   `json:"draining"`
		Error     string `json:"error"`
		Upstreams map[string]struct {
			Ready  bool   `json:"ready"`
			Reason string `json:"reason"`
		} `json:"upstreams"`
	}
}

func get(t *testing.T, h http.Handler, target string) answer {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, target, nil))
	var a answer
	a.status = rec.Code
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("%s: Content-Type %q", target, ct)
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &a.body); err != nil {
		t.Fatalf("%s: body is not JSON: %v: %s", target, err, rec.Body)
	}
	return a
}

func TestReadiness(t *testing.T) {
	draining := &atomic.Bool{}
	h := (&Server{Upstreams: twoUpstreams, Draining: draining, Gatherer: prometheus.NewRegistry()}).Handler()

	type want struct {
		status    int
		ready     bool
		upstreams []string // the upstreams the body reports
	}
	check := func(target string, w want) {
		t.Helper()
		a := get(t, h, target)
		if a.status != w.status || a.body.Ready != w.ready {
			t.Errorf("%s: %d ready=%v, want %d ready=%v", target, a.status, a.body.Ready, w.status, w.ready)
		}
		if len(a.body.Upstreams) != len(w.upstreams) {
			t.Errorf("%s: upstreams %v, want %v", target, a.body.Upstreams, w.upstreams)
		}
		for _, name := range w.upstreams {
			if _, ok := a.body.Upstreams[name]; !ok {
				t.Errorf("%s: %s missing from %v", target, name, a.body.Upstreams)
			}
		}
	}

	// The contract's /readyz: every upstream must hold a token.
	check("/readyz", want{503, false, []string{"hgem", "inspera"}})
	// One upstream at a time, or a chosen set.
	check("/readyz?upstream=hgem", want{200, true, []string{"hgem"}})
	check("/readyz?upstream=inspera", want{503, false, []string{"inspera"}})
	check("/readyz?upstream=hgem&upstream=inspera", want{503, false, []string{"hgem", "inspera"}})
	// The process alone: ready while one vendor is down.
	check("/readyz/process", want{200, true, nil})
	if a := get(t, h, "/readyz?upstream=inspera"); a.body.Upstreams["inspera"].Reason != "token endpoint refused: 409 conflict" {
		t.Errorf("inspera's reason %q, want the broker's", a.body.Upstreams["inspera"].Reason)
	}

	// A probe with a typo fails, and says why.
	for _, target := range []string{"/readyz?upstream=hgme", "/readyz?upstream=hgem&upstream=nope", "/readyz?upstream="} {
		a := get(t, h, target)
		if a.status != http.StatusNotFound || a.body.Ready || a.body.Error == "" {
			t.Errorf("%s: %d %+v, want 404 with an error", target, a.status, a.body)
		}
	}

	// Draining takes every form of readiness down.
	draining.Store(true)
	check("/readyz", want{503, false, []string{"hgem", "inspera"}})
	check("/readyz?upstream=hgem", want{503, false, []string{"hgem"}})
	check("/readyz/process", want{503, false, nil})
	if a := get(t, h, "/readyz/process"); !a.body.Draining {
		t.Errorf("/readyz/process while draining: %+v, want draining true", a.body)
	}
}

func TestReadyzAllReady(t *testing.T) {
	ready := func() []Upstream {
		ups := twoUpstreams()
		ups[1].Ready, ups[1].State.State, ups[1].Reason = true, "ready", ""
		ups[1].TokenExpiresAt = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
		return ups
	}
	h := (&Server{Upstreams: ready, Draining: &atomic.Bool{}, Gatherer: prometheus.NewRegistry()}).Handler()
	a := get(t, h, "/readyz")
	if a.status != http.StatusOK || !a.body.Ready {
		t.Fatalf("/readyz with every token: %d %+v", a.status, a.body)
	}
	if got := a.body.Upstreams["inspera"].Reason; got != "token valid until 2030-01-02T03:04:05Z" {
		t.Errorf("reason %q", got)
	}
}
