package daemon

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/tokenproxy/tokenproxy/internal/broker"
	"github.com/tokenproxy/tokenproxy/internal/config"
	"github.com/tokenproxy/tokenproxy/internal/metrics"
	"github.com/tokenproxy/tokenproxy/internal/proxy"
	"github.com/tokenproxy/tokenproxy/internal/secrets"
	"github.com/tokenproxy/tokenproxy/internal/sharing"
	"github.com/tokenproxy/tokenproxy/internal/upstream"
)

// running is one upstream at work: its token cache, the watch on its
// credentials, and its route.
type running struct {
	cfg   config.Upstream
	cache *broker.Cache
	watch *secrets.Watch
	route *proxy.Route
	stop  context.CancelFunc
	wg    sync.WaitGroup
}

// parts are what an upstream is made of, built alike by the daemon and by
// `tokenproxy check`: the API's base URL, the transport to its hosts, the
// vendor's adapter (token requests go through the same transport), and the
// source of its credentials.
type parts struct {
	base    *url.URL
	tr      *http.Transport
	adapter *upstream.Adapter
	src     secrets.Source
}

// build makes the parts of upstream name. Errors name the key at fault.
func (opt *Options) build(name string, u config.Upstream, vault *secrets.Vault) (*parts, error) {
	base, err := url.Parse(u.BaseURL)
	if err != nil {
		return nil, fmt.Errorf("upstreams.%s.base_url: %w", name, err)
	}
	tr, err := upstream.Transport(u.CAFile)
	if err != nil {
		return nil, fmt.Errorf("upstreams.%s.%w", name, err)
	}
	// A cold start or a 401 storm would otherwise open a connection per
	// waiting request at once; queue them on a bounded set instead.
	tr.MaxConnsPerHost = int(u.MaxConnections)
	if opt.ExtraRootsPEM != nil {
		tr.TLSClientConfig.RootCAs.AppendCertsFromPEM(opt.ExtraRootsPEM)
	}
	ad, err := upstream.New(u, upstream.TokenClient(tr, u.TokenTimeout.Duration))
	if err != nil {
		return nil, fmt.Errorf("upstreams.%s.type: %w", name, err)
	}
	src, err := opt.OpenSource(u.Credentials, vault)
	if err != nil {
		return nil, fmt.Errorf("upstreams.%s.credentials: %w", name, err)
	}
	return &parts{base: base, tr: tr, adapter: ad, src: src}, nil
}

// newCache is the token cache of upstream name, for the daemon and for
// `tokenproxy check` alike. With sh (the upstream is shared, CONTRACT.md
// §7), its tokens come through the fleet's store, and check proves exactly
// the path the daemon takes.
func newCache(name string, u config.Upstream, ad *upstream.Adapter, sh *broker.Sharing, m *metrics.Metrics, log *zap.Logger, onRefused func()) *broker.Cache {
	return broker.New(name, ad, broker.Options{
		RefreshFraction:   u.RefreshFraction,
		FetchTimeout:      u.TokenTimeout.Duration,
		ReauthMinInterval: u.ReauthMinInterval.Duration,
		Sharing:           sh,
		Static:            ad.Static(),
		OnRefused:         onRefused,
		Authorize:         ad.Header,
		Metrics:           m,
		Log:               log.Named("broker"),
	})
}

// sharingOf is how upstream name shares its token (CONTRACT.md §7), or nil
// when it does not: through the Vault KV v2 store at sharing.vault.path,
// with the same Vault login as credential reads.
func (opt *Options) sharingOf(cfg *config.Config, name string, vault *secrets.Vault) *broker.Sharing {
	if !cfg.IsShared(name) || vault == nil {
		return nil
	}
	u := cfg.Upstreams[name]
	return &broker.Sharing{
		Store: sharing.NewVault(vault, cfg.Sharing.Vault.Path),
		Lease: cfg.Sharing.Lease.Duration,
		Local: cfg.Sharing.OnStoreUnavailable == "local",
		ID:    opt.ReplicaID,
		// Who the token is for: a replica whose config gives this name to
		// another vendor never uses, nor writes, this record.
		Audience: sharing.NewAudience(u.Type, u.TokenURL, u.BaseURL),
	}
}

// checkSharing logs, once at start, why sharing.vault.path cannot hold the
// fleet's tokens (not KV v2, under no mount, refused), so that an operator
// sees it before the first token is needed.
func checkSharing(cfg *config.Config, vault *secrets.Vault, log *zap.Logger) {
	if cfg.Sharing == nil || vault == nil {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := sharingProblem(ctx, cfg, vault); err != nil {
			log.Warn("the sharing store cannot be used; tokens are kept or minted as on_store_unavailable says",
				zap.String("key", "sharing.vault.path"), zap.Error(err))
		}
	}()
}

// sharingProblem is why sharing.vault.path cannot hold the fleet's tokens,
// or nil (also when nothing is shared).
func sharingProblem(ctx context.Context, cfg *config.Config, vault *secrets.Vault) error {
	if cfg.Sharing == nil || vault == nil {
		return nil
	}
	return sharing.NewVault(vault, cfg.Sharing.Vault.Path).Check(ctx)
}

// startUpstream builds and starts an upstream: credentials are read and its
// first token fetched at once, without waiting for traffic.
func (d *Daemon) startUpstream(name string, u config.Upstream, cfg *config.Config, vault *secrets.Vault) (*running, error) {
	p, err := d.opt.build(name, u, vault)
	if err != nil {
		return nil, err
	}
	log := d.log.With(zap.String("upstream", name))
	kind, _, _ := config.ParseRef(u.Credentials)
	w := secrets.NewWatch(p.src, u.RequiredKeys(), u.Credentials, cfg.PollInterval(kind))
	d.metrics.InitSecrets(name, p.src.Kind())
	cache := newCache(name, u, p.adapter, d.opt.sharingOf(cfg, name, vault), d.metrics, log, w.Kick)
	w.OnChange = func(c secrets.Credentials) {
		log.Info("credentials loaded", zap.String("credentials", u.Credentials), zap.String("version", c.Version()))
		cache.SetCredentials(c)
	}
	w.OnError = func(err error) {
		log.Warn("credentials unavailable; keeping the last good ones if any", zap.String("credentials", u.Credentials), zap.Error(err))
		cache.SetCredentialsError(err)
	}
	w.OnRead = func(kind string, err error) {
		d.metrics.SecretRead(name, kind, err)
		if err == nil {
			// Readable again (maybe the same version, which OnChange does
			// not see): the last read error no longer holds.
			cache.SetCredentialsError(nil)
		}
	}
	r := &running{
		cfg:   u,
		cache: cache,
		watch: w,
		// API calls go over the data plane's own HTTP/1.1 client, with the
		// token transport's TLS roots, proxy and max_connections; upgrades
		// too, on connections outside that bound.
		route: &proxy.Route{Name: name, Base: p.base, KeyHeaders: p.adapter.KeyHeaders(), Tokens: cache, Transport: proxy.NewClient(p.tr),
			Timeout: u.Timeout.Duration, ReplayMaxBytes: u.ReplayMaxBytes},
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.stop = cancel
	r.wg.Add(1)
	go func() { defer r.wg.Done(); w.Run(ctx) }()
	return r, nil
}

// close stops the upstream's goroutines and idle connections.
func (r *running) close() {
	r.stop()
	r.wg.Wait()
	r.cache.Close()
	r.route.Transport.CloseIdleConnections()
}
