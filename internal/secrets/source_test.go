package secrets

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tokenproxy/tokenproxy/internal/config"
	"github.com/tokenproxy/tokenproxy/internal/vendor"
)

const canaryValue = "CANARY-value-7f3a"

func TestCredentialsNeverPrintValues(t *testing.T) {
	c := NewCredentials(map[string]string{"client_id": canaryValue, "client_secret": canaryValue}, "")
	j, _ := json.Marshal(c)
	for _, s := range []string{fmt.Sprint(c), fmt.Sprintf("%v %+v %#v %s %q", c, c, c, c, c), string(j), c.String()} {
		if strings.Contains(s, canaryValue) || !strings.Contains(s, "client_secret") {
			t.Fatalf("printed %q", s)
		}
	}
	if !strings.HasPrefix(c.Version(), "hmac-sha256:") || c.Version() != NewCredentials(map[string]string{"client_secret": canaryValue, "client_id": canaryValue}, "").Version() {
		t.Fatalf("fingerprint %q is not stable", c.Version())
	}
	if c.Version() == NewCredentials(map[string]string{"client_id": canaryValue, "client_secret": "other"}, "").Version() {
		t.Fatal("a changed value kept its fingerprint")
	}
}

// A source without versions shows a fingerprint that no one can check a
// guessed credential against (it is keyed with this process's random
// key), while replicas compare one that is the same wherever the content
// is. A versioned source shows and compares its version as it is.
func TestVersionShownAndCompared(t *testing.T) {
	weak := map[string]string{"api_key": "password1"}
	c := NewCredentials(weak, "")
	guess := Fingerprint(map[string]string{"api_key": "password1"}) // what anyone can compute
	if c.FleetVersion() != guess {
		t.Errorf("the fleet version %q is not the content's fingerprint %q: replicas with the same content would disagree", c.FleetVersion(), guess)
	}
	shown := c.Version()
	if !strings.HasPrefix(shown, "hmac-sha256:") || strings.Contains(shown, strings.TrimPrefix(guess, "sha256:")) {
		t.Errorf("shown version %q can be checked against a guess (%s)", shown, guess)
	}
	for _, s := range []string{fmt.Sprint(c), c.String()} {
		if strings.Contains(s, strings.TrimPrefix(guess, "sha256:")) {
			t.Errorf("%q shows the fleet version", s)
		}
	}
	// Another process (another key) shows another fingerprint of the same
	// content, and compares the same fleet version.
	defer func(k []byte) { processKey = k }(processKey)
	processKey = []byte("another process's key, 32 bytes")
	other := NewCredentials(weak, "")
	if other.Version() == shown || other.FleetVersion() != c.FleetVersion() {
		t.Errorf("another process: shown %q (this one %q), fleet %q (this one %q)", other.Version(), shown, other.FleetVersion(), c.FleetVersion())
	}
	if v := NewCredentials(weak, "7"); v.Version() != "7" || v.FleetVersion() != "7" {
		t.Errorf("a KV version: shown %q, fleet %q; want 7 for both", v.Version(), v.FleetVersion())
	}
}

