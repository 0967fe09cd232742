package broker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tokenproxy/tokenproxy/internal/metrics"
	"github.com/tokenproxy/tokenproxy/internal/secrets"
	"github.com/tokenproxy/tokenproxy/internal/sharing"
)

// The fleet's tests run several Caches, the replicas, on one sharing.Memory
// store inside a synctest bubble. Each race named in doc.go has a test here.

// vendor is one vendor for the whole fleet: it counts token requests, issues
// numbered tokens, and (like Keycloak with rotation) refuses a refresh token
// presented twice.
type vendor struct {
	mu        sync.Mutex
	calls     int
	life      time.Duration
	delay     time.Duration
	refresh   bool            // issue refresh tokens
	used      map[string]bool // refresh tokens presented
	presented []string
	versions  []string
	fleetVers []string      // FleetVersion of the credentials of each request
	fail      error         // when set, every request fails with it
	gate      chan struct{} // when set, requests wait for it
}

func newVendor(life, delay time.Duration) *vendor {
	return &vendor{life: life, delay: delay, used: map[string]bool{}}
}

// replica is one Cache's view of the vendor.
type replica struct {
	v  *vendor
	id string
}

func (r replica) Fetch(ctx context.Context, c secrets.Credentials, refresh string) (Token, error) {
	v := r.v
	v.mu.Lock()
	v.calls++
	n := v.calls
	v.versions = append(v.versions, c.Version())
	v.fleetVers = append(v.fleetVers, c.FleetVersion())
	gate, fail, delay := v.gate, v.fail, v.delay
	if refresh != "" {
		v.presented = append(v.presented, refresh)
		if v.used[refresh] {
			v.mu.Unlock()
			return Token{}, &FetchError{Status: 400, Code: "invalid_grant", Description: "refresh token reused"}
		}
		v.used[refresh] = true
	}
	v.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return Token{}, &FetchError{Err: ctx.Err()}
		}
	}
	select {
	case <-time.After(delay):
	case <-ctx.Done():
		return Token{}, &FetchError{Err: ctx.Err()}
	}
	if fail != nil {
		return Token{}, fail
	}
	tok := Token{AccessToken: fmt.Sprintf("tok-%d-by-%s", n, r.id), ExpiresIn: v.life}
	if v.refresh {
		tok.RefreshToken, tok.RefreshExpiresIn = fmt.Sprintf("rt-%d", n), 10*v.life
	}
	return tok, nil
}

func (v *vendor) count() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.calls
}

func (v *vendor) set(f func(v *vendor)) {
	v.mu.Lock()
	defer v.mu.Unlock()
	f(v)
}

var replicaCount = map[*testing.T]int{}

// credsV is version n ("1", "2", ...) of the Vault secret
// secret/tokenproxy/up, version n created n minutes after a fixed time.
func credsV(version string) secrets.Credentials {
	return credsAt("secret/tokenproxy/up", version, 0)
}

// credsAt is version n of the Vault secret at path, created n minutes and
// offset after a fixed time (a secret written again after a delete has a
// later offset).
func credsAt(path, version string, offset time.Duration) secrets.Credentials {
	n, err := strconv.Atoi(version)
	if err != nil {
		panic(err)
	}
	created := time.Date(2026, 1, 1, 0, n, 0, 0, time.UTC).Add(offset)
	return secrets.NewVersioned(map[string]string{"client_id": "id-canary-1234", "client_secret": "secret-canary-" + path + version},
		version, secrets.VaultVersion(path, n, created))
}

// fleetOf starts n replicas sharing store, each with credentials version "1".
// Replicas are numbered across calls within a test.
func fleetOf(t *testing.T, n int, v *vendor, store sharing.Store, opt Options) []*Cache {
	t.Helper()
	var cs []*Cache
	for range n {
		i := replicaCount[t]
		replicaCount[t]++
		o := opt
		id := fmt.Sprintf("replica-%d", i)
		sh := Sharing{Store: store, Lease: 30 * time.Second, Local: true, ID: id}
		if opt.Sharing != nil {
			sh = *opt.Sharing
			sh.Store, sh.ID = store, id
		}
		o.Sharing = &sh
		if o.ReauthMinInterval == 0 {
			o.ReauthMinInterval = 10 * time.Second
		}
		c := New("up", replica{v: v, id: id}, tuned(o))
		t.Cleanup(c.Close)
		c.SetCredentials(credsV("1"))
		cs = append(cs, c)
	}
	return cs
}

func stored(t *testing.T, s sharing.Store) sharing.Record {
	t.Helper()
	rec, _, err := s.Load(context.Background(), "up")
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

// Race: several replicas take the lease at once. The check-and-set lets one
// win; the others read again, wait, and use its token.
func TestSharedColdStartMintsOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v := newVendor(time.Hour, 200*time.Millisecond)
		store := sharing.NewMemory()
		cs := fleetOf(t, 5, v, store, Options{})
		var wg sync.WaitGroup
		for _, c := range cs {
			for range 100 {
				wg.Go(func() {
					if _, err := c.Token(context.Background()); err != nil {
						t.Error(err)
					}
				})
			}
		}
		wg.Wait()
		if n := v.count(); n != 1 {
			t.Fatalf("%d token requests for a fleet of 5, want 1", n)
		}
		want, _ := cs[0].Token(context.Background())
		for i, c := range cs {
			tok, _ := c.Token(context.Background())
			if tok.AccessToken != want.AccessToken || tok.SharedGen != 1 || !tok.Expiry.Equal(want.Expiry) {
				t.Errorf("replica %d holds %v, want the fleet's %v", i, tok, want)
			}
		}
		if s := cs[0].State(); !s.Shared || !strings.HasPrefix(s.MintedBy, "replica-") {
			t.Errorf("state %+v", s)
		}
	})
}

