package secrets

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/hashicorp/vault/api/auth/approle"
	"github.com/hashicorp/vault/api/auth/kubernetes"
	"go.uber.org/zap"

	"github.com/tokenproxy/tokenproxy/internal/config"
	"github.com/tokenproxy/tokenproxy/internal/retry"
)

const (
	// vaultTimeout bounds every call to Vault, so an outage costs a read
	// seconds, never a hang.
	vaultTimeout = 10 * time.Second
	// No two logins come closer than a second, however short-lived the
	// tokens or however often reads find them refused.
	vaultLoginGap = time.Second
)

// vaultLoginBackoff is the wait after failed logins.
var vaultLoginBackoff = retry.Backoff{Base: time.Second, Max: 2 * time.Minute}

// Vault reads KV secrets (v1 or v2, detected per mount) and keeps its own
// Vault token alive, the way Vault Agent's auto-auth does: Run logs in, an
// api.LifetimeWatcher renews the token, and Run logs in again when renewal
// ends or a read finds the token refused. Reads wait for the first login
// attempt, so that a start does not begin with a spurious failure, and never
// for a later one.
//
// Errors and logs name the address, path and key; never a secret value, a
// token, a secret_id or a JWT.
type Vault struct {
	// OnLogin and OnRenew, when set before Run, see every login attempt and
	// every token renewal (for metrics).
	OnLogin func(err error)
	OnRenew func(err error)

	addr    string
	auth    config.VaultAuth
	log     *zap.Logger
	http    *http.Client
	client  *api.Client   // holds the token; reads and renewals
	login   *api.Client   // never holds a token; logins only
	refused chan struct{} // a read answered 403: is the token still good?
	tried   chan struct{} // closed once the first login attempt has ended

	mu       sync.Mutex
	notReady error                 // why there is no token to use; nil when logged in
	mounts   map[string]vaultMount // by mount path, "secret/"
	life     VaultState            // the login's times, for State
}

// VaultState is a snapshot of the Vault login for the admin plane. It holds
// no token, secret_id or JWT.
type VaultState struct {
	Address   string
	Method    string // kubernetes, approle, token
	AuthMount string
	LoggedIn  bool
	// Error is why there is no token to use ("" when logged in): the last
	// login's failure, or Vault refusing the token.
	Error       string
	LastLogin   time.Time // the last successful login; zero before one
	LastRenewal time.Time // the last successful renewal; zero before one
	// TokenExpiresAt is when the token ends, from the TTL Vault gave at the
	// last login or renewal; zero when it has no TTL (a root token) or
	// there is no token.
	TokenExpiresAt time.Time
	Renewable      bool
}

// State returns a snapshot of the login.
func (v *Vault) State() VaultState {
	v.mu.Lock()
	defer v.mu.Unlock()
	s := v.life
	s.Address, s.Method, s.AuthMount = v.addr, v.auth.Method, v.auth.Mount
	s.LoggedIn = v.notReady == nil
	if !s.LoggedIn {
		s.Error, s.TokenExpiresAt = v.notReady.Error(), time.Time{}
	}
	return s
}

// lived records a login or a renewal that gave the token ttl seconds more.
func (v *Vault) lived(login bool, ttl int, renewable bool) {
	now := time.Now()
	v.mu.Lock()
	defer v.mu.Unlock()
	if login {
		v.life.LastLogin, v.life.Renewable = now, renewable
	} else {
		v.life.LastRenewal = now
	}
	v.life.TokenExpiresAt = time.Time{}
	if ttl > 0 {
		v.life.TokenExpiresAt = now.Add(time.Duration(ttl) * time.Second)
	}
}

type vaultMount struct {
	path string // "secret/"
	v2   bool
}

// name is the mount's path as the client's KVv1 and KVv2 take it: "secret".
func (m vaultMount) name() string { return strings.TrimSuffix(m.path, "/") }

