package broker

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/tokenproxy/tokenproxy/internal/secrets"
	"github.com/tokenproxy/tokenproxy/internal/testlog"
)

// authorize is what an HGEM-like vendor's adapter builds: the token and an
// API key from the credentials.
func authorize(tok string, c secrets.Credentials) Header {
	return Header{"Authorization": {"Bearer " + tok}, "Hgem-Api-Key": {c.Get("client_secret")}}
}

// A token carries the headers built from it and the credentials it was
// minted from; rotated credentials give the next token their headers, and
// the token minted before keeps its own.
func TestTokenCarriesItsHeaders(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeFetcher{fn: lifetime(time.Hour, time.Second)}
		c := newCache(t, f, Options{Authorize: authorize})
		first, err := c.Token(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		want := http.Header{"Authorization": {"Bearer tok-1"}, "Hgem-Api-Key": {"secret-canary-5678"}}
		got := http.Header{"Hgem-Api-Key": {"caller"}, "X-Keep": {"yes"}}
		first.Header.SetOn(got)
		want.Set("X-Keep", "yes")
		if fmt.Sprint(http.Header(got)) != fmt.Sprint(want) {
			t.Errorf("headers set %v, want %v", got, want)
		}

		c.SetCredentials(secrets.NewCredentials(map[string]string{"client_secret": "rotated-secret-9999"}, "v2"))
		synctest.Wait()
		time.Sleep(2 * time.Second)
		second, err := c.Token(context.Background())
		if err != nil || second.Gen == first.Gen {
			t.Fatalf("after rotation: %v %v", second, err)
		}
		if v := http.Header(second.Header).Get("Hgem-Api-Key"); v != "rotated-secret-9999" {
			t.Errorf("after rotation the key header is %q", v)
		}
		if v := http.Header(first.Header).Get("Hgem-Api-Key"); v != "secret-canary-5678" {
			t.Errorf("the first token's header changed to %q", v)
		}
	})
}

// Neither a token nor its headers print a value, whatever the verb or
// logger, even at debug.
func TestTokenHeadersNeverPrinted(t *testing.T) {
	tok := Token{AccessToken: "tok-secret-1111", RefreshToken: "refresh-secret-2222", Gen: 3,
		Header: authorize("tok-secret-1111", testCreds)}
	var out strings.Builder
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q"} {
		fmt.Fprintf(&out, verb+"\n", tok)
		fmt.Fprintf(&out, verb+"\n", tok.Header)
	}
	b, _ := json.Marshal(tok)
	out.Write(b)
	b, _ = json.Marshal(tok.Header)
	out.Write(b)
	buf := &testlog.Buffer{}
	log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), buf, zapcore.DebugLevel))
	log.Debug("token", zap.Any("token", tok), zap.Any("header", tok.Header), zap.Stringer("s", tok))
	out.WriteString(buf.String())
	for _, secret := range []string{"tok-secret-1111", "refresh-secret-2222", "secret-canary-5678"} {
		if strings.Contains(out.String(), secret) {
			t.Errorf("a value was printed:\n%s", out.String())
		}
	}
	if !strings.Contains(out.String(), "Hgem-Api-Key") {
		t.Errorf("header names are not shown:\n%s", out.String())
	}
}

// SetOn shares a token's values: an append to a header it set copies the
// value, and leaves the token's backing array as it was, even when that
// array has room.
func TestSetOnAppendCopies(t *testing.T) {
	v := make([]string, 1, 4)
	v[0] = "Bearer tok"
	h := Header{"Authorization": v}
	dst := http.Header{}
	h.SetOn(dst)
	dst.Add("Authorization", "caller")
	if got := v[:2]; got[1] != "" || len(h["Authorization"]) != 1 {
		t.Errorf("an append to the header set wrote into the token's values: %q", got)
	}
	if got := dst.Values("Authorization"); len(got) != 2 || got[0] != "Bearer tok" {
		t.Errorf("dst has %q", got)
	}
}