// Over many lifetimes the fleet refreshes once per lifetime, whoever does
// it, and no replica ever hands out an expired token.
func TestSharedRefreshOncePerLifetime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v := newVendor(60*time.Second, 50*time.Millisecond)
		cs := fleetOf(t, 5, v, sharing.NewMemory(), Options{})
		end := time.Now().Add(10 * time.Minute) // ten lifetimes
		for time.Now().Before(end) {
			for i, c := range cs {
				tok, err := c.Token(context.Background())
				if err != nil {
					t.Fatalf("replica %d: %v", i, err)
				}
				if !time.Now().Before(tok.Expiry) {
					t.Fatalf("replica %d handed out an expired token", i)
				}
			}
			time.Sleep(500 * time.Millisecond)
		}
		// One mint, then a refresh at 67.5–75% of each life: about 14.
		if n := v.count(); n < 12 || n > 16 {
			t.Fatalf("%d token requests over ten lifetimes for 5 replicas, want about 14", n)
		}
	})
}

// Race: the lease holder dies after the vendor answered but before it wrote
// the token back. Its lease passes on once it runs out; meanwhile callers of
// the others get 503 with Retry-After set to the lease time left.
func TestSharedDeadHolderLeasePassesOn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v := newVendor(time.Hour, time.Second)
		mem := sharing.NewMemory()
		opt := Options{FetchTimeout: 2 * time.Second, Sharing: &Sharing{Lease: 5 * time.Second, Local: true}}
		// The holder's store works for the lease and dies before the write-back.
		dying := &dyingStore{Store: mem, saves: 1}
		holder := fleetOf(t, 1, v, dying, opt)[0]
		time.Sleep(100 * time.Millisecond) // the holder has taken the lease and is minting
		if rec := stored(t, mem); rec.LeaseHolder != "replica-0" {
			t.Fatalf("lease held by %q", rec.LeaseHolder)
		}
		other := fleetOf(t, 1, v, mem, opt)[0]
		start := time.Now()
		_, err := other.Token(context.Background())
		e, ok := AsError(err)
		if !ok || e.Code != CodeUnavailable || e.RetryAfter <= 0 || e.RetryAfter > 3*time.Second || !strings.Contains(e.Msg, "replica-0") {
			t.Fatalf("while the dead holder's lease runs: %v", err)
		}
		// Within lease + token_timeout of the holder's start, the other serves.
		for {
			if _, err := other.Token(context.Background()); err == nil {
				break
			}
			if time.Since(start) > 7*time.Second {
				t.Fatal("no token within lease + token_timeout")
			}
			time.Sleep(100 * time.Millisecond)
		}
		// The dead holder's token never reached the store; the successor's did.
		if rec := stored(t, mem); rec.MintedBy != "replica-1" || rec.Generation != 1 || rec.LeaseHolder != "" {
			t.Fatalf("stored: minted by %s, generation %d, lease %q", rec.MintedBy, rec.Generation, rec.LeaseHolder)
		}
		if n := v.count(); n != 2 {
			t.Fatalf("%d token requests, want 2 (the dead holder's and the successor's)", n)
		}
		if tok, err := holder.Token(context.Background()); err != nil || tok.SharedGen != 0 {
			t.Fatalf("the holder, cut off from the store, holds %v %v: want its own token", tok, err)
		}
	})
}

// dyingStore works for its first saves, then fails every call, as a replica
// whose process died would never write again.
type dyingStore struct {
	sharing.Store
	mu    sync.Mutex
	saves int
}

func (d *dyingStore) Load(ctx context.Context, name string) (sharing.Record, int, error) {
	d.mu.Lock()
	dead := d.saves <= 0
	d.mu.Unlock()
	if dead {
		return sharing.Record{}, 0, errors.New("dead")
	}
	return d.Store.Load(ctx, name)
}

func (d *dyingStore) Save(ctx context.Context, name string, rec sharing.Record, cas int) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.saves <= 0 {
		return 0, errors.New("dead")
	}
	d.saves--
	return d.Store.Save(ctx, name, rec, cas)
}

// Race: a slow writer whose lease ran out. Another replica took the lease
// and wrote its token; the slow one's check-and-set fails, so the newer
// token is never overwritten, and the slow one uses the fleet's token.
func TestSharedSlowWriterNeverOverwrites(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		slow := newVendor(time.Hour, 6*time.Second)
		fast := newVendor(time.Hour, 100*time.Millisecond)
		mem := sharing.NewMemory()
		opt := Options{FetchTimeout: 10 * time.Second, Sharing: &Sharing{Lease: 4 * time.Second, Local: true}}
		a := fleetOf(t, 1, slow, mem, opt)[0]
		time.Sleep(time.Second)
		b := New("up", replica{v: fast, id: "replica-b"}, tuned(Options{FetchTimeout: 10 * time.Second, ReauthMinInterval: 10 * time.Second,
			Sharing: &Sharing{Store: mem, Lease: 4 * time.Second, Local: true, ID: "replica-b"}}))
		t.Cleanup(b.Close)
		b.SetCredentials(credsV("1"))
		tb, err := b.Token(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		ta, err := a.Token(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if rec := stored(t, mem); rec.MintedBy != "replica-b" || rec.AccessToken != tb.AccessToken {
			t.Fatalf("store holds a token by %s: the slow writer overwrote it", rec.MintedBy)
		}
		if ta.AccessToken != tb.AccessToken {
			t.Fatalf("the slow writer uses %s, not the fleet's %s", ta.AccessToken, tb.AccessToken)
		}
	})
}

