package vendorsim

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestStatusFaultDefaultBody(t *testing.T) {
	tests := []struct {
		kind   string
		status int
		want   string
	}{
		{Prominsight, 503, `{"success":false,"error":"Service Unavailable"}`},
		{Inspera, 409, `{"error":"Multiple tokens for user","description":"Please contact inspera support"}`},
		{Inspera, 500, `{"error":"Internal error authenticating user","description":"Please contact inspera support"}`},
		{HGEM, 503, `{"error":"temporarily_unavailable","error_description":"Service Unavailable"}`},
		{Prodoscore, 500, `{"error":"server_error","error_description":"Internal Server Error"}`},
	}
	for _, tt := range tests {
		sim, ts := start(t, tt.kind)
		sim.SetTokenFault(&Fault{Status: tt.status, Header: http.Header{"Retry-After": {"7"}}})
		a := do(t, nil, goodTokenReq(tt.kind, demoCreds(tt.kind)).build(t, ts.URL, sim.TokenPath()))
		if a.status != tt.status || !jsonEqual(a.body, tt.want) || a.header.Get("Retry-After") != "7" ||
			a.header.Get("Content-Type") != "application/json" {
			t.Errorf("%s %d: got %d %s %v\nwant %s", tt.kind, tt.status, a.status, a.body, a.header, tt.want)
		}
	}
}

func TestStatusFaultCustomBodyAndCount(t *testing.T) {
	sim, ts := start(t, HGEM)
	f := &Fault{Status: 502, Body: "<html>bad gateway</html>", ContentType: "text/html", Count: 2}
	sim.SetTokenFault(f)
	f.Count = 100 // the simulator keeps its own copy
	for i := range 3 {
		a := do(t, nil, goodTokenReq(HGEM, demoCreds(HGEM)).build(t, ts.URL, sim.TokenPath()))
		if i < 2 && (a.status != 502 || string(a.body) != f.Body || a.header.Get("Content-Type") != "text/html") {
			t.Errorf("request %d: %d %q", i, a.status, a.body)
		}
		if i == 2 && a.status != 200 {
			t.Errorf("request after the count ran out: %d", a.status)
		}
	}
	var statuses []int
	for _, r := range sim.TokenRequests() {
		statuses = append(statuses, r.Status)
	}
	if !slices.Equal(statuses, []int{502, 502, 200}) || sim.TokenCalls() != 3 {
		t.Errorf("statuses %v, calls %d", statuses, sim.TokenCalls())
	}
}

func TestAPIFault(t *testing.T) {
	sim, ts := start(t, Prodoscore)
	tok, _ := fetchToken(t, sim, ts.URL)
	sim.SetAPIFault(&Fault{Status: 500, Count: 1})

	// The fault comes before the token check, and leaves the token endpoint alone.
	if a := do(t, nil, apiReq(t, Prodoscore, "GET", ts.URL+"/api/v1/scores", "", nil)); a.status != 500 {
		t.Errorf("faulted API call: %d, want 500", a.status)
	}
	if a := do(t, nil, apiReq(t, Prodoscore, "GET", ts.URL+"/api/v1/scores", tok, nil)); a.status != 200 {
		t.Errorf("after the count ran out: %d", a.status)
	}
	sim.SetAPIFault(&Fault{Status: 429})
	fetchToken(t, sim, ts.URL)
	sim.SetAPIFault(nil)
	if a := do(t, nil, apiReq(t, Prodoscore, "GET", ts.URL+"/api/v1/scores", tok, nil)); a.status != 200 {
		t.Errorf("after clearing: %d", a.status)
	}
}

func TestMalformedFault(t *testing.T) {
	for _, kind := range kinds {
		sim, ts := start(t, kind)
		sim.SetTokenFault(&Fault{Malformed: true})
		a := do(t, nil, goodTokenReq(kind, demoCreds(kind)).build(t, ts.URL, sim.TokenPath()))
		if a.status != 200 || json.Valid(a.body) {
			t.Errorf("%s: %d %q, want 200 and invalid JSON", kind, a.status, a.body)
		}
	}
}

func TestTruncateFault(t *testing.T) {
	sim, ts := start(t, Inspera)
	sim.SetTokenFault(&Fault{Truncate: true})
	resp, err := http.DefaultClient.Do(goodTokenReq(Inspera, demoCreds(Inspera)).build(t, ts.URL, sim.TokenPath()))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if _, err := io.ReadAll(resp.Body); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("reading a truncated answer: %v, want unexpected EOF", err)
	}
	if rs := sim.TokenRequests(); len(rs) != 1 || rs[0].Status != 200 {
		t.Errorf("TokenRequests = %+v", rs)
	}
}

