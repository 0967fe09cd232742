package vendorsim

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestAPIRefusesBadTokens(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			sim, ts := start(t, kind)
			clock := newFakeClock()
			sim.SetClock(clock.Now)
			url := ts.URL + apiPath[kind]
			tok, _ := fetchToken(t, sim, ts.URL)

			if a := do(t, nil, apiReq(t, kind, "GET", url, tok, nil)); a.status != 200 {
				t.Fatalf("valid token: %d %s", a.status, a.body)
			}
			lower := apiReq(t, kind, "GET", url, "", nil)
			lower.Header.Set("Authorization", "bearer "+tok)
			if a := do(t, nil, lower); a.status != 200 {
				t.Errorf("lower-case scheme: %d", a.status)
			}

			twice := apiReq(t, kind, "GET", url, tok, nil)
			twice.Header.Add("Authorization", "Bearer "+tok)
			basic := apiReq(t, kind, "GET", url, "", nil)
			basic.Header.Set("Authorization", "Basic "+tok)
			cases := map[string]*http.Request{
				"missing":       apiReq(t, kind, "GET", url, "", nil),
				"unknown":       apiReq(t, kind, "GET", url, "forged", nil),
				"basic scheme":  basic,
				"header twice":  twice,
				"unknown route": apiReq(t, kind, "GET", ts.URL+"/nowhere", "", nil),
			}
			if kind == HGEM {
				noKey := apiReq(t, kind, "GET", url, tok, nil)
				noKey.Header.Del("hgem-api-key")
				wrongKey := apiReq(t, kind, "GET", url, tok, nil)
				wrongKey.Header.Set("hgem-api-key", "nope")
				cases["missing API key"], cases["wrong API key"] = noKey, wrongKey
			}
			for name, req := range cases {
				if a := do(t, nil, req); a.status != 401 {
					t.Errorf("%s: %d, want 401", name, a.status)
				}
			}

			clock.Add(10 * time.Hour) // past every vendor's default lifetime
			if a := do(t, nil, apiReq(t, kind, "GET", url, tok, nil)); a.status != 401 {
				t.Errorf("expired: %d, want 401", a.status)
			}

			sim.SetTokenLifetime(time.Minute)
			tok2, _ := fetchToken(t, sim, ts.URL)
			clock.Add(59 * time.Second)
			if a := do(t, nil, apiReq(t, kind, "GET", url, tok2, nil)); a.status != 200 {
				t.Errorf("before its 1m lifetime: %d", a.status)
			}
			sim.Revoke(tok2)
			if a := do(t, nil, apiReq(t, kind, "GET", url, tok2, nil)); a.status != 401 {
				t.Errorf("revoked: %d, want 401", a.status)
			}

			tok3, _ := fetchToken(t, sim, ts.URL)
			sim.RevokeAll()
			if a := do(t, nil, apiReq(t, kind, "GET", url, tok3, nil)); a.status != 401 {
				t.Errorf("after RevokeAll: %d, want 401", a.status)
			}
		})
	}
}

func TestAPIUnauthorizedShape(t *testing.T) {
	for _, tt := range []struct {
		kind string
		want string
	}{
		{Prominsight, `{"success":false,"error":"Token expired"}`},
		{Inspera, `{"error":"invalid_token","description":"Token expired"}`},
		{HGEM, `{"error":"invalid_token","error_description":"Token expired"}`},
		{Prodoscore, `{"error":"invalid_token","error_description":"Token expired"}`},
	} {
		sim, ts := start(t, tt.kind)
		clock := newFakeClock()
		sim.SetClock(clock.Now)
		tok, _ := fetchToken(t, sim, ts.URL)
		clock.Add(24 * time.Hour)
		a := do(t, nil, apiReq(t, tt.kind, "GET", ts.URL+apiPath[tt.kind], tok, nil))
		if a.status != 401 || !jsonEqual(a.body, tt.want) || a.header.Get("WWW-Authenticate") == "" {
			t.Errorf("%s: %d %s %v, want 401 %s", tt.kind, a.status, a.body, a.header, tt.want)
		}
	}
}