// Race: a refresh in flight while a 401 refuses the token it would return.
// The fetch asks again for a token other than the refused one.
func TestSharedRefreshRacing401(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v := newVendor(100*time.Second, 100*time.Millisecond)
		mem := sharing.NewMemory()
		cs := fleetOf(t, 2, v, mem, Options{})
		a, b := cs[0], cs[1]
		s1, _ := a.Token(context.Background())
		if tb, _ := b.Token(context.Background()); tb.AccessToken != s1.AccessToken {
			t.Fatal("replicas hold different tokens")
		}
		// Past the refresh point, the vendor is slow: one replica refreshes
		// under the lease; then b gets a 401 on the old token.
		v.set(func(v *vendor) { v.gate = make(chan struct{}) })
		time.Sleep(time.Until(stored(t, mem).RefreshAt.Add(3 * time.Second)))
		if stored(t, mem).LeaseHolder == "" {
			t.Fatal("nobody holds the lease after the refresh point")
		}
		held, _ := b.Token(context.Background())
		if !b.Invalidate(held.Gen) {
			t.Fatal("401 did not drop the token")
		}
		got := make(chan Token)
		go func() { tok, _ := b.Token(context.Background()); got <- tok }()
		synctest.Wait()
		v.set(func(v *vendor) { close(v.gate); v.gate = nil })
		s2 := <-got
		if s2.AccessToken == s1.AccessToken || s2.SharedGen != 2 {
			t.Fatalf("after the 401: %v, want the refreshed token", s2)
		}
		if n := v.count(); n != 2 {
			t.Fatalf("%d token requests, want 2 (first and one refresh that also serves the 401)", n)
		}
	})
}

// Race: the refused token comes back from a fetch that started before the
// 401 (here: while another replica refreshes, the fetch would keep it).
func TestSharedRefusedDuringFlightIsNotInstalled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v := newVendor(100*time.Second, 100*time.Millisecond)
		mem := sharing.NewMemory()
		gated := &gatedStore{Store: mem}
		a := fleetOf(t, 1, v, gated, Options{})[0]
		b := fleetOf(t, 1, v, mem, Options{})[0]
		s1, _ := a.Token(context.Background())
		b.Token(context.Background())
		// b will refresh, slowly; a's own read of the store is held up.
		v.set(func(v *vendor) { v.gate = make(chan struct{}) })
		gated.hold()
		time.Sleep(time.Until(stored(t, mem).RefreshAt.Add(3 * time.Second)))
		synctest.Wait()
		// a's refresh is stuck reading the store; a 401 refuses s1 meanwhile.
		if !a.Invalidate(s1.Gen) {
			t.Fatal("401 did not drop the token")
		}
		got := make(chan Token)
		go func() { tok, _ := a.Token(context.Background()); got <- tok }()
		synctest.Wait()
		gated.release() // a reads: s1, with b's lease on it
		synctest.Wait()
		v.set(func(v *vendor) { close(v.gate); v.gate = nil })
		tok := <-got
		if tok.AccessToken == s1.AccessToken {
			t.Fatal("the refused token was installed again")
		}
		if n := v.count(); n != 2 {
			t.Fatalf("%d token requests, want 2", n)
		}
	})
}

// gatedStore holds Loads while gated.
type gatedStore struct {
	sharing.Store
	mu   sync.Mutex
	gate chan struct{}
}

func (g *gatedStore) hold() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.gate = make(chan struct{})
}

func (g *gatedStore) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	close(g.gate)
	g.gate = nil
}

func (g *gatedStore) Load(ctx context.Context, name string) (sharing.Record, int, error) {
	g.mu.Lock()
	gate := g.gate
	g.mu.Unlock()
	if gate != nil {
		<-gate
	}
	return g.Store.Load(ctx, name)
}

// Race: a rotation seen by one replica before the others. The first to see
// the new version mints from it; a replica still on the old version uses
// the newer token and never mints from older credentials.
func TestSharedRotationSeenByOneFirst(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v := newVendor(100*time.Second, 100*time.Millisecond)
		mem := sharing.NewMemory()
		cs := fleetOf(t, 3, v, mem, Options{})
		for _, c := range cs {
			c.Token(context.Background())
		}
		cs[0].SetCredentials(credsV("2"))
		synctest.Wait()
		time.Sleep(time.Second)
		rec := stored(t, mem)
		if secrets.ShownFleetVersion(rec.CredentialVersion) != "2" || rec.Generation != 2 {
			t.Fatalf("stored version %s gen %d", rec.CredentialVersion, rec.Generation)
		}
		// The others, on version 1, go on through several refreshes and
		// adopt the version 2 token without ever minting from version 1.
		time.Sleep(5 * time.Minute)
		for i, c := range cs[1:] {
			tok, err := c.Token(context.Background())
			if err != nil || tok.SharedGen < 2 {
				t.Fatalf("replica %d: %v %v", i+1, tok, err)
			}
		}
		v.mu.Lock()
		defer v.mu.Unlock()
		for i, ver := range v.versions[1:] {
			if ver != "2" {
				t.Fatalf("token request %d used credential version %s after the fleet saw version 2", i+2, ver)
			}
		}
		// Once the rest read version 2, nothing more is minted for them.
		cs[1].SetCredentials(credsV("2"))
		cs[2].SetCredentials(credsV("2"))
	})
}

