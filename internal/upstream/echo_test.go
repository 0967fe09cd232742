package upstream

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/internal/config"
	"github.com/tokenproxy/tokenproxy/internal/redact"
	"github.com/tokenproxy/tokenproxy/internal/vendor"
)

// echoed is every piece of a token request as it arrived, the way a vendor
// echoing it would repeat it: the body, the query, each header value, and
// what they decode to (form fields, Basic's base64 and what it holds).
func echoed(r *http.Request, body []byte) []string {
	items := []string{string(body), r.URL.RawQuery}
	for _, q := range []string{string(body), r.URL.RawQuery} {
		if f, err := url.ParseQuery(q); err == nil {
			for _, vs := range f {
				items = append(items, vs...)
			}
		}
	}
	var fields map[string]string
	if json.Unmarshal(body, &fields) == nil {
		for _, v := range fields {
			items = append(items, v)
		}
	}
	for name, vs := range r.Header {
		if name == "Accept-Encoding" || name == "User-Agent" || name == "Content-Length" {
			continue
		}
		for _, v := range vs {
			items = append(items, v)
			if b64, ok := strings.CutPrefix(v, "Basic "); ok {
				items = append(items, b64)
				if pair, err := base64.StdEncoding.DecodeString(b64); err == nil {
					items = append(items, string(pair))
				}
			}
		}
	}
	var out []string
	for _, it := range items {
		if len(it) >= redact.MinLen {
			out = append(out, it)
		}
	}
	return out
}

// A vendor that repeats what it was sent, in its refusal, in whatever
// wrapping (plain text, a JSON description, the error code itself, at the
// end of a long message that is clipped), shows no secret in the error:
// neither a credential, nor the refresh token, in any form it was sent or
// could be repeated in (raw, form-, query- or path-encoded, JSON-escaped,
// Basic's base64 of id:secret). Not even the first bytes of one.
func TestVendorEchoesAreScrubbed(t *testing.T) {
	const marks = `+/ =%é<&>"\`
	creds := func(keys ...string) map[string]string {
		m := map[string]string{}
		for i, k := range keys {
			m[k] = "Zq" + string(rune('a'+i)) + "7x9" + k + marks
		}
		return m
	}
	refresh := "Zrt7x9refresh" + marks
	wrap := map[string]func(item string) (string, string){
		"plain text": func(item string) (string, string) { return "text/plain", "unknown client " + item },
		"JSON description": func(item string) (string, string) {
			b, _ := json.Marshal(map[string]any{"success": false, "error": "invalid_client",
				"error_description": "unknown " + item, "description": "unknown " + item, "message": "unknown " + item})
			return "application/json", string(b)
		},
		"JSON error code": func(item string) (string, string) {
			b, _ := json.Marshal(map[string]any{"success": false, "error": item})
			return "application/json", string(b)
		},
		"clipped plain text": func(item string) (string, string) {
			return "text/plain", strings.Repeat("x", 190) + item
		},
	}
	cases := []struct {
		name    string
		up      config.Upstream
		creds   map[string]string
		refresh string
		status  int
	}{
		{"prominsight: JSON body", config.Upstream{Type: "prominsight"}, creds("client_id", "client_secret"), "", 401},
		{"inspera: query and a header", config.Upstream{Type: "inspera"}, creds("client_id", "api_key"), "", 401},
		{"hgem: form and a header", config.Upstream{Type: "hgem"}, creds("api_key", "client_id", "client_secret"), "", 401},
		{"prodoscore: the refresh grant", config.Upstream{Type: "prodoscore"}, creds("client_id", "username", "password"), refresh, 503},
		{"oauth2: Basic", config.Upstream{Type: "oauth2"}, creds("client_id", "client_secret"), "", 401},
		{"oauth2: body", config.Upstream{Type: "oauth2", OAuth2: &vendor.OAuth2{AuthStyle: vendor.AuthBody}}, creds("client_id", "client_secret"), "", 401},
		{"oauth2: refresh with Basic", config.Upstream{Type: "oauth2"}, creds("client_id", "client_secret"), refresh, 503},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var forms []string
			secrets := []string{c.refresh}
			for _, v := range c.creds {
				secrets = append(secrets, v)
			}
			if c.up.Type == "oauth2" {
				secrets = append(secrets, base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(c.creds["client_id"])+":"+url.QueryEscape(c.creds["client_secret"]))))
			}
			for _, s := range secrets {
				forms = append(forms, redact.Forms(s)...)
			}
			var item, wrapping string
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				ct, text := wrap[wrapping](item)
				w.Header().Set("Content-Type", ct)
				w.WriteHeader(c.status)
				io.WriteString(w, text)
			}))
			defer srv.Close()
			up := c.up
			up.TokenURL = srv.URL + "/token"
			a, err := New(up, TokenClient(srv.Client().Transport, 5*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			// One request, to learn what it carries.
			var sent []string
			probe := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				body, _ := io.ReadAll(r.Body)
				sent = echoed(r, body)
				w.WriteHeader(c.status)
			}))
			defer probe.Close()
			up.TokenURL = probe.URL + "/token"
			pa, _ := New(up, TokenClient(probe.Client().Transport, 5*time.Second))
			pa.Fetch(context.Background(), credsOf(c.creds), c.refresh)
			if len(sent) == 0 {
				t.Fatal("the request carried nothing to echo")
			}
			for _, it := range sent {
				for w := range wrap {
					item, wrapping = it, w
					_, err := a.Fetch(context.Background(), credsOf(c.creds), c.refresh)
					fe := fetchError(t, err)
					msg := fe.Error()
					for _, f := range forms {
						if p := f[:min(len(f), 8)]; strings.Contains(msg, p) {
							t.Errorf("%s echoing %q: the message shows %q:\n%s", w, it, p, msg)
						}
					}
				}
			}
		})
	}
}
