package upstream

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tokenproxy/tokenproxy/internal/broker"
	"github.com/tokenproxy/tokenproxy/internal/vendor"
)

// The token reader reads whatever a vendor (or whatever sits in front of it)
// answers. Whatever that is, they must not panic, and a token they accept
// must be usable: a non-empty access token and a lifetime that is not negative.

// checkParsed holds every vendor's answers to the same contract.
func checkParsed(t *testing.T, status int, tok broker.Token, err error) {
	t.Helper()
	if err == nil {
		if status/100 != 2 {
			t.Fatalf("status %d accepted as a token", status)
		}
		if tok.AccessToken == "" {
			t.Fatalf("accepted without an access token")
		}
		if tok.ExpiresIn < 0 || tok.RefreshExpiresIn < 0 {
			t.Fatalf("accepted with a negative lifetime %v / %v", tok.ExpiresIn, tok.RefreshExpiresIn)
		}
		return
	}
	var fe *broker.FetchError
	if !errors.As(err, &fe) {
		t.Fatalf("error %v (%T) is not a *broker.FetchError", err, err)
	}
	if fe.Status != status {
		t.Fatalf("FetchError.Status %d, answer was %d", fe.Status, status)
	}
	if fe.Malformed != (status/100 == 3) && status/100 != 2 {
		t.Fatalf("a %d answer reported with Malformed %v: only 2xx answers without a token and redirects are", status, fe.Malformed)
	}
	if tok.AccessToken != "" {
		t.Fatalf("an error came with an access token")
	}
	// Vendor text is clipped before it reaches errors and logs.
	if len(fe.Code) > 203 || len(fe.Description) > 203 {
		t.Fatalf("vendor text not clipped: %d and %d bytes", len(fe.Code), len(fe.Description))
	}
	_ = err.Error()
}

func fuzzResponse(status int, retryAfter string) *http.Response {
	h := http.Header{}
	if retryAfter != "" {
		h.Set("Retry-After", retryAfter)
	}
	return &http.Response{StatusCode: status, Header: h}
}

func FuzzParseProminsight(f *testing.F) {
	f.Add(200, []byte(`{"success": true, "data": {"accessToken": "eyJhbGciOi.x.y", "tokenType": "Bearer", "expiresIn": 3600}}`))
	f.Add(200, []byte(`{"success": true, "data": {"accessToken": "eyJ", "tokenType": "Bearer", "expiresIn": "3600"}}`))
	f.Add(200, []byte(`{"success": true, "data": {"accessToken": "eyJ", "expiresIn": -1}}`))
	f.Add(200, []byte(`{"success": true, "data": {"accessToken": "eyJ", "expiresIn": 1e300}}`))
	f.Add(200, []byte(`{"success": true, "data": {"accessToken": "eyJ", "expiresIn": "NaN"}}`))
	f.Add(200, []byte(`{"success": true, "data": {"accessToken": ""}}`))
	f.Add(200, []byte(`{"success": false}`))
	f.Add(200, []byte(`{"success": false, "error": {"message": "locked"}}`))
	f.Add(401, []byte(`{"success": false, "error": "Invalid credentials"}`))
	f.Add(400, []byte(`{"success": false, "error": "scope is required"}`))
	f.Add(503, []byte(`<html>Service Unavailable</html>`))
	f.Add(200, []byte(`{"access_token": "half a token`))
	f.Add(204, []byte(``))
	f.Add(-1, []byte(`null`))
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		tok, err := readAnswer(prominsightAnswer, fuzzResponse(status, ""), body, nil)
		checkParsed(t, status, tok, err)
	})
}

func FuzzParseInspera(f *testing.F) {
	f.Add(200, []byte(`{"access_token": "ins_abc", "expires_in": 3600}`))
	f.Add(200, []byte(`{"access_token": "ins_abc", "expires_in": "3600"}`))
	f.Add(200, []byte(`{"access_token": "ins_abc", "expires_in": -3600}`))
	f.Add(200, []byte(`{"access_token": "ins_abc", "expires_in": 9.3e9}`))
	f.Add(200, []byte(`{"access_token": "ins_abc", "expires_in": "-Inf"}`))
	f.Add(200, []byte(`{"access_token": "ins_abc", "expires_in": null}`))
	f.Add(200, []byte(`{"access_token": "", "expires_in": 3600}`))
	f.Add(201, []byte(`{"access_token": "ins_abc"}`))
	f.Add(400, []byte(`{"error": {"error": "invalid_request", "message": "grant_type missing"}}`))
	f.Add(401, []byte(`{"error": "invalid_grant"}`))
	f.Add(409, []byte(`{"error": "Multiple tokens for user", "description": "Please contact inspera support"}`))
	f.Add(500, []byte(`{"error": "Internal error authenticating user", "description": "Please contact inspera support"}`))
	f.Add(501, []byte(`not implemented`))
	f.Add(200, []byte(`{"access_token": "half a token`))
	f.Add(307, []byte(``))
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		tok, err := readAnswer(insperaAnswer, fuzzResponse(status, "7"), body, nil)
		checkParsed(t, status, tok, err)
	})
}