// Prodoscore: only the lease holder presents the stored refresh token, and
// the newest is always stored, so none is presented twice in the fleet.
func TestSharedRefreshTokenNeverPresentedTwice(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v := newVendor(60*time.Second, 50*time.Millisecond)
		v.refresh = true
		cs := fleetOf(t, 5, v, sharing.NewMemory(), Options{})
		end := time.Now().Add(10 * time.Minute)
		for time.Now().Before(end) {
			for _, c := range cs {
				if _, err := c.Token(context.Background()); err != nil {
					t.Fatal(err)
				}
			}
			time.Sleep(time.Second)
		}
		v.mu.Lock()
		defer v.mu.Unlock()
		seen := map[string]bool{}
		for _, rt := range v.presented {
			if seen[rt] {
				t.Fatalf("refresh token %s presented twice: %v", rt, v.presented)
			}
			seen[rt] = true
		}
		if len(v.presented) < 10 {
			t.Fatalf("only %d refreshes used a refresh token over ten lifetimes", len(v.presented))
		}
	})
}

// The store cannot be used: a held token is used while valid, then local
// mode mints alone and fail mode answers credentials_unavailable. Once the
// store answers again, the next refresh goes through it.
func TestSharedStoreUnavailable(t *testing.T) {
	for _, local := range []bool{true, false} {
		t.Run(fmt.Sprintf("local=%v", local), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				v := newVendor(60*time.Second, 50*time.Millisecond)
				mem := sharing.NewMemory()
				c := fleetOf(t, 1, v, mem, Options{Sharing: &Sharing{Lease: 30 * time.Second, Local: local}})[0]
				first, _ := c.Token(context.Background())
				mem.SetError(errors.New("connection refused"))
				// Until the safety margin the held token serves.
				for time.Until(first.Expiry) > 6*time.Second {
					tok, err := c.Token(context.Background())
					if err != nil || tok.AccessToken != first.AccessToken {
						t.Fatalf("with a valid token held: %v %v", tok, err)
					}
					time.Sleep(time.Second)
				}
				time.Sleep(time.Until(first.Expiry))
				tok, err := c.Token(context.Background())
				if local {
					if err != nil || tok.SharedGen != 0 || tok.AccessToken == first.AccessToken {
						t.Fatalf("local mode after expiry: %v %v, want a token minted alone", tok, err)
					}
				} else if e, ok := AsError(err); !ok || e.Code != CodeUnavailable || !strings.Contains(e.Msg, "sharing store unavailable") {
					t.Fatalf("fail mode after expiry: %v", err)
				}
				mem.SetError(nil)
				time.Sleep(2 * time.Minute)
				tok, err = c.Token(context.Background())
				if err != nil || tok.SharedGen == 0 {
					t.Fatalf("store back: %v %v, want a shared token", tok, err)
				}
			})
		})
	}
}

// A 401 is handled fleet-wide: one re-mint however many replicas saw it,
// and within reauth_min_interval 401s on that token go back to callers.
func TestSharedReauthFleetWide(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v := newVendor(time.Hour, 50*time.Millisecond)
		cs := fleetOf(t, 4, v, sharing.NewMemory(), Options{})
		for range 25 * 10 { // 25s, 10 rounds a second on every replica
			var wg sync.WaitGroup
			for _, c := range cs {
				wg.Go(func() { answer401(t, c) })
			}
			wg.Wait()
			time.Sleep(100 * time.Millisecond)
		}
		// First mint, then re-mints at about 0s, 10s and 20s fleet-wide.
		if n := v.count(); n < 3 || n > 5 {
			t.Fatalf("%d token requests with a path always answering 401, want 4", n)
		}
	})
}

// A failed mint is written back: the fleet backs off together instead of
// every replica asking the vendor in turn.
func TestSharedFailureBacksOffFleet(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v := newVendor(time.Hour, 10*time.Millisecond)
		v.fail = &FetchError{Status: 401, Code: "invalid_client"}
		cs := fleetOf(t, 5, v, sharing.NewMemory(), Options{})
		for range 10 * 60 { // ten minutes, a caller per replica per second
			for _, c := range cs {
				_, err := c.Token(context.Background())
				if e, ok := AsError(err); !ok || e.Code != CodeTokenEndpoint || !strings.Contains(e.Msg, "invalid_client") {
					t.Fatalf("got %v", err)
				}
			}
			time.Sleep(time.Second)
		}
		// One replica alone makes 2 to 6 requests in ten minutes (30s
		// doubling to 5 minutes); the fleet should not make five times that.
		if n := v.count(); n < 2 || n > 8 {
			t.Fatalf("%d token requests from 5 replicas over ten minutes of refusals", n)
		}
	})
}

// hungStore is a store behind a silent network: while hung, every call
// waits for its context or for the store client's own timeout (Vault's
// is 10s), then fails.
type hungStore struct {
	sharing.Store
	mu      sync.Mutex
	hung    bool
	timeout time.Duration
}

func (h *hungStore) set(hung bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.hung = hung
}

func (h *hungStore) wait(ctx context.Context) error {
	h.mu.Lock()
	hung := h.hung
	h.mu.Unlock()
	if !hung {
		return nil
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(h.timeout):
		return errors.New("no answer in time")
	}
}

func (h *hungStore) Load(ctx context.Context, name string) (sharing.Record, int, error) {
	if err := h.wait(ctx); err != nil {
		return sharing.Record{}, 0, err
	}
	return h.Store.Load(ctx, name)
}

func (h *hungStore) Save(ctx context.Context, name string, rec sharing.Record, cas int) (int, error) {
	if err := h.wait(ctx); err != nil {
		return 0, err
	}
	return h.Store.Save(ctx, name, rec, cas)
}