func TestCheck(t *testing.T) {
	cases := []struct {
		values map[string]string
		want   string
	}{
		{map[string]string{"api_key": "k", "client_id": "i", "client_secret": "s", "extra": "x"}, ""},
		{map[string]string{"client_id": "i"}, "missing key api_key, client_secret"},
		{map[string]string{"api_key": "", "client_id": "i", "client_secret": "s"}, "missing key api_key"},
		{map[string]string{"api_key": canaryValue + "\r\nX: y", "client_id": "i", "client_secret": "s"}, "key api_key holds a CR, LF or NUL"},
		{map[string]string{"api_key": "k", "client_id": "i\x00", "client_secret": "s"}, "key client_id holds"},
		// A file's last newline, as vault kv put key=@file stores it: the
		// error says so, and how to store the value without it.
		{map[string]string{"api_key": "k", "client_id": "i", "client_secret": canaryValue + "\n"}, "key client_secret holds a CR, LF or NUL character: it ends with a line break"},
		{map[string]string{"api_key": "k", "client_id": "i", "client_secret": canaryValue + "\r\n"}, "tr -d '\\r\\n'"},
		// A line break inside is not that.
		{map[string]string{"api_key": "k", "client_id": "i", "client_secret": canaryValue + "\nX\n"}, "key client_secret holds a CR, LF or NUL character"},
	}
	for _, c := range cases {
		err := Check(keysOf("hgem"), NewCredentials(c.values, ""))
		if (err == nil) != (c.want == "") || (err != nil && (!strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), canaryValue))) {
			t.Errorf("%v: got %v, want %q", c.values, err, c.want)
		}
	}
	if err := Check(keysOf("hgem"), NewCredentials(map[string]string{"api_key": "k\nX: y\n", "client_id": "i", "client_secret": "s"}, "")); err == nil || strings.Contains(err.Error(), "ends with") {
		t.Errorf("a line break inside a value: %v, want it not blamed on the end", err)
	}
}

func TestFileSource(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(text), 0o600)
		return p
	}
	for _, text := range []string{`{"client_id": "a", "client_secret": "b"}`, "client_id: a\nclient_secret: b\n"} {
		c, err := File(write("c", text)).Read(context.Background())
		if err != nil || c.Get("client_id") != "a" || c.Get("client_secret") != "b" {
			t.Fatalf("%q: %v %v", text, c, err)
		}
	}
	c, err := File(write("n.yaml", "client_id: 12345\n")).Read(context.Background())
	if err != nil || c.Get("client_id") != "12345" {
		t.Fatalf("a number: %v %v", c, err)
	}
	for _, text := range []string{"", "[1, 2]", "client_id: {nested: " + canaryValue + "}", "{" + canaryValue} {
		_, err := File(write("bad", text)).Read(context.Background())
		if err == nil || strings.Contains(err.Error(), canaryValue) || !strings.Contains(err.Error(), "file:"+dir) {
			t.Errorf("%q: %v", text, err)
		}
	}
	if _, err := File(filepath.Join(dir, "absent")).Read(context.Background()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("absent file: %v", err)
	}
}

func TestEnvSource(t *testing.T) {
	t.Setenv("TPTEST_API_KEY", "k")
	t.Setenv("TPTEST_CLIENT_ID", "i")
	t.Setenv("TPTESTX_CLIENT_SECRET", "not mine")
	c, err := Env("TPTEST").Read(context.Background())
	if err != nil || c.Get("api_key") != "k" || c.Get("client_id") != "i" || len(c.Keys()) != 2 {
		t.Fatalf("%v %v", c, err)
	}
	if _, err := Env("TPNONE").Read(context.Background()); err == nil || !strings.Contains(err.Error(), "TPNONE_") {
		t.Fatalf("no variables: %v", err)
	}
}

func TestOpen(t *testing.T) {
	for ref, kind := range map[string]string{"file:/x": "file", "env:X": "env"} {
		s, err := Open(ref, nil)
		if err != nil || s.Kind() != kind {
			t.Errorf("%s: %v %v", ref, s, err)
		}
	}
	if _, err := Open("vault:secret/x", nil); err == nil {
		t.Error("vault reference without a vault")
	}
	if _, err := Open(canaryValue, nil); err == nil || strings.Contains(err.Error(), canaryValue) {
		t.Errorf("a value as reference: %v", err)
	}
}

// scripted is a Source whose answers a test sets.
type scripted struct {
	mu    sync.Mutex
	reads int
	next  func() (Credentials, error)
}

func (s *scripted) Kind() string { return "file" }
func (s *scripted) Read(context.Context) (Credentials, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reads++
	return s.next()
}

func (s *scripted) set(f func() (Credentials, error)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.next = f
}

func (s *scripted) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reads
}

func good(version string) func() (Credentials, error) {
	return func() (Credentials, error) {
		return NewCredentials(map[string]string{"client_id": "i", "client_secret": "s-" + version}, version), nil
	}
}

func TestWatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := &scripted{next: good("1")}
		w := NewWatch(src, keysOf("prominsight"), "file:/c.json", time.Minute)
		var mu sync.Mutex
		var changes, errs []string
		w.OnChange = func(c Credentials) { mu.Lock(); changes = append(changes, c.Version()); mu.Unlock() }
		w.OnError = func(err error) { mu.Lock(); errs = append(errs, err.Error()); mu.Unlock() }
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { w.Run(ctx); close(done) }()
		synctest.Wait()

		// Same version at each poll: no change reported.
		time.Sleep(3 * time.Minute)
		synctest.Wait()
		if src.count() != 4 || len(changes) != 1 {
			t.Fatalf("after three polls: %d reads, changes %v", src.count(), changes)
		}
		// An incomplete secret is reported and does not replace the good one.
		src.set(func() (Credentials, error) {
			return NewCredentials(map[string]string{"client_id": "i"}, "2"), nil
		})
		time.Sleep(time.Minute)
		synctest.Wait()
		if len(changes) != 1 || len(errs) != 1 || !strings.Contains(errs[0], "file:/c.json: missing key client_secret") {
			t.Fatalf("changes %v, errors %v", changes, errs)
		}
		// Failures retry sooner than the poll interval, with backoff.
		src.set(func() (Credentials, error) { return Credentials{}, errors.New("unreachable") })
		before := src.count()
		time.Sleep(30 * time.Second)
		synctest.Wait()
		if n := src.count() - before; n < 3 || n > 10 {
			t.Fatalf("%d retries in 30s after failures", n)
		}
		// A kick reads at once (after merging a burst), and a new version is reported.
		src.set(good("3"))
		time.Sleep(time.Minute) // back to the poll interval
		synctest.Wait()
		src.set(good("4"))
		before = src.count()
		for range 5 {
			w.Kick()
		}
		time.Sleep(1100 * time.Millisecond)
		synctest.Wait()
		if n := src.count() - before; n != 1 || changes[len(changes)-1] != "4" {
			t.Fatalf("5 kicks: %d reads, changes %v", n, changes)
		}
		// Version 4 of the secret written again after a delete (or of
		// another path): the same number, other credentials, a change.
		src.set(func() (Credentials, error) {
			return NewVersioned(map[string]string{"client_id": "i", "client_secret": "s-recreated"}, "4",
				VaultVersion("secret/c", 4, time.Now())), nil
		})
		time.Sleep(time.Minute)
		synctest.Wait()
		if len(changes) != 4 {
			t.Fatalf("the same version number of other credentials: changes %v", changes)
		}
		cancel()
		<-done
	})
}

// keysOf are the credential keys of a built-in vendor.
func keysOf(typ string) []string {
	d, _ := vendor.Builtin(typ)
	return d.RequiredKeys()
}

// The client never holds an address with user info, so that no message,
// log line or error of the Vault client's own can show it; the refusal
// shows the address without it.
func TestNewVaultRefusesUserInfo(t *testing.T) {
	for addr, want := range map[string]string{
		"http://vaultuser:VAULTPASSCANARY@127.0.0.1:27821": "vault: address http://REDACTED@127.0.0.1:27821 carries user info; Vault reads none from its address (log in with auth)",
		"https://VAULTPASSCANARY@vault.example":            "vault: address https://REDACTED@vault.example carries user info; Vault reads none from its address (log in with auth)",
		"http://vaultuser:VAULT PASSCANARY@127.0.0.1":      `vault: address "REDACTED" is not a URL`,
	} {
		_, err := NewVault(&config.Vault{Address: addr, Auth: config.VaultAuth{Method: "token", TokenFile: "/t"}}, nil)
		if err == nil || err.Error() != want {
			t.Errorf("NewVault(%q): %v, want %s", addr, err, want)
		}
	}
	if _, err := NewVault(&config.Vault{Address: "http://127.0.0.1:27821", Auth: config.VaultAuth{Method: "token", TokenFile: "/t"}}, nil); err != nil {
		t.Errorf("an address without user info: %v", err)
	}
}