func TestProminsightAPI(t *testing.T) {
	sim, ts := start(t, Prominsight)
	tok, _ := fetchToken(t, sim, ts.URL)
	body := `{"test_code":"T-1","limit":2}`
	a := do(t, nil, apiReq(t, Prominsight, "POST", ts.URL+"/api/v1/tests/sessions", tok, strings.NewReader(body)))
	var rows []map[string]any
	if err := json.Unmarshal(a.body, &rows); a.status != 200 || err != nil || len(rows) != 2 {
		t.Fatalf("sessions: %d %s", a.status, a.body)
	}
	for _, k := range []string{"test_session_id", "test_code", "client_code", "contract"} {
		if _, ok := rows[0][k]; !ok {
			t.Errorf("session row without %s: %v", k, rows[0])
		}
	}
	if rows[0]["test_code"] != "T-1" {
		t.Errorf("test_code = %v", rows[0]["test_code"])
	}

	a = do(t, nil, apiReq(t, Prominsight, "POST", ts.URL+"/api/v1/tests/sessions", tok, strings.NewReader("test_code=T-1")))
	if a.status != 400 {
		t.Errorf("non-JSON sessions query: %d", a.status)
	}
	for id, want := range map[string]int{"1": 200, "3": 200, "4": 404, "abc": 404} {
		a := do(t, nil, apiReq(t, Prominsight, "GET", ts.URL+"/api/v1/tests/sessions/"+id, tok, nil))
		if a.status != want {
			t.Errorf("session %s: %d, want %d", id, a.status, want)
		}
		if want == 404 && !jsonEqual(a.body, `{"success":false,"error":"No session details found"}`) {
			t.Errorf("session %s: body %s", id, a.body)
		}
	}
	if a := do(t, nil, apiReq(t, Prominsight, "DELETE", ts.URL+"/api/v1/tests/sessions/1", tok, nil)); a.status != 405 {
		t.Errorf("DELETE: %d, want 405", a.status)
	}
}

func TestInsperaExport(t *testing.T) {
	sim, ts := start(t, Inspera)
	sim.SetDownloadBaseURL("https://bucket.example")
	tok, _ := fetchToken(t, sim, ts.URL)

	a := do(t, nil, apiReq(t, Inspera, "GET", ts.URL+"/api/v1/test/12312312/results/export", tok, nil))
	callback, _ := a.object(t)["callbackUrl"].(string)
	if a.status != 200 || !strings.HasPrefix(callback, ts.URL+"/api/v1/export/") {
		t.Fatalf("export: %d %s", a.status, a.body)
	}
	a = do(t, nil, apiReq(t, Inspera, "GET", callback, tok, nil))
	m := a.object(t)
	if a.status != 200 || m["status"] != "done" || !strings.HasPrefix(m["url"].(string), "https://bucket.example/exports/") ||
		!strings.Contains(m["url"].(string), ".json?sig=") {
		t.Errorf("export status: %d %s", a.status, a.body)
	}
	if a := do(t, nil, apiReq(t, Inspera, "GET", ts.URL+"/api/v1/export/nojob", tok, nil)); a.status != 404 {
		t.Errorf("unknown export: %d", a.status)
	}
	a = do(t, nil, apiReq(t, Inspera, "GET", ts.URL+"/api/v1/test/7", tok, nil))
	if a.status != 200 || a.object(t)["testId"] != "7" {
		t.Errorf("test metadata: %d %s", a.status, a.body)
	}
}

func TestHGEMAndProdoscoreAPI(t *testing.T) {
	for _, tt := range []struct {
		kind, path string
		status     int
	}{
		{HGEM, "/api/visits", 200},
		{HGEM, "/api/visits/1001", 200},
		{HGEM, "/api/visits/9999", 404},
		{Prodoscore, "/api/v1/employees", 200},
		{Prodoscore, "/api/v1/scores", 200},
	} {
		sim, ts := start(t, tt.kind)
		tok, _ := fetchToken(t, sim, ts.URL)
		a := do(t, nil, apiReq(t, tt.kind, "GET", ts.URL+tt.path, tok, nil))
		if a.status != tt.status || !json.Valid(a.body) {
			t.Errorf("%s %s: %d %s", tt.kind, tt.path, a.status, a.body)
		}
	}
}