// A store that does not answer costs a caller at most FetchTimeout, as a
// vendor that does not answer does: then fail mode answers 503, and local
// mode mints alone (CONTRACT.md §7). The store client's own, longer
// timeout is not what bounds the wait.
func TestSharedHungStoreBoundedByFetchTimeout(t *testing.T) {
	for _, local := range []bool{true, false} {
		t.Run(fmt.Sprintf("local=%v", local), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				const fetchTimeout = 2 * time.Second
				v := newVendor(60*time.Second, 50*time.Millisecond)
				store := &hungStore{Store: sharing.NewMemory(), timeout: 10 * time.Second}
				c := fleetOf(t, 1, v, store, Options{FetchTimeout: fetchTimeout,
					Sharing: &Sharing{Lease: 2 * fetchTimeout, Local: local}})[0]
				first, err := c.Token(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				// The upstream refuses the token: a fetch starts at once, with
				// no valid token to keep while the store does not answer.
				store.set(true)
				if !c.Invalidate(first.Gen) {
					t.Fatal("401 did not drop the token")
				}
				start := time.Now()
				tok, err := c.Token(context.Background())
				waited := time.Since(start)
				if local && (err != nil || tok.AccessToken == first.AccessToken) {
					t.Fatalf("local mode: %v %v, want a token minted alone", tok, err)
				}
				if e, ok := AsError(err); !local && (!ok || e.Code != CodeUnavailable) {
					t.Fatalf("fail mode: %v, want credentials_unavailable", err)
				}
				// One store call, then (local) one vendor call, each bounded.
				if limit := 2 * fetchTimeout; waited > limit {
					t.Fatalf("the caller waited %s for a hung store, want at most %s", waited, limit)
				}
			})
		})
	}
}

// A token minted alone while the store is unavailable is dated from when
// the vendor was asked, not from when the fetch began: a store that took
// long to fail does not shorten the token's life (here, past its end).
func TestSharedLocalTokenDatedFromVendorCall(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const life = 60 * time.Second
		v := newVendor(life, 50*time.Millisecond)
		store := &hungStore{Store: sharing.NewMemory(), timeout: 90 * time.Second}
		// FetchTimeout longer than the store's own timeout: the store's
		// failure, not the bound, ends the wait.
		c := fleetOf(t, 1, v, store, Options{FetchTimeout: 2 * time.Minute,
			Sharing: &Sharing{Lease: 4 * time.Minute, Local: true}})[0]
		first, err := c.Token(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		store.set(true)
		if !c.Invalidate(first.Gen) {
			t.Fatal("401 did not drop the token")
		}
		tok, err := c.Token(context.Background())
		if err != nil || tok.SharedGen != 0 {
			t.Fatalf("%v %v, want a token minted alone", tok, err)
		}
		if left := time.Until(tok.Expiry); left < life-time.Second {
			t.Fatalf("the local token expires in %s, want its lifetime (%s) from the vendor call", left, life)
		}
		if n := v.count(); n != 2 {
			t.Fatalf("%d token requests, want 2 (the fleet's, then one alone)", n)
		}
	})
}

// A token refused while the store was down is not taken back once the store
// answers again: the replica minted alone meanwhile, and the stored token is
// the one the upstream refused (found by a new user: a vendor 401 for
// reauth_min_interval after a Vault outage).
func TestSharedRefusedTokenNotTakenBackAfterOutage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v := newVendor(time.Hour, 50*time.Millisecond)
		mem := sharing.NewMemory()
		c := fleetOf(t, 1, v, mem, Options{ReauthMinInterval: time.Millisecond})[0]
		s1, _ := c.Token(context.Background())
		mem.SetError(errors.New("connection refused"))
		if !c.Invalidate(s1.Gen) {
			t.Fatal("401 did not drop the token")
		}
		alone, err := c.Token(context.Background())
		if err != nil || alone.SharedGen != 0 {
			t.Fatalf("store down after a 401: %v %v, want a token minted alone", alone, err)
		}
		mem.SetError(nil)
		time.Sleep(time.Second)
		// The token minted alone is refused too (say, the path needs a scope):
		// the store must not hand back the one refused before.
		if !c.Invalidate(alone.Gen) {
			t.Fatal("401 did not drop the token minted alone")
		}
		tok, err := c.Token(context.Background())
		if err != nil || tok.AccessToken == s1.AccessToken {
			t.Fatalf("after the outage: %v %v, want a token other than the refused %s", tok, err, s1.AccessToken)
		}
		if rec := stored(t, mem); rec.AccessToken == s1.AccessToken {
			t.Fatal("the refused token is still the fleet's")
		}
	})
}