func TestDelayFault(t *testing.T) {
	sim, ts := start(t, Prominsight)

	sim.SetTokenFault(&Fault{Delay: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	req := goodTokenReq(Prominsight, demoCreds(Prominsight)).build(t, ts.URL, sim.TokenPath()).WithContext(ctx)
	if _, err := http.DefaultClient.Do(req); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("hour-long delay under a 50ms deadline: %v", err)
	}

	// A delay alone ends in the normal answer.
	sim.SetTokenFault(&Fault{Delay: time.Millisecond})
	if a := do(t, nil, goodTokenReq(Prominsight, demoCreds(Prominsight)).build(t, ts.URL, sim.TokenPath())); a.status != 200 {
		t.Errorf("after a short delay: %d %s", a.status, a.body)
	}
}

// startHanging sends a token request into a Hang fault and returns once it hangs.
func startHanging(t *testing.T, kind string, ctx context.Context) (*Server, string, <-chan answerOrErr) {
	t.Helper()
	sim, ts := start(t, kind)
	hung := make(chan struct{}, 1)
	sim.testHookHang = func() { hung <- struct{}{} }
	sim.SetTokenFault(&Fault{Hang: true, Count: 1})
	req := goodTokenReq(kind, demoCreds(kind)).build(t, ts.URL, sim.TokenPath()).WithContext(ctx)
	done := make(chan answerOrErr, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			done <- answerOrErr{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		done <- answerOrErr{answer{resp.StatusCode, resp.Header, b}, err}
	}()
	<-hung
	return sim, ts.URL, done
}

type answerOrErr struct {
	answer
	err error
}

func TestHangReleasedByClear(t *testing.T) {
	sim, _, done := startHanging(t, HGEM, context.Background())
	sim.SetTokenFault(nil)
	if r := <-done; r.err != nil || r.status != 200 {
		t.Errorf("released hang: %d %v, want the normal 200", r.status, r.err)
	}
}

func TestHangReleasedByClose(t *testing.T) {
	sim, _, done := startHanging(t, Prodoscore, context.Background())
	sim.Close()
	r := <-done
	if r.err != nil || r.status != 503 {
		t.Errorf("hang after Close: %d %v, want 503", r.status, r.err)
	}
}

func TestHangEndsWithClientContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	_, _, done := startHanging(t, Inspera, ctx)
	cancel()
	if r := <-done; !errors.Is(r.err, context.Canceled) {
		t.Errorf("cancelled hang: %v", r.err)
	}
	// The test's cleanup closes the httptest server, which waits for the handler to end.
}

func TestHangRecordedWhileHanging(t *testing.T) {
	sim, base, done := startHanging(t, Prominsight, context.Background())
	if sim.TokenCalls() != 1 {
		t.Errorf("TokenCalls = %d while hanging", sim.TokenCalls())
	}
	if seen := sim.TokenRequestsSeen(); len(seen) != 1 || len(seen[0].Body) == 0 || seen[0].Status != 0 {
		t.Errorf("hanging request recorded as %+v", seen)
	}
	// Count: 1 means the next request passes while the first still hangs.
	a := do(t, nil, goodTokenReq(Prominsight, demoCreds(Prominsight)).build(t, base, sim.TokenPath()))
	if a.status != 200 {
		t.Errorf("second request: %d", a.status)
	}
	sim.SetTokenFault(nil)
	if r := <-done; r.status != 200 {
		t.Errorf("released: %d %v", r.status, r.err)
	}
}

// With recording off, requests are counted but not kept.
func TestRecordingOff(t *testing.T) {
	s, err := New(HGEM, map[string]string{"api_key": "k", "client_id": "i", "client_secret": "c"})
	if err != nil {
		t.Fatal(err)
	}
	s.SetRecording(false)
	srv := httptest.NewServer(s)
	defer srv.Close()
	for _, path := range []string{s.TokenPath(), "/api/visits", "/api/visits"} {
		resp, err := http.Post(srv.URL+path, "application/x-www-form-urlencoded", strings.NewReader("grant_type=client_credentials"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	if s.TokenCalls() != 1 || s.APICalls() != 2 || len(s.TokenRequestsSeen()) != 0 || len(s.APIRequests()) != 0 {
		t.Fatalf("counts %d/%d, records %d/%d", s.TokenCalls(), s.APICalls(), len(s.TokenRequestsSeen()), len(s.APIRequests()))
	}
}
