package proxy

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/internal/broker"
)

// The injector: the token's headers set last, a 401 that drops the token
// and replays the request once with a new one (bodies up to ReplayMaxBytes
// kept for it), and the route's timeout on the response headers only.

// genTokens hands out token generation n until Invalidate(n) moves it on,
// as a broker that re-mints after a 401 does; refuse makes Invalidate keep
// the token (the reauth bound), fail makes the next token an error.
type genTokens struct {
	mu          sync.Mutex
	gen         uint64
	invalidated []uint64
	refuse      bool
	fail        error
}

func (g *genTokens) Token(context.Context) (broker.Token, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.fail != nil && g.gen > 1 {
		return broker.Token{}, g.fail
	}
	t := fmt.Sprintf("tok-%d", g.gen)
	return broker.Token{AccessToken: t, Gen: g.gen, Header: broker.Header{"Authorization": {"Bearer " + t}}}, nil
}

func (g *genTokens) Invalidate(gen uint64) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.invalidated = append(g.invalidated, gen)
	if g.refuse || gen != g.gen {
		return false
	}
	g.gen++
	return true
}

// injectorRig is a data plane in front of an upstream that accepts only the
// tokens in good, records what each attempt carried, and may hold its
// answer back.
type injectorRig struct {
	px     *testServer
	tokens *genTokens

	mu       sync.Mutex
	good     map[string]bool
	attempts []attempt
	delay    time.Duration // before the response headers
	trickle  time.Duration // between body chunks, after the headers
}

type attempt struct {
	auth string
	body string
}

func newInjectorRig(t *testing.T, replayMax int64, timeout time.Duration) *injectorRig {
	t.Helper()
	g := &injectorRig{tokens: &genTokens{gen: 1}, good: map[string]bool{}}
	up := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		g.mu.Lock()
		g.attempts = append(g.attempts, attempt{auth: r.Header.Get("Authorization"), body: string(b)})
		ok, delay, trickle := g.good[r.Header.Get("Authorization")], g.delay, g.trickle
		g.mu.Unlock()
		if delay > 0 {
			// A slow upstream: the proxy's timeout is what is tested.
			select {
			case <-time.After(delay):
			case <-r.Context().Done():
				return
			}
		}
		if !ok {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.WriteHeader(http.StatusOK)
		for i := range 3 {
			fmt.Fprintf(w, "part%d;", i)
			w.(http.Flusher).Flush()
			if trickle > 0 {
				select {
				case <-time.After(trickle):
				case <-r.Context().Done():
					return
				}
			}
		}
		fmt.Fprint(w, len(b))
	}))
	t.Cleanup(up.Close)
	base, _ := url.Parse(up.URL)
	tr := up.Client().Transport.(*http.Transport).Clone()
	api := NewClient(tr)
	t.Cleanup(api.CloseIdleConnections)
	route := &Route{Name: "up", Base: base, Tokens: g.tokens, Transport: api, Timeout: timeout, ReplayMaxBytes: replayMax}
	g.px = newTestServer(New(NewTable([]*Route{route}), "127.0.0.1:0", nil, nil))
	t.Cleanup(g.px.Close)
	return g
}

func (g *injectorRig) accept(tokens ...string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, t := range tokens {
		g.good["Bearer "+t] = true
	}
}

func (g *injectorRig) seen() []attempt {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]attempt(nil), g.attempts...)
}

// post sends body; chunked hides its length, as a streaming caller does.
func (g *injectorRig) post(t *testing.T, body string, chunked bool) (int, string, http.Header) {
	t.Helper()
	var r io.Reader = strings.NewReader(body)
	if chunked {
		r = io.MultiReader(r) // no Len: sent chunked
	}
	req, _ := http.NewRequest(http.MethodPost, g.px.URL+"/up/x", r)
	resp, err := g.px.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

func TestInjectorReplaysOnceWithTheSameBody(t *testing.T) {
	for _, chunked := range []bool{false, true} {
		t.Run(fmt.Sprintf("chunked=%v", chunked), func(t *testing.T) {
			g := newInjectorRig(t, 1<<10, 10*time.Second)
			g.accept("tok-2") // tok-1 is refused
			body := strings.Repeat("b", 1000)
			status, answer, _ := g.post(t, body, chunked)
			if status != http.StatusOK || !strings.HasSuffix(answer, "1000") {
				t.Fatalf("got %d %q, want the replay's 200 with the whole body", status, answer)
			}
			want := []attempt{{"Bearer tok-1", body}, {"Bearer tok-2", body}}
			if got := g.seen(); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("attempts %v, want the refused token then the new one, each with the body", summarize(got))
			}
		})
	}
}