// The tester's fault: the credentials secret deleted with `vault kv
// metadata delete` and written again (version 1 again, or the same number
// again, the record says 3), or moved to another path. Version numbers of
// different secrets do not compare: the first replica to read the new
// credentials mints from them and never uses the old secret's token; a
// replica still on the old ones may mint from them once meanwhile (other
// credentials, as with file: sources); once all read the new ones they
// share one token minted from them, and a 401 re-mints once. Before, every
// replica waited for a version it would never read: 503 for good.
func TestSharedCredentialsRecreatedOrMoved(t *testing.T) {
	for _, c := range []struct {
		name string
		next secrets.Credentials
	}{
		{"recreated", credsAt("secret/tokenproxy/up", "1", time.Hour)},
		{"recreated, same number", credsAt("secret/tokenproxy/up", "3", time.Hour)},
		{"moved", credsAt("secret/tokenproxy/up-b", "1", time.Hour)},
		{"moved, same number", credsAt("secret/tokenproxy/up-b", "3", time.Hour)},
	} {
		t.Run(c.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				v := newVendor(time.Hour, 50*time.Millisecond)
				mem := sharing.NewMemory()
				cs := fleetOf(t, 3, v, mem, Options{})
				for _, r := range cs {
					r.SetCredentials(credsV("3"))
				}
				synctest.Wait()
				time.Sleep(10 * time.Second)
				before := v.count()
				mintedFrom := func(tok Token) string {
					var n int
					fmt.Sscanf(tok.AccessToken, "tok-%d-", &n)
					v.mu.Lock()
					defer v.mu.Unlock()
					return v.fleetVers[n-1]
				}
				// One replica reads the new credentials first: it mints
				// from them, and never takes the old secret's token.
				cs[0].SetCredentials(c.next)
				synctest.Wait()
				time.Sleep(time.Second)
				first, err := cs[0].Token(context.Background())
				if err != nil || mintedFrom(first) != c.next.FleetVersion() {
					t.Fatalf("first replica on the new credentials: %v %v, minted from the new ones %v", first, err, err == nil && mintedFrom(first) == c.next.FleetVersion())
				}
				recreated := strings.HasPrefix(c.name, "recreated")
				if recreated {
					// A replica still on the deleted secret must fetch
					// (here after a 401 on the old token) before its next
					// read: it is behind the re-created version, so it
					// takes that token and mints nothing from the deleted
					// secret.
					answer401(t, cs[1])
					synctest.Wait()
					if tok, err := cs[1].Token(context.Background()); err != nil || tok.AccessToken != first.AccessToken {
						t.Fatalf("replica on the deleted secret: %v %v, want the re-created secret's %v", tok, err, first)
					}
				}
				for _, r := range cs[1:] {
					r.SetCredentials(c.next)
				}
				synctest.Wait()
				time.Sleep(5 * time.Second)
				shared, _ := cs[0].Token(context.Background())
				for i, r := range cs {
					tok, err := r.Token(context.Background())
					if err != nil || tok.AccessToken != shared.AccessToken || mintedFrom(tok) != c.next.FleetVersion() {
						t.Fatalf("replica %d after reading the new credentials: %v %v, want the fleet's %v from them", i, tok, err, shared)
					}
				}
				settled := v.count()
				switch n := settled - before; {
				case recreated && n != 1:
					t.Errorf("%d token requests while the replicas read the re-created secret, want 1", n)
				case n < 1 || n > 3:
					t.Errorf("%d token requests while the replicas read the new credentials, want 1 to 3 (one per replica at most)", n)
				}
				// The vendor revokes it: every replica sees a 401; the
				// fleet re-mints once and every replica serves again.
				for _, r := range cs {
					answer401(t, r)
				}
				synctest.Wait()
				if n := v.count() - settled; n != 1 {
					t.Fatalf("%d token requests after the 401, want 1", n)
				}
				for i, r := range cs {
					if s := r.State(); !s.Ready {
						t.Errorf("replica %d not ready after the 401: %+v", i, s)
					}
				}
			})
		})
	}
}

// A record written before fleet versions carried their secret (a bare KV
// version number) is another lineage: one mint replaces it, whatever its
// number, and the fleet shares that token.
func TestSharedRecordOfPreviousFormat(t *testing.T) {
	for _, old := range []string{"1", "3", "99"} {
		synctest.Test(t, func(t *testing.T) {
			v := newVendor(time.Hour, 50*time.Millisecond)
			mem := sharing.NewMemory()
			now := time.Now()
			if _, err := mem.Save(context.Background(), "up", sharing.Record{AccessToken: "tok-old-format", Obtained: now,
				Expiry: now.Add(time.Hour), RefreshAt: now.Add(45 * time.Minute), CredentialVersion: old, Generation: 7}, 0); err != nil {
				t.Fatal(err)
			}
			cs := fleetOf(t, 3, v, mem, Options{})
			for i, r := range cs {
				tok, err := r.Token(context.Background())
				if err != nil || tok.AccessToken == "tok-old-format" {
					t.Fatalf("record version %q: replica %d: %v %v", old, i, tok, err)
				}
			}
			if n := v.count(); n != 1 {
				t.Fatalf("record version %q: %d token requests, want 1", old, n)
			}
		})
	}
}

