package upstream

import (
	"encoding/json"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/internal/broker"
)

// The token parsers read whatever a vendor (or whatever sits in front of it)
// answers. Whatever that is, they must not panic, and a token they accept
// must be usable: a non-empty access token and a lifetime that is not negative.

// checkParsed holds every parser to the same contract.
func checkParsed(t *testing.T, status int, tok broker.Token, err error) {
	t.Helper()
	if err == nil {
		if status/100 != 2 {
			t.Fatalf("status %d accepted as a token", status)
		}
		if tok.AccessToken == "" {
			t.Fatalf("accepted without an access token")
		}
		if tok.ExpiresIn < 0 {
			t.Fatalf("accepted with a negative lifetime %v", tok.ExpiresIn)
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
	if fe.Malformed && status/100 != 2 {
		t.Fatalf("a %d answer reported as a malformed token", status)
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
		tok, err := parseProminsight(fuzzResponse(status, ""), body)
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
		tok, err := parseInspera(fuzzResponse(status, "7"), body)
		checkParsed(t, status, tok, err)
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
