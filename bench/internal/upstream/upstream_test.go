package upstream

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// The check that decides whether a proxy injected the headers: only the
// static token or one this API minted counts, with the right key, once each.
func TestInjected(t *testing.T) {
	api := &API{APIKey: "key", StaticToken: "static"}
	h := api.Handler()
	do := func(method, path string, header map[string][]string) int {
		req := httptest.NewRequest(method, path, nil)
		for k, vs := range header {
			for _, v := range vs {
				req.Header.Add(k, v)
			}
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		return w.Code
	}
	// minted-1 is not valid before the token endpoint issued it.
	if code := do("GET", "/p/1k", map[string][]string{"Authorization": {"Bearer minted-1"}, "Hgem-Api-Key": {"key"}}); code != 401 {
		t.Errorf("a token not yet minted: %d, want 401", code)
	}
	if code := do("POST", "/connect/token", map[string][]string{"Hgem-Api-Key": {"key"}}); code != 200 {
		t.Fatalf("token endpoint: %d", code)
	}
	for _, tc := range []struct {
		name   string
		header map[string][]string
		want   int
	}{
		{"static token", map[string][]string{"Authorization": {"Bearer static"}, "Hgem-Api-Key": {"key"}}, 200},
		{"minted token", map[string][]string{"Authorization": {"Bearer minted-1"}, "Hgem-Api-Key": {"key"}}, 200},
		{"a caller's own token", map[string][]string{"Authorization": {"Bearer caller-own"}, "Hgem-Api-Key": {"key"}}, 401},
		{"no key", map[string][]string{"Authorization": {"Bearer static"}}, 401},
		{"wrong key", map[string][]string{"Authorization": {"Bearer static"}, "Hgem-Api-Key": {"other"}}, 401},
		{"appended, not replaced", map[string][]string{"Authorization": {"Bearer caller-own", "Bearer static"}, "Hgem-Api-Key": {"key"}}, 401},
		{"no Authorization", map[string][]string{"Hgem-Api-Key": {"key"}}, 401},
	} {
		if code := do("GET", "/p/1k", tc.header); code != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, code, tc.want)
		}
	}
	s := api.Stats()
	if s.Requests != 8 || s.Missing != 6 || s.Tokens != 1 {
		t.Errorf("stats %+v: want 8 requests, 6 missing, 1 token", s)
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"1k": 1024, "64k": 65536, "1m": 1 << 20, "300": 300} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("%s: %d, %v; want %d", in, got, err, want)
		}
	}
	if _, err := ParseSize("1g"); err == nil || !strings.Contains(err.Error(), `"1g"`) {
		t.Errorf("1g: %v, want an error naming it", err)
	}
}

func TestBodies(t *testing.T) {
	api := &API{APIKey: "key", StaticToken: "static"}
	h := api.Handler()
	auth := func(r *http.Request) *http.Request {
		r.Header.Set("Authorization", "Bearer static")
		r.Header.Set("hgem-api-key", "key")
		return r
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, auth(httptest.NewRequest("GET", "/big/200000", nil)))
	if w.Code != 200 || w.Body.Len() != 200000 {
		t.Errorf("/big/200000: %d, %d bytes", w.Code, w.Body.Len())
	}
	w = httptest.NewRecorder()
	h.ServeHTTP(w, auth(httptest.NewRequest("POST", "/sink", strings.NewReader(strings.Repeat("x", 5000)))))
	if w.Code != 200 || w.Body.String() != "5000\n" || api.Stats().SinkBytes != 5000 {
		t.Errorf("/sink: %d %q, stats %+v", w.Code, w.Body.String(), api.Stats())
	}
}