// Two configs give one upstream name to different vendors (one replica's
// "up" is Inspera, the fleet's is PROMinsight) on one sharing path. A token
// never reaches a host it was not minted for: the replica whose audience
// differs from the record's never uses the record's token, names what
// differs in an ERROR line and /status, mints alone, and never writes the
// record, so the replicas that wrote it first go on undisturbed. Both
// orders: the fleet first, and the odd replica first.
func TestSharedTokenNeverCrossesAudiences(t *testing.T) {
	prom := sharing.NewAudience("prominsight", "https://api.prominsight.example/oauth/token", "https://api.prominsight.example")
	insp := sharing.NewAudience("inspera", "https://t.inspera.example/api/authenticate/token", "https://t.inspera.example")
	for _, oddFirst := range []bool{false, true} {
		t.Run(fmt.Sprintf("odd replica first %v", oddFirst), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				core, logs := observer.New(zapcore.DebugLevel)
				mem := sharing.NewMemory()
				vp, vi := newVendor(60*time.Second, 50*time.Millisecond), newVendor(60*time.Second, 50*time.Millisecond)
				start := func(n int, v *vendor, a sharing.Audience) []*Cache {
					return fleetOf(t, n, v, mem, Options{Log: zap.New(core), Sharing: &Sharing{Lease: 30 * time.Second, Local: true, Audience: a}})
				}
				var fleet, odd []*Cache
				if oddFirst {
					odd = start(1, vi, insp)
					synctest.Wait()
					fleet = start(2, vp, prom)
				} else {
					fleet = start(2, vp, prom)
					synctest.Wait()
					odd = start(1, vi, insp)
				}
				synctest.Wait()
				first := stored(t, mem)
				end := time.Now().Add(5 * time.Minute) // five lifetimes
				for time.Now().Before(end) {
					for _, c := range append(slices.Clone(fleet), odd...) {
						tok, err := c.Token(context.Background())
						if err != nil {
							t.Fatal(err)
						}
						mine := c == odd[0]
						if ownTokens := strings.Contains(tok.AccessToken, "by-"+idOf(odd[0])); mine != ownTokens {
							t.Fatalf("a token crossed vendors: odd replica %v holds %v (minted by %s)", mine, tok, tok.MintedBy)
						}
					}
					time.Sleep(time.Second)
				}
				rec := stored(t, mem)
				wrote := prom
				if oddFirst {
					wrote = insp
				}
				if rec.Audience() != wrote || rec.Generation < first.Generation {
					t.Fatalf("record audience %+v gen %d (first gen %d), want the first writer's %+v", rec.Audience(), rec.Generation, first.Generation, wrote)
				}
				// The group that wrote first shares one token per lifetime
				// (about 7 over five 60s lifetimes); each replica of the
				// other mints alone, about as many each.
				shared, alone := vp, vi
				lonely := 1
				if oddFirst {
					shared, alone, lonely = vi, vp, 2
				}
				if n := shared.count(); n < 5 || n > 9 {
					t.Errorf("%d token requests by the group that wrote first, want about 7", n)
				}
				if n := alone.count(); n < 5*lonely || n > 9*lonely {
					t.Errorf("%d token requests by %d replica(s) minting alone, want about %d", n, lonely, 7*lonely)
				}
				others := odd
				if oddFirst {
					others = fleet
				}
				for _, c := range others {
					if s := c.State(); !strings.Contains(s.LastError, "another upstream") || !strings.Contains(s.LastError, "type, token_url, base_url") || !s.Ready {
						t.Errorf("/status of a replica whose audience differs: %+v", s)
					}
				}
				errs := logs.FilterLevelExact(zapcore.ErrorLevel).FilterMessageSnippet("token for another upstream").All()
				if len(errs) == 0 {
					t.Fatal("no ERROR line for the record of another upstream")
				}
				// The upstream's name is the logger's own field (the
				// daemon's), not the line's: JSON keys stay unique.
				if f := errs[0].ContextMap(); f["upstream"] != nil || fmt.Sprint(f["differs"]) != "[type token_url base_url]" {
					t.Errorf("ERROR line fields %v", f)
				}
				for _, e := range logs.All() {
					for _, f := range e.Context {
						if s := fmt.Sprint(f.String, f.Interface); strings.Contains(s, "example") {
							t.Errorf("a log line shows a URL of the audience: %s %v", e.Message, e.ContextMap())
						}
					}
				}
			})
		})
	}
}

// idOf is the replica id of a cache started by fleetOf.
func idOf(c *Cache) string { return c.fleet.ID }

// damagedStore reads the record as malformed (ErrMalformed with its
// version, as sharing.Vault does) until the next write replaces it.
type damagedStore struct {
	sharing.Store
	mu      sync.Mutex
	damaged bool
}

func (d *damagedStore) damage() { d.mu.Lock(); d.damaged = true; d.mu.Unlock() }

func (d *damagedStore) Load(ctx context.Context, name string) (sharing.Record, int, error) {
	rec, ver, err := d.Store.Load(ctx, name)
	d.mu.Lock()
	defer d.mu.Unlock()
	if err == nil && d.damaged {
		return sharing.Record{}, ver, fmt.Errorf("%w: key expiry: not an RFC 3339 time", sharing.ErrMalformed)
	}
	return rec, ver, err
}

func (d *damagedStore) Save(ctx context.Context, name string, rec sharing.Record, cas int) (int, error) {
	v, err := d.Store.Save(ctx, name, rec, cas)
	if err == nil {
		d.mu.Lock()
		d.damaged = false
		d.mu.Unlock()
	}
	return v, err
}

// The tester's fault: a malformed record replaced by a new replica's mint
// started the generations again at 1, so a replica still holding the old
// generation-1 token took a 401 on it for a refusal of the stored (other)
// generation-1 token, and re-minted over a good token. A generation is
// never given to another token, and a refusal names the token, not only
// its number: the 401 on the old token takes the stored one, with no vendor
// call. The same holds for a record deleted (`vault kv delete`), which loads
// as the zero record with its version.
func TestSharedGenerationNeverReused(t *testing.T) {
	for _, how := range []string{"malformed", "deleted"} {
		t.Run(how, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				v := newVendor(time.Hour, 50*time.Millisecond)
				mem := sharing.NewMemory()
				store := &damagedStore{Store: mem}
				old := fleetOf(t, 1, v, store, Options{})[0]
				held, err := old.Token(context.Background())
				if err != nil || held.SharedGen != 1 {
					t.Fatalf("first token %v %v", held, err)
				}
				if how == "malformed" {
					store.damage()
				} else {
					_, ver, _ := mem.Load(context.Background(), "up")
					if _, err := mem.Save(context.Background(), "up", sharing.Record{}, ver); err != nil {
						t.Fatal(err)
					}
				}
				// A replica started now finds no usable record and mints.
				fresh := fleetOf(t, 1, v, store, Options{})[0]
				newTok, err := fresh.Token(context.Background())
				if err != nil || newTok.AccessToken == held.AccessToken || v.count() != 2 {
					t.Fatalf("after the record was %s: %v %v, %d token requests", how, newTok, err, v.count())
				}
				if rec := stored(t, mem); rec.Generation <= 1 {
					t.Errorf("the token minted over a %s record took generation %d, already given to another", how, rec.Generation)
				}
				// The old token is revoked: the replica holding it takes the
				// fleet's current token; the vendor is not asked.
				old.Invalidate(held.Gen)
				got, err := old.Token(context.Background())
				if err != nil || got.AccessToken != newTok.AccessToken || v.count() != 2 {
					t.Fatalf("after a 401 on the old token: %v %v, %d token requests (want the stored token and 2)", got, err, v.count())
				}
			})
		})
	}
}