func TestInjectorBodyOverTheLimitStreamsAndIsNotReplayed(t *testing.T) {
	for _, chunked := range []bool{false, true} {
		t.Run(fmt.Sprintf("chunked=%v", chunked), func(t *testing.T) {
			g := newInjectorRig(t, 1<<10, 10*time.Second)
			body := strings.Repeat("c", 1<<10+1)
			status, _, _ := g.post(t, body, chunked)
			if status != http.StatusUnauthorized {
				t.Fatalf("got %d, want the upstream's 401 passed back", status)
			}
			got := g.seen()
			if len(got) != 1 || got[0].body != body {
				t.Fatalf("%d attempts (first body intact: %v), want one with the whole body", len(got), len(got) > 0 && got[0].body == body)
			}
			// The refused token is dropped all the same: the next request has another.
			if inv := g.tokens.invalidated; len(inv) != 1 || inv[0] != 1 {
				t.Fatalf("invalidated %v, want generation 1", inv)
			}
			g.accept("tok-2")
			if status, _, _ := g.post(t, "small", chunked); status != http.StatusOK || len(g.seen()) != 2 {
				t.Fatalf("next request: %d after %d attempts, want 200 at once", status, len(g.seen()))
			}
		})
	}
}

func TestInjectorZeroReplayLimitReplaysOnlyBodiless(t *testing.T) {
	g := newInjectorRig(t, 0, 10*time.Second)
	g.accept("tok-2", "tok-3")
	if status, _, _ := g.post(t, "x", false); status != http.StatusUnauthorized {
		t.Fatalf("with a body and replay_max_bytes 0: %d, want the 401 back", status)
	}
	g.tokens.mu.Lock()
	g.tokens.gen = 1 // the next request meets a refused token again
	g.tokens.mu.Unlock()
	if status, _, _ := g.post(t, "", false); status != http.StatusOK {
		t.Fatalf("without a body: %d, want the replay's 200", status)
	}
}

func TestInjector401WithNothingNewerGoesBack(t *testing.T) {
	g := newInjectorRig(t, 1<<10, 10*time.Second)
	g.tokens.refuse = true // the reauth bound keeps the token
	status, _, h := g.post(t, "x", false)
	if status != http.StatusUnauthorized || h.Get("Tokenproxy-Error") != "" || len(g.seen()) != 1 {
		t.Fatalf("got %d %q after %d attempts, want the upstream's own 401 after one", status, h.Get("Tokenproxy-Error"), len(g.seen()))
	}
}

func TestInjectorNoTokenForTheReplaySaysWhy(t *testing.T) {
	g := newInjectorRig(t, 1<<10, 10*time.Second)
	g.tokens.fail = &broker.Error{Code: broker.CodeTokenEndpoint, Msg: "up: token endpoint refused the credentials: HTTP 401, invalid_client"}
	status, answer, h := g.post(t, "x", false)
	if status != http.StatusBadGateway || h.Get("Tokenproxy-Error") != CodeTokenEndpoint || !strings.Contains(answer, "invalid_client") {
		t.Fatalf("got %d %q %s, want 502 token_endpoint_error naming the refusal", status, h.Get("Tokenproxy-Error"), answer)
	}
}

func TestInjectorTimeoutBoundsTheHeadersOnly(t *testing.T) {
	g := newInjectorRig(t, 1<<10, 300*time.Millisecond)
	g.accept("tok-1")
	g.mu.Lock()
	g.delay = time.Second
	g.mu.Unlock()
	status, answer, h := g.post(t, "", false)
	if status != http.StatusGatewayTimeout || h.Get("Tokenproxy-Error") != CodeUpstreamTimeout {
		t.Fatalf("headers late: %d %q %s, want 504 upstream_timeout", status, h.Get("Tokenproxy-Error"), answer)
	}
	// Headers in time, then a body that takes longer than the timeout to
	// stream: it is not cut.
	g.mu.Lock()
	g.delay, g.trickle = 0, 200*time.Millisecond
	g.mu.Unlock()
	status, answer, _ = g.post(t, "", false)
	if status != http.StatusOK || answer != "part0;part1;part2;0" {
		t.Fatalf("slow body: %d %q, want the whole body", status, answer)
	}
}

func summarize(as []attempt) string {
	var b bytes.Buffer
	for _, a := range as {
		fmt.Fprintf(&b, "[%s, %d bytes] ", a.auth, len(a.body))
	}
	return b.String()
}
