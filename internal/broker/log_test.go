package broker

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tokenproxy/tokenproxy/internal/secrets"
)

// At debug, the log tells what happened to a token and why: the first
// fetch, the refresh at the configured share of its life, the 401, the
// rotation, the backoff chosen after a refusal, and the grant each token
// came from; never a credential or token value.
func TestDebugLogTellsTheTokenStory(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		core, logs := observer.New(zapcore.DebugLevel)
		var refuse atomic.Bool
		var issued []string
		f := &fakeFetcher{}
		f.fn = func(ctx context.Context, n int) (Token, error) {
			if refuse.Load() {
				return Token{}, &FetchError{Status: 401, Code: "invalid_client", Description: "echoes secret-canary-5678"}
			}
			tok := Token{AccessToken: fmt.Sprintf("access-canary-%d", n), ExpiresIn: 100 * time.Second,
				RefreshToken: fmt.Sprintf("refresh-canary-%d", n), Grant: "password"}
			f.mu.Lock()
			if f.refresh[n-1] != "" {
				tok.Grant = "refresh_token" // as Prodoscore's adapter says
			}
			f.mu.Unlock()
			issued = append(issued, tok.AccessToken, tok.RefreshToken)
			return tok, nil
		}
		c := newCache(t, f, Options{Log: zap.New(core)})
		synctest.Wait()
		time.Sleep(80 * time.Second) // past the refresh at 67.5-75s
		synctest.Wait()
		tok, err := c.Token(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		c.Invalidate(tok.Gen)
		synctest.Wait()
		c.SetCredentials(secrets.NewCredentials(map[string]string{"client_id": "id-canary-1234", "client_secret": "secret-canary-9999"}, "v2"))
		synctest.Wait()
		refuse.Store(true)
		c.SetCredentials(secrets.NewCredentials(map[string]string{"client_id": "id-canary-1234", "client_secret": "secret-canary-5678"}, "v3"))
		synctest.Wait()

		var whys, grants []string
		backoff := ""
		for _, e := range logs.All() {
			m := e.ContextMap()
			switch e.Message {
			case "token fetch started":
				whys = append(whys, fmt.Sprint(m["why"]))
			case "token obtained":
				grants = append(grants, fmt.Sprint(m["grant"]))
			case "backoff chosen":
				backoff = fmt.Sprintf("%v %v %v", m["reason"], m["backoff"], m["base"])
			}
		}
		wantWhys := []string{"first token", "refresh at 75% of the token's lifetime", "the upstream answered 401",
			"credentials changed", "credentials changed"}
		if strings.Join(whys, "|") != strings.Join(wantWhys, "|") {
			t.Errorf("fetches started because\n %q\nwant\n %q", whys, wantWhys)
		}
		if got := strings.Join(grants, ","); got != "password,refresh_token,refresh_token,password" {
			t.Errorf("grants logged %s, want password, then refresh_token twice, then password (new credentials)", got)
		}
		if backoff != "refused refused "+DefaultRefused.Base.String() {
			t.Errorf("backoff logged %q, want the refused backoff of %s", backoff, DefaultRefused.Base)
		}
		for _, e := range logs.All() {
			line := e.Message + fmt.Sprint(e.ContextMap())
			for _, s := range append(issued, "id-canary-1234", "secret-canary-5678", "secret-canary-9999") {
				if strings.Contains(line, s) {
					t.Errorf("log line %q holds a secret", line)
				}
			}
		}
	})
}