// NewVault builds a Vault client from cfg (address, namespace, ca_file; auth
// method and files). It does not contact Vault. An address that is not a
// URL, or that carries user info, is an error that shows it without the
// user info: every message and log line names the address, and so would
// every error the client makes with a URL in it (config validation refuses
// both first).
func NewVault(cfg *config.Vault, log *zap.Logger) (*Vault, error) {
	if log == nil {
		log = zap.NewNop()
	}
	switch u, err := url.Parse(cfg.Address); {
	case err != nil:
		return nil, fmt.Errorf("vault: address %q is not a URL", config.RedactURL(cfg.Address))
	case u.User != nil:
		return nil, fmt.Errorf("vault: address %s carries user info; Vault reads none from its address (log in with auth)", config.RedactURL(cfg.Address))
	}
	conf := api.DefaultConfig()
	if conf.Error != nil {
		return nil, fmt.Errorf("vault: %w", conf.Error)
	}
	// DefaultConfig also reads VAULT_AGENT_ADDR, VAULT_CACERT,
	// VAULT_SKIP_VERIFY, VAULT_CLIENT_TIMEOUT, VAULT_MAX_RETRIES, ... from the
	// environment. Undo all of it: only the config file decides.
	conf.Address = cfg.Address
	conf.AgentAddress = ""
	conf.Timeout = vaultTimeout
	conf.MaxRetries = 0 // Watch and Run retry, with their own backoff
	conf.Limiter = nil
	conf.SRVLookup = false
	conf.DisableRedirects = false
	tr := conf.HttpClient.Transport.(*http.Transport)
	tr.Proxy = http.ProxyFromEnvironment
	tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: tr.TLSClientConfig.NextProtos}
	if err := conf.ConfigureTLS(&api.TLSConfig{CACert: cfg.CAFile}); err != nil {
		return nil, fmt.Errorf("vault: ca_file: %w", err)
	}
	v := &Vault{
		addr:     cfg.Address,
		auth:     cfg.Auth,
		log:      log.Named("vault"),
		http:     conf.HttpClient,
		refused:  make(chan struct{}, 1),
		tried:    make(chan struct{}),
		notReady: errors.New("no login yet"),
		mounts:   map[string]vaultMount{},
	}
	var err error
	if v.client, err = newVaultClient(conf, cfg.Namespace); err != nil {
		return nil, err
	}
	if v.login, err = newVaultClient(conf, cfg.Namespace); err != nil {
		return nil, err
	}
	return v, nil
}

// newVaultClient undoes what api.NewClient takes from VAULT_TOKEN,
// VAULT_NAMESPACE and VAULT_HEADERS.
func newVaultClient(conf *api.Config, namespace string) (*api.Client, error) {
	c, err := api.NewClient(conf)
	if err != nil {
		return nil, fmt.Errorf("vault: %w", err)
	}
	c.ClearToken()
	c.SetHeaders(http.Header{api.RequestHeaderName: {"true"}})
	if namespace != "" {
		c.SetNamespace(namespace)
	}
	return c, nil
}

// Run logs in and keeps the Vault token alive until ctx ends. Call it once.
func (v *Vault) Run(ctx context.Context) {
	defer v.http.CloseIdleConnections()
	var last time.Time
	wait := time.Duration(0)
	for failures := 0; ; {
		pause := max(wait, time.Until(last.Add(vaultLoginGap)))
		if pause > 0 && !vaultSleep(ctx, pause) {
			return
		}
		last = time.Now()
		tok, err := v.logIn(ctx)
		if ctx.Err() != nil {
			return
		}
		if v.OnLogin != nil {
			v.OnLogin(err)
		}
		if err != nil {
			v.setNotReady(err)
			v.triedOnce()
			failures++
			wait = vaultLoginBackoff.Wait(failures)
			v.log.Warn("vault login failed", v.fields(zap.Error(err), zap.Duration("retry_in", wait))...)
			continue
		}
		failures, wait = 0, 0
		v.client.SetToken(tok.Auth.ClientToken)
		v.lived(true, tok.Auth.LeaseDuration, tok.Auth.Renewable)
		v.setNotReady(nil)
		v.triedOnce()
		v.log.Info("vault login", v.fields(zap.Int("ttl_seconds", tok.Auth.LeaseDuration), zap.Bool("renewable", tok.Auth.Renewable))...)
		v.keepAlive(ctx, tok)
	}
}