// FuzzReadAnswer runs the four vendors' answers through the one reader,
// under any Content-Type: the contract above holds, and a byte-order mark
// or a label changes nothing (shared/VENDORS.md, "Token answers as they
// really come").
func FuzzReadAnswer(f *testing.F) {
	for _, s := range []struct {
		vendor uint8
		status int
		label  string
		body   string
	}{
		{0, 200, "text/plain", `{"success": true, "data": {"accessToken": "eyJ", "tokenType": "BEARER", "expiresIn": 3.6e3}}`},
		{0, 200, "", `{"success": false, "error": {"message": "locked"}}`},
		{1, 200, "text/html", `{"access_token": "ins", "expires_in": "3599.5"}`},
		{1, 409, "text/plain", `{"error": "Multiple tokens for user", "description": "Please contact inspera support"}`},
		{2, 200, "application/json; charset=utf-8", `{"access_token": "h", "token_type": "bearer", "expires_in": "3600"}`},
		{2, 200, "text/plain", `{"access_token": "h", "token_type": "mac"}`},
		{2, 400, "text/plain", `{"error": "invalid_scope", "error_description": "scope must include hgem-results-api"}`},
		{3, 200, "", `{"access_token": "p", "refresh_token": "r", "expires_in": 36E3, "refresh_expires_in": "6.048e5"}`},
		{3, 200, "text/plain", `{"error": "invalid_grant"}`},
		{3, 401, "text/html", `<html>401</html>`},
		{3, 200, "application/x-www-form-urlencoded", `access_token=p&expires_in=3600`},
		{3, 200, "", "\uFEFF{\"access_token\": \"p\"}"},
	} {
		f.Add(s.vendor, s.status, s.label, []byte(s.body))
	}
	answers := []vendor.Answer{prominsightAnswer, insperaAnswer, hgemAnswer, prodoscoreAnswer}
	f.Fuzz(func(t *testing.T, vendor uint8, status int, label string, body []byte) {
		a := answers[int(vendor)%len(answers)]
		r := fuzzResponse(status, "")
		r.Header.Set("Content-Type", label)
		tok, err := readAnswer(a, r, body, nil)
		checkParsed(t, status, tok, err)
		if bytes.HasPrefix(body, []byte("\uFEFF")) {
			return
		}
		tok2, err2 := readAnswer(a, fuzzResponse(status, ""), append([]byte("\uFEFF"), body...), nil)
		if diff := cmp.Diff(outcome(tok, err), outcome(tok2, err2)); diff != "" {
			t.Fatalf("labelled %q vs unlabelled with a BOM: (-first +second)\n%s", label, diff)
		}
	})
}

// FuzzSecondsJSON: a lifetime, as a number or a string, never decodes to a
// negative duration, and one that is a plain whole number of seconds decodes
// to exactly that, whichever of the two forms it takes.
func FuzzSecondsJSON(f *testing.F) {
	for _, s := range []string{
		`3600`, `"3600"`, `36000`, `604800`, `0`, `""`, `null`, `"null"`, `59.9`, `"1e3"`, `1e3`,
		`-1`, `"-3600"`, `1e300`, `9223372037`, `"NaN"`, `"Inf"`, `"0x10"`, `true`, `{}`, `[3600]`, `"soon"`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var s seconds
		if err := json.Unmarshal(data, &s); err != nil {
			return
		}
		d := s.duration()
		if d < 0 {
			t.Fatalf("%s decodes to a negative lifetime %v", data, d)
		}
		// json.Number takes a number or a string holding one.
		var n json.Number
		if json.Unmarshal(data, &n) != nil {
			return
		}
		i, err := n.Int64()
		if err != nil {
			return
		}
		var want time.Duration
		switch {
		case i > int64(maxLifetime/time.Second):
			want = maxLifetime // capped, not wrapped
		case i > 0:
			want = time.Duration(i) * time.Second
		}
		if d != want {
			t.Fatalf("%s decodes to %v, want %v", data, d, want)
		}
	})
}