func TestHandleAPIAndRecording(t *testing.T) {
	sim, ts := start(t, Prodoscore)
	sim.HandleAPI("POST /api/echo", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Read all first: HTTP/1 may close the body once the answer starts.
		b, _ := io.ReadAll(r.Body)
		w.WriteHeader(http.StatusAccepted)
		w.Write(b)
	}))
	tok, _ := fetchToken(t, sim, ts.URL)

	if a := do(t, nil, apiReq(t, Prodoscore, "POST", ts.URL+"/api/echo", "", strings.NewReader("x"))); a.status != 401 {
		t.Errorf("extra route without a token: %d, want 401", a.status)
	}

	big := bytes.Repeat([]byte("0123456789abcdef"), 100<<10/16)
	req := apiReq(t, Prodoscore, "POST", ts.URL+"/api/echo?a=1&b=%20", tok, bytes.NewReader(big))
	req.Header.Set("X-Test", "yes")
	a := do(t, nil, req)
	if a.status != http.StatusAccepted || !bytes.Equal(a.body, big) {
		t.Fatalf("echo: %d, %d bytes back of %d", a.status, len(a.body), len(big))
	}

	// A streamed body of unknown length is recorded as the handler reads it.
	pr, pw := io.Pipe()
	go func() {
		pw.Write([]byte("streamed"))
		pw.Close()
	}()
	a = do(t, nil, apiReq(t, Prodoscore, "POST", ts.URL+"/api/echo", tok, pr))
	if string(a.body) != "streamed" {
		t.Errorf("streamed echo: %q", a.body)
	}

	got := sim.APIRequests()
	if len(got) != 3 || sim.APICalls() != 3 {
		t.Fatalf("%d API requests recorded, APICalls %d", len(got), sim.APICalls())
	}
	r := got[1]
	if r.Method != "POST" || r.Path != "/api/echo" || r.RawQuery != "a=1&b=%20" || r.Header.Get("X-Test") != "yes" ||
		r.Status != http.StatusAccepted || !bytes.Equal(r.Body, big[:64<<10]) || r.Host != strings.TrimPrefix(ts.URL, "http://") {
		t.Errorf("recorded %s %s?%s status %d, %d body bytes", r.Method, r.Path, r.RawQuery, r.Status, len(r.Body))
	}
	if got[0].Status != 401 || string(got[2].Body) != "streamed" {
		t.Errorf("recorded statuses/bodies: %d %q", got[0].Status, got[2].Body)
	}
	got[1].Header.Set("X-Test", "changed")
	if sim.APIRequests()[1].Header.Get("X-Test") != "yes" {
		t.Error("APIRequests shares its headers with the caller")
	}
}

func TestConcurrentUse(t *testing.T) {
	for _, kind := range kinds {
		sim, ts := start(t, kind)
		var wg sync.WaitGroup
		for range 8 {
			req := goodTokenReq(kind, demoCreds(kind)).build(t, ts.URL, sim.TokenPath())
			wg.Go(func() {
				// No t.Fatal here: it must not be called off the test's goroutine.
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				resp.Body.Close()
				resp, err = http.Get(ts.URL + apiPath[kind])
				if err != nil {
					t.Error(err)
					return
				}
				resp.Body.Close()
				sim.Tokens()
				sim.APIRequests()
				sim.TokenRequests()
			})
		}
		wg.Go(func() { sim.SetCredentials(demoCreds(kind)) })
		wg.Go(func() { sim.SetTokenFault(nil) })
		wg.Wait()
		if sim.TokenCalls() != 8 || sim.APICalls() != 8 {
			t.Errorf("%s: %d token calls, %d API calls, want 8 each", kind, sim.TokenCalls(), sim.APICalls())
		}
	}
}

func TestHandleAPIStreaming(t *testing.T) {
	sim, ts := start(t, Inspera)
	next := make(chan struct{})
	sim.HandleAPI("GET /api/stream", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "first\n")
		w.(http.Flusher).Flush() // streaming handlers assert Flusher; the recorder must allow it
		<-next
		io.WriteString(w, "second\n")
	}))
	tok, _ := fetchToken(t, sim, ts.URL)
	resp, err := http.DefaultClient.Do(apiReq(t, Inspera, "GET", ts.URL+"/api/stream", tok, nil))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	buf := make([]byte, len("first\n"))
	if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != "first\n" {
		t.Fatalf("first chunk before the second was written: %q %v", buf, err)
	}
	close(next)
	rest, err := io.ReadAll(resp.Body)
	if err != nil || string(rest) != "second\n" {
		t.Errorf("rest: %q %v", rest, err)
	}
}