// keepAlive renews the token until renewal ends, Vault refuses the token,
// or ctx ends. A token without a TTL (a root token) needs no renewal.
func (v *Vault) keepAlive(ctx context.Context, tok *api.Secret) {
	var done <-chan error
	var renewed <-chan *api.RenewOutput
	if tok.Auth.LeaseDuration > 0 {
		w, err := v.client.NewLifetimeWatcher(&api.LifetimeWatcherInput{Secret: tok})
		if err != nil {
			v.log.Error("vault token watcher", zap.Error(err))
			return
		}
		exited := make(chan struct{})
		go func() { defer close(exited); w.Start() }()
		defer func() { w.Stop(); <-exited }()
		done, renewed = w.DoneCh(), w.RenewCh()
	}
	for {
		select {
		case <-ctx.Done():
			return
		case r := <-renewed:
			if v.OnRenew != nil {
				v.OnRenew(nil)
			}
			v.lived(false, r.Secret.Auth.LeaseDuration, true)
			v.log.Debug("vault token renewed", zap.String("address", v.addr), zap.Int("ttl_seconds", r.Secret.Auth.LeaseDuration))
		case err := <-done:
			if err != nil {
				if v.OnRenew != nil {
					v.OnRenew(err)
				}
				v.log.Warn("vault token renewal failed; logging in again", v.fields(zap.String("error", vaultDescribe(err)))...)
			} else {
				v.log.Info("vault token near the end of its life; logging in again", v.fields()...)
			}
			return
		case <-v.refused:
			// A 403 may only mean the policy does not cover a path: log in
			// again only when Vault refuses the token itself.
			_, err := v.client.Auth().Token().LookupSelfWithContext(ctx)
			if vaultStatus(err) == http.StatusForbidden {
				v.setNotReady(errors.New("Vault refused the token; logging in again"))
				v.log.Warn("vault refused the token; logging in again", v.fields()...)
				return
			}
		}
	}
}

// logIn asks Vault for a new token, reading the credential files afresh.
func (v *Vault) logIn(ctx context.Context) (*api.Secret, error) {
	a := v.auth
	var method api.AuthMethod
	var err error
	switch a.Method {
	case "token":
		return v.tokenLogin(ctx)
	case "approle":
		var roleID string
		if roleID, err = vaultReadFile(a.RoleIDFile); err == nil {
			method, err = approle.NewAppRoleAuth(roleID, &approle.SecretID{FromFile: a.SecretIDFile}, approle.WithMountPath(a.Mount))
		}
	case "kubernetes":
		// The path option reads the file when it is applied, so build the
		// method at every login: Kubernetes rotates the token on disk.
		method, err = kubernetes.NewKubernetesAuth(a.Role, kubernetes.WithServiceAccountTokenPath(a.JWTFile), kubernetes.WithMountPath(a.Mount))
	default:
		err = fmt.Errorf("unknown method %q", a.Method)
	}
	if err != nil {
		return nil, fmt.Errorf("%s login at %s: %w", a.Method, v.addr, err)
	}
	tok, err := method.Login(ctx, v.login)
	if err != nil {
		return nil, fmt.Errorf("%s login at %s (auth mount %s): %w", a.Method, v.addr, a.Mount, vaultAPIError{err})
	}
	if tok == nil || tok.Auth == nil || tok.Auth.ClientToken == "" {
		return nil, fmt.Errorf("%s login at %s (auth mount %s): answer holds no token", a.Method, v.addr, a.Mount)
	}
	return tok, nil
}

// tokenLogin takes the token from token_file, else $VAULT_TOKEN, and asks
// Vault for its TTL.
func (v *Vault) tokenLogin(ctx context.Context) (*api.Secret, error) {
	token, from := os.Getenv("VAULT_TOKEN"), "$VAULT_TOKEN"
	if f := v.auth.TokenFile; f != "" {
		var err error
		if token, err = vaultReadFile(f); err != nil {
			return nil, fmt.Errorf("token login: %w", err)
		}
		from = f
	}
	if token == "" {
		return nil, fmt.Errorf("token login: %s is empty", from)
	}
	c, err := v.login.CloneWithHeaders() // the namespace is a header
	if err != nil {
		return nil, fmt.Errorf("token login: %w", err)
	}
	c.SetToken(token)
	self, err := c.Auth().Token().LookupSelfWithContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("token login at %s: looking up the token from %s: %w", v.addr, from, vaultAPIError{err})
	}
	ttl, _ := self.TokenTTL()
	renewable, _ := self.TokenIsRenewable()
	return &api.Secret{Auth: &api.SecretAuth{ClientToken: token, LeaseDuration: int(ttl.Seconds()), Renewable: renewable}}, nil
}

// Secret returns the Source for vault:<mount>/<path> given "<mount>/<path>".
func (v *Vault) Secret(path string) Source {
	return vaultSecret{v: v, path: strings.Trim(path, "/")}
}

type vaultSecret struct {
	v    *Vault
	path string
}

