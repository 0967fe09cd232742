package broker

import (
	"encoding/base64"
	"encoding/json"
	"net/url"
	"strings"
	"testing"

	"github.com/tokenproxy/tokenproxy/internal/secrets"
)

// scrub hides every credential value in a message in the forms a vendor
// repeats it in: raw, form-encoded, JSON-escaped, in base64.
func TestScrubHidesEncodedCredentials(t *testing.T) {
	const secret = `s+e/c r=t%é<&>"-canary`
	creds := secrets.NewCredentials(map[string]string{"client_id": "id-canary-1234", "client_secret": secret, "short": "ab"}, "")
	js, _ := json.Marshal(secret)
	for _, echo := range []string{
		secret,
		url.QueryEscape(secret),
		url.PathEscape(secret),
		string(js[1 : len(js)-1]),
		base64.StdEncoding.EncodeToString([]byte(secret)),
		base64.RawURLEncoding.EncodeToString([]byte("id-canary-1234")),
	} {
		got := scrub("HTTP 401, invalid_client: ab sent "+echo+" and nothing else", creds)
		if want := "HTTP 401, invalid_client: ab sent REDACTED and nothing else"; got != want {
			t.Errorf("echo %q scrubbed to %q, want %q", echo, got, want)
		}
		if strings.Contains(got, "canary") {
			t.Errorf("scrubbed message shows a credential: %q", got)
		}
	}
}