// noUpdateStore refuses every write over an existing record, as Vault does
// under a policy without update: a 403 the store reports as ErrDenied.
type noUpdateStore struct{ sharing.Store }

func (n noUpdateStore) Save(ctx context.Context, name string, rec sharing.Record, cas int) (int, error) {
	if cas != 0 {
		return 0, fmt.Errorf("sharing: vault:secret/s/up: writing: %w", errors.Join(sharing.ErrDenied, errors.New("HTTP 403: permission denied (the policy needs update on secret/data/s/up)")))
	}
	return n.Store.Save(ctx, name, rec, cas)
}

// A store that refuses access (a policy without update) is a configuration
// error, not an outage: logged at ERROR with the path and the capability,
// shown in /status, and the replicas keep serving with tokens of their own
// (on_store_unavailable: local) and stay ready.
func TestSharedStoreDeniedIsAConfigurationError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		core, logs := observer.New(zapcore.DebugLevel)
		v := newVendor(time.Hour, 50*time.Millisecond)
		mem := sharing.NewMemory()
		// A record exists (written by an earlier, well-configured fleet).
		if _, err := mem.Save(context.Background(), "up", sharing.Record{Generation: 3}, 0); err != nil {
			t.Fatal(err)
		}
		m := metrics.New(prometheus.NewRegistry(), metrics.Build{Version: "test"})
		cs := fleetOf(t, 2, v, noUpdateStore{mem}, Options{Log: zap.New(core), Metrics: m})
		for i, c := range cs {
			if _, err := c.Token(context.Background()); err != nil {
				t.Fatalf("replica %d: %v", i, err)
			}
			s := c.State()
			if !s.Ready || !strings.Contains(s.LastError, "the policy needs update on secret/data/s/up") {
				t.Errorf("replica %d state %+v", i, s)
			}
		}
		if n := v.count(); n != 2 {
			t.Errorf("%d token requests, want 2 (each replica alone)", n)
		}
		// Neither token reached the store: both are the replicas' own.
		if local, minted := testutil.ToFloat64(m.SharedTokens.WithLabelValues("up", SharedLocal)),
			testutil.ToFloat64(m.SharedTokens.WithLabelValues("up", SharedMinted)); local != 2 || minted != 0 {
			t.Errorf("counted local %v, minted %v; want 2 and 0", local, minted)
		}
		errs := logs.FilterLevelExact(zapcore.ErrorLevel).FilterMessageSnippet("refused access").All()
		if len(errs) == 0 || !strings.Contains(fmt.Sprint(errs[0].ContextMap()["error"]), "update on secret/data/s/up") {
			t.Fatalf("ERROR lines %v", errs)
		}
		if w := logs.FilterLevelExact(zapcore.WarnLevel).FilterMessageSnippet("unavailable").All(); len(w) != 0 {
			t.Errorf("a refusal logged as the store unavailable: %v", w[0].Message)
		}
	})
}

// Under a policy with create but not update, the first replica creates the
// record with its lease, mints, and cannot write the token back: that
// token never reached the fleet, so it counts local, not minted.
func TestSharedTokenNotWrittenBackCountsLocal(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v := newVendor(time.Hour, 50*time.Millisecond)
		m := metrics.New(prometheus.NewRegistry(), metrics.Build{Version: "test"})
		c := fleetOf(t, 1, v, noUpdateStore{sharing.NewMemory()}, Options{Metrics: m})[0]
		if _, err := c.Token(context.Background()); err != nil {
			t.Fatal(err)
		}
		if local, minted := testutil.ToFloat64(m.SharedTokens.WithLabelValues("up", SharedLocal)),
			testutil.ToFloat64(m.SharedTokens.WithLabelValues("up", SharedMinted)); local != 1 || minted != 0 || v.count() != 1 {
			t.Errorf("counted local %v, minted %v after %d token requests; want 1, 0 and 1", local, minted, v.count())
		}
	})
}

// /status's token_generation and the "token obtained" line's
// fleet_generation are the fleet's generation for a shared token: the same
// on every replica holding it, whatever each replica's own count (gen).
func TestSharedGenerationShownIsTheFleets(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		core, logs := observer.New(zapcore.InfoLevel)
		v := newVendor(60*time.Second, 50*time.Millisecond)
		mem := sharing.NewMemory()
		early := fleetOf(t, 1, v, mem, Options{Log: zap.New(core)})[0]
		early.Token(context.Background())
		// The early replica's own count runs ahead. Refreshes come 39 to 45 s
		// (0.75 of 60 s, up to 10% earlier) after each 50 ms mint: the 4th
		// is done by 180.25 s and the 5th starts at 195.25 s at the
		// earliest, so at 187 s no refresh is under way (at 180 s one
		// could be, and the replicas then held generations 4 and 5).
		time.Sleep(187 * time.Second)
		late := fleetOf(t, 1, v, mem, Options{Log: zap.New(core)})[0]
		tok, err := late.Token(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		a, b := early.State(), late.State()
		if rec := stored(t, mem); a.Generation != rec.Generation || b.Generation != rec.Generation || tok.SharedGen != rec.Generation {
			t.Fatalf("shown generations %d and %d, stored %d", a.Generation, b.Generation, rec.Generation)
		}
		lines := logs.FilterMessage("token obtained").All()
		last := lines[len(lines)-1].ContextMap()
		if last["fleet_generation"] != tok.SharedGen {
			t.Errorf("token obtained: %v, want fleet_generation %d", last, tok.SharedGen)
		}
	})
}