func (s vaultSecret) Kind() string { return "vault" }

func (s vaultSecret) Read(ctx context.Context) (Credentials, error) { return s.v.read(ctx, s.path) }

func (v *Vault) read(ctx context.Context, path string) (Credentials, error) {
	where := "vault:" + path + " at " + v.addr
	if err := v.ready(ctx); err != nil {
		return Credentials{}, fmt.Errorf("%w (reading %s)", err, where)
	}
	m, sub, err := v.find(ctx, path)
	if err != nil {
		return Credentials{}, fmt.Errorf("%s: %w", where, err)
	}
	var kv interface {
		Get(ctx context.Context, path string) (*api.KVSecret, error)
	} = v.client.KVv1(m.name())
	if m.v2 {
		kv = v.client.KVv2(m.name())
	}
	s, err := kv.Get(ctx, sub)
	if err != nil && !errors.Is(err, api.ErrSecretNotFound) {
		return Credentials{}, fmt.Errorf("%s: %w", where, v.Failed(path, err))
	}
	version, fleet := "", ""
	var data map[string]any
	if s != nil {
		// KV v2's latest version deleted or destroyed: no data, metadata only.
		data = s.Data
		if s.VersionMetadata != nil {
			version = strconv.Itoa(s.VersionMetadata.Version)
			fleet = VaultVersion(path, s.VersionMetadata.Version, s.VersionMetadata.CreatedTime)
		}
	}
	if data == nil {
		return Credentials{}, fmt.Errorf("%s: no secret there (or its latest version is deleted)", where)
	}
	values := make(map[string]string, len(data))
	for _, k := range slices.Sorted(maps.Keys(data)) {
		switch x := data[k].(type) {
		case string:
			values[k] = x
		case json.Number:
			values[k] = x.String()
		case bool:
			values[k] = strconv.FormatBool(x)
		default:
			return Credentials{}, fmt.Errorf("%s: key %s holds an object, an array or null, not a string, number or boolean", where, k)
		}
	}
	if version == "" { // KV version 1: no versions, a fingerprint
		return NewCredentials(values, ""), nil
	}
	return NewVersioned(values, version, fleet), nil
}

// ready waits for the first login attempt (at most vaultTimeout, or until ctx
// ends) and reports why there is no token to use, or nil.
func (v *Vault) ready(ctx context.Context) error {
	wait := time.NewTimer(vaultTimeout)
	select {
	case <-v.tried:
	case <-ctx.Done():
	case <-wait.C:
	}
	wait.Stop()
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.notReady != nil {
		return fmt.Errorf("vault: not logged in: %w", v.notReady)
	}
	return nil
}

// Addr is the Vault address from the config, for messages.
func (v *Vault) Addr() string { return v.addr }

// KVv2 is, for writers that share this Vault's login and token renewal (the
// fleet token store), the KV v2 mount holding path: a client for it and path
// relative to the mount ("secret/a/b" gives KVv2("secret") and "a/b"). Like a
// read, it waits for the first login attempt. Errors, one line each, never
// holding a token: not logged in; the mount lookup failed ("HTTP 403:
// ...", which a path under no mount also gets); or the mount is KV version 1
// or not KV. Report failures of calls made through the client with Failed.
func (v *Vault) KVv2(ctx context.Context, path string) (*api.KVv2, string, error) {
	path = strings.TrimLeft(path, "/")
	if err := v.ready(ctx); err != nil {
		return nil, "", err
	}
	m, sub, err := v.find(ctx, path)
	if err != nil {
		return nil, "", err
	}
	if !m.v2 {
		v.forgetMount(m.path) // so that `vault kv enable-versioning` takes effect
		return nil, "", fmt.Errorf("mount %q is KV version 1, not KV version 2", m.path)
	}
	return v.client.KVv2(m.name()), sub, nil
}

// find is the KV mount holding path, for reads and for the fleet's store
// alike, and path relative to it. A failed lookup is "finding its KV
// mount: HTTP 403: ...", and a 403 makes Run check the token.
func (v *Vault) find(ctx context.Context, path string) (vaultMount, string, error) {
	m, err := v.mount(ctx, path)
	if err != nil {
		v.sawError(err)
		return vaultMount{}, "", fmt.Errorf("finding its KV mount: %w", vaultAPIError{err})
	}
	return m, strings.TrimPrefix(path, m.path), nil
}

