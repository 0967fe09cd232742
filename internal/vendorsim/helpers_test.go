package vendorsim

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

var kinds = []string{Prominsight, Inspera, HGEM, Prodoscore}

func demoCreds(kind string) map[string]string {
	switch kind {
	case Prominsight:
		return map[string]string{"client_id": "pi-client", "client_secret": "pi-secret"}
	case Inspera:
		return map[string]string{"client_id": "demo", "api_key": "123456-7890-abcd"}
	case HGEM:
		return map[string]string{"api_key": "hgem-key", "client_id": "hgem-client", "client_secret": "hgem-secret"}
	case Prodoscore:
		return map[string]string{"client_id": "cust-1", "username": "ada@example.com", "password": "pw"}
	}
	panic("unknown kind " + kind)
}

// apiPath is a built-in API route that answers 200 to an authorized GET.
var apiPath = map[string]string{
	Prominsight: "/api/v1/tests/sessions/1",
	Inspera:     "/api/v1/test/42",
	HGEM:        "/api/visits",
	Prodoscore:  "/api/v1/employees",
}

// start runs a simulator behind an httptest server, closing both when the test ends.
// The simulator is closed first, so hanging requests are released before the server
// waits for them; a leaked handler would make the test hang.
func start(t *testing.T, kind string) (*Server, *httptest.Server) {
	t.Helper()
	sim, err := New(kind, demoCreds(kind))
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(sim)
	t.Cleanup(ts.Close)
	t.Cleanup(sim.Close)
	return sim, ts
}

// tokenReq describes a token request so a test can spoil one part of a correct one.
type tokenReq struct {
	method string
	query  url.Values
	header http.Header
	form   url.Values     // form body, when jsonv is nil
	jsonv  map[string]any // JSON body
	raw    *string        // a body given verbatim, overriding the others
}

// goodTokenReq is the request each vendor's documentation shows.
func goodTokenReq(kind string, c map[string]string) *tokenReq {
	r := &tokenReq{method: http.MethodPost, query: url.Values{}, header: http.Header{}}
	switch kind {
	case Prominsight:
		r.header.Set("Content-Type", "application/json")
		r.jsonv = map[string]any{"client_id": c["client_id"], "client_secret": c["client_secret"], "scope": "session.read"}
	case Inspera:
		r.header.Set("Content-Type", "application/x-www-form-urlencoded")
		r.header.Set("code", c["api_key"])
		r.query.Set("grant_type", "authorization_code")
		r.query.Set("client_id", c["client_id"])
	case HGEM:
		r.header.Set("Content-Type", "application/x-www-form-urlencoded")
		r.header.Set("hgem-api-key", c["api_key"])
		r.form = url.Values{"grant_type": {"client_credentials"}, "client_id": {c["client_id"]}, "client_secret": {c["client_secret"]}}
	case Prodoscore:
		r.header.Set("Content-Type", "application/x-www-form-urlencoded")
		r.form = url.Values{"grant_type": {"password"}, "client_id": {c["client_id"]}, "username": {c["username"]}, "password": {c["password"]}}
	}
	return r
}

func (tr *tokenReq) build(t *testing.T, base, path string) *http.Request {
	t.Helper()
	var body string
	switch {
	case tr.raw != nil:
		body = *tr.raw
	case tr.jsonv != nil:
		b, err := json.Marshal(tr.jsonv)
		if err != nil {
			t.Fatal(err)
		}
		body = string(b)
	case tr.form != nil:
		body = tr.form.Encode()
	}
	u := base + path
	if len(tr.query) > 0 {
		u += "?" + tr.query.Encode()
	}
	req, err := http.NewRequest(tr.method, u, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header = tr.header.Clone()
	return req
}

type answer struct {
	status int
	header http.Header
	body   []byte
}

func do(t *testing.T, c *http.Client, req *http.Request) answer {
	t.Helper()
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return answer{resp.StatusCode, resp.Header, b}
}

// object decodes a JSON object answer.
func (a answer) object(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(a.body, &m); err != nil {
		t.Fatalf("body %q: %v", a.body, err)
	}
	return m
}

// fetchToken gets an access token with the documented request, and for Prodoscore also
// returns the refresh token.
func fetchToken(t *testing.T, sim *Server, base string) (access, refresh string) {
	t.Helper()
	kind := sim.kind
	a := do(t, nil, goodTokenReq(kind, demoCreds(kind)).build(t, base, sim.TokenPath()))
	if a.status != http.StatusOK {
		t.Fatalf("token: %d %s", a.status, a.body)
	}
	m := a.object(t)
	if kind == Prominsight {
		m = m["data"].(map[string]any)
		return m["accessToken"].(string), ""
	}
	refresh, _ = m["refresh_token"].(string)
	return m["access_token"].(string), refresh
}

// apiReq builds an API request carrying token (if any) and, for HGEM, the API key.
func apiReq(t *testing.T, kind, method, url, token string, body io.Reader) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if kind == HGEM {
		req.Header.Set("hgem-api-key", demoCreds(HGEM)["api_key"])
	}
	return req
}

// fakeClock is a clock a test moves by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// jsonEqual reports whether got holds the same JSON value as want, key order aside.
func jsonEqual(got []byte, want string) bool {
	var g, w any
	return json.Unmarshal(got, &g) == nil && json.Unmarshal([]byte(want), &w) == nil && reflect.DeepEqual(g, w)
}

func ptr[T any](v T) *T { return &v }