// Failed takes the error of a call made through a KVv2 client for path: a
// 403 makes Run check whether Vault still accepts the token (and log in
// again if not), and path's mount is looked up afresh next time in case it
// changed. It returns err in one line ("HTTP 403: permission denied", or
// the transport's failure), unwrapping to err.
func (v *Vault) Failed(path string, err error) error {
	v.sawError(err)
	if m, ok := v.cachedMount(strings.Trim(path, "/")); ok {
		v.forgetMount(m.path)
	}
	return vaultAPIError{err}
}

// mount finds the KV mount holding path and its version, as the vault CLI
// does, and remembers it. Any token with access somewhere under a mount may
// ask; a path under no mount answers 403.
func (v *Vault) mount(ctx context.Context, path string) (vaultMount, error) {
	if m, ok := v.cachedMount(path); ok {
		return m, nil
	}
	s, err := v.client.Logical().ReadWithContext(ctx, "sys/internal/ui/mounts/"+path)
	if err != nil {
		return vaultMount{}, err
	}
	if s == nil || s.Data == nil {
		return vaultMount{}, errors.New("no mount found")
	}
	mountPath, _ := s.Data["path"].(string)
	typ, _ := s.Data["type"].(string)
	if (typ != "kv" && typ != "generic") || !strings.HasPrefix(path, mountPath) || mountPath == "" {
		return vaultMount{}, fmt.Errorf("mount %q is of type %q, not kv", mountPath, typ)
	}
	opts, _ := s.Data["options"].(map[string]any)
	m := vaultMount{path: mountPath, v2: opts["version"] == "2"}
	v.mu.Lock()
	v.mounts[mountPath] = m
	v.mu.Unlock()
	v.log.Debug("vault KV mount found", zap.String("address", v.addr), zap.String("mount", mountPath), zap.Bool("kv_v2", m.v2))
	return m, nil
}

// cachedMount is the longest known mount holding path.
func (v *Vault) cachedMount(path string) (vaultMount, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	var found vaultMount
	for p, m := range v.mounts {
		if strings.HasPrefix(path, p) && len(p) > len(found.path) {
			found = m
		}
	}
	return found, found.path != ""
}

func (v *Vault) forgetMount(path string) {
	v.mu.Lock()
	delete(v.mounts, path)
	v.mu.Unlock()
}

// sawError tells Run when Vault answered 403, which a revoked or expired
// token also gets.
func (v *Vault) sawError(err error) {
	if vaultStatus(err) == http.StatusForbidden {
		select {
		case v.refused <- struct{}{}:
		default:
		}
	}
}

func (v *Vault) triedOnce() {
	v.mu.Lock()
	defer v.mu.Unlock()
	select {
	case <-v.tried:
	default:
		close(v.tried)
	}
}

func (v *Vault) setNotReady(err error) {
	v.mu.Lock()
	v.notReady = err
	v.mu.Unlock()
}

func (v *Vault) fields(more ...zap.Field) []zap.Field {
	return append([]zap.Field{zap.String("address", v.addr), zap.String("method", v.auth.Method), zap.String("auth_mount", v.auth.Mount)}, more...)
}

// vaultAPIError shortens the Vault API's multi-line errors to one line, "HTTP
// 403: permission denied", and keeps the original for errors.As.
type vaultAPIError struct{ err error }

func (e vaultAPIError) Error() string { return vaultDescribe(e.err) }
func (e vaultAPIError) Unwrap() error { return e.err }

func vaultDescribe(err error) string {
	var re *api.ResponseError
	if !errors.As(err, &re) {
		// The URL is already in the caller's message: keep the failure.
		var ue *url.Error
		switch {
		case errors.Is(err, context.DeadlineExceeded):
			return "no answer in time (context deadline exceeded)"
		case errors.As(err, &ue):
			return ue.Op + ": " + ue.Err.Error()
		}
		return err.Error()
	}
	msg := strings.Join(strings.Fields(strings.Join(re.Errors, "; ")), " ")
	if re.RawError {
		msg = "an answer that is not Vault's" // a proxy's page: not ours to repeat
	}
	return fmt.Sprintf("HTTP %d: %s", re.StatusCode, msg)
}

func vaultStatus(err error) int {
	var re *api.ResponseError
	if errors.As(err, &re) {
		return re.StatusCode
	}
	return 0
}

func vaultReadFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// vaultSleep waits d or until ctx ends, and reports whether ctx is still live.
func vaultSleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
