// Package daemon owns the running process: it builds the upstreams a config
// names, serves the data and admin planes, reloads on SIGHUP keeping warm
// tokens, and drains on SIGTERM.
package daemon

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/term"

	"github.com/tokenproxy/tokenproxy/internal/admin"
	"github.com/tokenproxy/tokenproxy/internal/config"
	"github.com/tokenproxy/tokenproxy/internal/metrics"
	"github.com/tokenproxy/tokenproxy/internal/procs"
	"github.com/tokenproxy/tokenproxy/internal/proxy"
	"github.com/tokenproxy/tokenproxy/internal/secrets"
	"github.com/tokenproxy/tokenproxy/internal/tracing"
)

// Options are what a caller other than `tokenproxy run` (tests, `tokenproxy
// dev`) may change.
type Options struct {
	// Version and Revision say what was built: the release (v1.2.3) and
	// the VCS commit it was built from, for logs and the build_info metric.
	Version  string
	Revision string
	// OpenSource resolves a credentials reference; secrets.Open by default.
	OpenSource func(ref string, v *secrets.Vault) (secrets.Source, error)
	// ExtraRootsPEM is trusted for every upstream besides the system roots.
	ExtraRootsPEM []byte
	// LogOutput receives the JSON log lines; stderr by default.
	LogOutput zapcore.WriteSyncer
	// OnListening is told the bound addresses once both listeners are up.
	OnListening func(data, admin net.Addr)
	// ReplicaID names this process in the fleet's minting leases and in
	// minted_by (CONTRACT.md §7); <hostname>-<pid> by default.
	ReplicaID string
	// SizeProcs lets the process's GOMAXPROCS follow its load
	// (internal/procs). It changes the whole process, so only the
	// program's entry point asks for it, not tests that run a Daemon.
	SizeProcs bool

	// console: the log goes to stderr and stderr is a terminal, where a
	// person reads it: zap's console encoder instead of JSON lines.
	console bool
	// stderr: the log goes to stderr (LogOutput was not given).
	stderr bool
}

// Daemon is one tokenproxy process.
type Daemon struct {
	opt      Options
	path     string // config file, re-read on reload
	log      *zap.Logger
	level    zap.AtomicLevel
	reg      *prometheus.Registry
	metrics  *metrics.Metrics
	proxy    *proxy.Handler
	draining atomic.Bool
	flushLog func() // writes out buffered log lines; Run calls it last

	mu        sync.Mutex
	cfg       *config.Config
	ups       map[string]*running // one per upstream of cfg
	vault     *secrets.Vault
	vaultStop func()
	loadedAt  time.Time        // when cfg was read
	reloadAt  time.Time        // the last reload tried; zero before any
	reloadErr string           // why it was rejected; "" when it was not
	tracing   tracing.Provider // nil unless the config has a tracing section
}

// New builds a daemon for cfg, read from path. It does no I/O: Run binds
// the listeners and only then starts the upstreams.
func New(cfg *config.Config, path string, opt Options) (*Daemon, error) {
	opt.defaults()
	// Kept absolute: /status names the file wherever its reader stands, and
	// a reload reads the file that was started with.
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	d := &Daemon{opt: opt, path: path, cfg: cfg, ups: map[string]*running{}, loadedAt: time.Now(), flushLog: func() {}}
	d.level = zap.NewAtomicLevelAt(level(cfg.LogLevel))
	if opt.stderr && !opt.console {
		// One write(2) per request log line cost about a tenth of the data
		// plane's CPU under load (issue 12): the data plane's request lines
		// are written in batches, at most 100ms late; any other line goes
		// out at once, with those before it; all are out when Run returns.
		bw := &zapcore.BufferedWriteSyncer{WS: writeOnly{os.Stderr}, Size: 64 << 10, FlushInterval: 100 * time.Millisecond}
		opt.LogOutput, d.flushLog = bw, func() { bw.Stop() }
		d.log = zap.New(&promptCore{opt.logger(d.level).Core()})
	} else {
		d.log = opt.logger(d.level)
	}
	d.reg = prometheus.NewRegistry()
	d.metrics = metrics.New(d.reg, metrics.Build{Version: opt.Version, Revision: opt.Revision})
	metrics.WatchUpstreams(d.reg, d.upstreamStates)
	d.proxy = proxy.New(proxy.NewTable(nil), cfg.Listen, d.metrics, d.log.Named("proxy"))
	return d, nil
}

// start starts Vault and every upstream: credentials are read and tokens
// fetched at once, without waiting for traffic. On an error, what did start
// is left for closeAll.
func (d *Daemon) start() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	cfg := d.cfg
	// The checks of validate and of a reload, in their words. Credentials
	// that cannot be read do not stop the process (CONTRACT.md §1: that
	// upstream answers 503 until they can be, and its watch keeps trying);
	// anything else (a CA bundle) is a bad config.
	var bad config.Problems
	for _, p := range LocalProblems(cfg, d.opt) {
		if strings.HasSuffix(p.Path, ".credentials") {
			d.log.Error("credentials unavailable at start; the upstream answers 503 until they can be read",
				zap.String("problem", p.String()))
			continue
		}
		bad = append(bad, p)
	}
	if len(bad) > 0 {
		return &bad
	}
	vault, stop, err := startVault(cfg.Secrets.Vault, d.log, d.metrics)
	if err != nil {
		return err
	}
	d.vault, d.vaultStop = vault, stop
	if cfg.Tracing != nil {
		tp, err := tracing.Start(cfg.Tracing, d.opt.Version, d.opt.ReplicaID)
		if err != nil {
			return err
		}
		log := d.log.Named("tracing")
		otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
			log.Warn("cannot export spans", zap.String("endpoint", cfg.Tracing.Endpoint), zap.Error(err))
		}))
		d.tracing = tp
		d.proxy.SetTracer(tp)
		d.log.Info("tracing on", zap.String("endpoint", tracing.EndpointURL(cfg.Tracing.Endpoint)),
			zap.Float64("sample_ratio", cfg.Tracing.SampleRatio))
	}
	checkSharing(cfg, vault, d.log)
	for _, name := range cfg.UpstreamNames() {
		r, err := d.startUpstream(name, cfg.Upstreams[name], cfg, vault)
		if err != nil {
			return err
		}
		d.ups[name] = r
	}
	d.proxy.SetTable(d.table())
	return nil
}

func (opt *Options) defaults() {
	if opt.OpenSource == nil {
		opt.OpenSource = secrets.Open
	}
	if opt.LogOutput == nil {
		opt.LogOutput = zapcore.Lock(os.Stderr)
		opt.stderr = true
		opt.console = term.IsTerminal(int(os.Stderr.Fd()))
	}
	if opt.ReplicaID == "" {
		host, _ := os.Hostname()
		opt.ReplicaID = fmt.Sprintf("%s-%d", cmp.Or(host, "localhost"), os.Getpid())
	}
}

// logger writes JSON lines to LogOutput at level (CONTRACT.md §6), or, for
// a person at a terminal, zap's console lines: tab-separated, levels in
// colour, durations as 1.5s. Anything that reads the log (a collector, a
// pipe, a test) gets JSON.
func (opt *Options) logger(level zapcore.LevelEnabler) *zap.Logger {
	if opt.console {
		enc := zap.NewDevelopmentEncoderConfig()
		enc.EncodeTime, enc.EncodeLevel = zapcore.ISO8601TimeEncoder, zapcore.CapitalColorLevelEncoder
		return zap.New(zapcore.NewCore(zapcore.NewConsoleEncoder(enc), opt.LogOutput, level))
	}
	enc := zap.NewProductionEncoderConfig()
	enc.TimeKey, enc.EncodeTime = "ts", zapcore.ISO8601TimeEncoder
	return zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(enc), opt.LogOutput, level))
}

// writeOnly is stderr whose Sync does nothing: a flush of the log's
// buffer is a write, and fsync(2) on a pipe fails (EINVAL).
type writeOnly struct{ *os.File }

func (writeOnly) Sync() error { return nil }

// promptCore writes out its buffer after every entry but the data plane's
// request lines (logger "proxy", message "request"), so that a warning,
// an error or a start-up line is never held back. Its methods take a
// pointer: Check adds it to every entry, and a value would be copied to
// the heap each time.
type promptCore struct{ zapcore.Core }

func (c *promptCore) With(f []zapcore.Field) zapcore.Core { return &promptCore{c.Core.With(f)} }

func (c *promptCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c *promptCore) Write(e zapcore.Entry, f []zapcore.Field) error {
	err := c.Core.Write(e, f)
	if e.LoggerName != "proxy" || e.Message != "request" {
		err = errors.Join(err, c.Core.Sync())
	}
	return err
}

// Log is the daemon's logger.
func (d *Daemon) Log() *zap.Logger { return d.log }

func level(s string) zapcore.Level {
	l, err := zapcore.ParseLevel(s)
	if err != nil {
		return zapcore.InfoLevel
	}
	return l
}

// startVault starts the Vault client of vc, when there is one: it logs in
// and keeps its token alive until the returned stop is called.
func startVault(vc *config.Vault, log *zap.Logger, m *metrics.Metrics) (*secrets.Vault, func(), error) {
	if vc == nil {
		return nil, func() {}, nil
	}
	v, err := secrets.NewVault(vc, log)
	if err != nil {
		return nil, nil, err
	}
	m.InitVault()
	v.OnLogin = m.VaultLogin
	v.OnRenew = m.VaultRenewal
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); v.Run(ctx) }()
	return v, func() { cancel(); <-done }, nil
}

// table builds the routes in force from d.ups; d.mu held or not yet shared.
func (d *Daemon) table() *proxy.Table {
	routes := make([]*proxy.Route, 0, len(d.ups))
	for _, r := range d.ups {
		routes = append(routes, r.route)
	}
	return proxy.NewTable(routes)
}

// Run binds both listeners, then starts the upstreams, and serves until a
// SIGTERM or SIGINT arrives on signals (or ctx ends), reloading on SIGHUP.
// It returns the exit code: 1 when a listener cannot be bound, in which
// case no credential was read and no vendor called (CONTRACT.md §6: a pod
// crash-looping on a busy port must not hit every token endpoint on every
// restart); 2 when a file the config points to fails validate's checks
// (a CA bundle; credentials that cannot be read are logged, and the
// process runs).
func (d *Daemon) Run(ctx context.Context, signals <-chan os.Signal) int {
	defer d.flushLog()
	defer d.log.Sync()
	cfg := d.config()
	data, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		d.log.Error("cannot listen", zap.String("listen", cfg.Listen), zap.Error(err))
		return 1
	}
	adm, err := net.Listen("tcp", cfg.AdminListen)
	if err != nil {
		data.Close()
		d.log.Error("cannot listen", zap.String("admin_listen", cfg.AdminListen), zap.Error(err))
		return 1
	}
	d.log.Info("listening", zap.String("listen", data.Addr().String()), zap.String("admin_listen", adm.Addr().String()),
		zap.String("version", d.opt.Version), zap.Strings("upstreams", cfg.UpstreamNames()))
	if err := d.start(); err != nil {
		data.Close()
		adm.Close()
		d.log.Error("cannot start", zap.Error(err))
		d.closeAll()
		if _, bad := err.(*config.Problems); bad {
			return 2 // what validate rejects (CONTRACT.md §1: 2, a bad config)
		}
		return 1
	}
	dataSrv := d.proxy.Server(proxy.ServerOptions{ReadHeaderTimeout: cfg.ReadHeaderTimeout.Duration, Log: d.log.Named("http")})
	adminSrv := d.server((&admin.Server{Upstreams: d.states, Draining: &d.draining, Gatherer: d.reg, Version: d.opt.Version,
		Vault: d.vaultState, Config: d.configInfo, LogLevel: d.levelHandler()}).Handler())
	failed := make(chan error, 2)
	go func() { failed <- dataSrv.Serve(data) }()
	go func() { failed <- adminSrv.Serve(adm) }()
	if d.opt.SizeProcs {
		procsCtx, stopProcs := context.WithCancel(ctx)
		defer stopProcs()
		procs.Start(procsCtx, d.log.Named("procs"))
	}
	for _, w := range cfg.Warnings() {
		d.log.Warn(w.String())
	}
	if d.opt.OnListening != nil {
		d.opt.OnListening(data.Addr(), adm.Addr())
	}

	for {
		select {
		case sig := <-signals:
			if sig == syscall.SIGHUP {
				d.reload()
				continue
			}
			d.log.Info("signal received; draining", zap.String("signal", sig.String()))
		case <-ctx.Done():
			d.log.Info("stopping; draining")
		case err := <-failed:
			d.log.Error("listener failed", zap.Error(err))
			dataSrv.Close()
			adminSrv.Close()
			d.closeAll()
			return 1
		}
		return d.drain(dataSrv, adminSrv, signals)
	}
}

// drain turns readiness off, keeps serving for drain_delay so that load
// balancers notice, then lets in-flight requests finish within
// shutdown_timeout. A second SIGTERM or SIGINT cuts the delay short; a
// SIGHUP during it reloads.
func (d *Daemon) drain(dataSrv *proxy.Server, adminSrv *http.Server, signals <-chan os.Signal) int {
	d.draining.Store(true)
	cfg := d.config()
	delay := time.NewTimer(cfg.DrainDelay.Duration)
	defer delay.Stop()
wait:
	for {
		select {
		case <-delay.C:
			break wait
		case sig := <-signals:
			if sig == syscall.SIGHUP {
				// A reload, as before the drain: not a second signal.
				d.reload()
				continue
			}
			break wait
		}
	}
	code := 0
	ctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout.Duration)
	defer cancel()
	if err := dataSrv.Shutdown(ctx); err != nil {
		d.log.Warn("requests still in flight at shutdown_timeout; closing them", zap.Error(err))
		dataSrv.Close()
		code = 1
	}
	// Shutdown does not wait for connections that switched protocols: they
	// stay open until they end or shutdown_timeout does. Cutting one is
	// not a failure (a WebSocket may never end by itself), so the exit
	// code stays.
	switched, answers := d.proxy.CloseUpgraded(ctx)
	if switched > 0 {
		d.log.Info("upgraded connections closed at shutdown_timeout", zap.Int("connections", switched))
	}
	// An answer written on a taken-over connection (an HTTP/1.0 caller's
	// of unknown length, one given before its request body was read) is a
	// request like any other: cut off, it makes the exit code 1.
	if answers > 0 {
		d.log.Warn("answers still being written at shutdown_timeout; closed", zap.Int("answers", answers))
		code = 1
	}
	// The requests Close cut off end here, each with its log line, before
	// the log is flushed (closeAll).
	if n := d.proxy.EndRequests(ctx); n > 0 {
		d.log.Info("requests ended at shutdown_timeout", zap.Int("requests", n))
		code = 1
	}
	d.closeAll()
	adminCtx, cancelAdmin := context.WithTimeout(context.Background(), time.Second)
	defer cancelAdmin()
	if adminSrv.Shutdown(adminCtx) != nil {
		adminSrv.Close()
	}
	d.log.Info("stopped", zap.Int("exit_code", code))
	return code
}

// server is the admin plane's server.
func (d *Daemon) server(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: d.config().ReadHeaderTimeout.Duration,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          zap.NewStdLog(d.log.Named("http")),
	}
}

// reload re-reads the config file. A config that fails to validate is
// rejected and the running one stays. Upstreams whose settings did not
// change keep their caches, and so their warm tokens.
func (d *Daemon) reload() {
	err := d.apply()
	d.mu.Lock()
	d.reloadAt, d.reloadErr = time.Now(), ""
	if err != nil {
		d.reloadErr = err.Error()
	}
	d.mu.Unlock()
	d.metrics.ConfigReload(err)
	if err != nil {
		d.log.Error("config reload rejected; the running config stays", zap.String("config", d.path), zap.Error(err))
		return
	}
	d.log.Info("config reloaded", zap.String("config", d.path))
	for _, w := range d.config().Warnings() {
		d.log.Warn(w.String())
	}
}

func (d *Daemon) apply() error {
	// What validate rejects, a reload rejects, with the same words: the
	// file's problems and what it points to on this machine (credentials,
	// CA bundles), read before anything running is touched.
	// Only the latter may be excused (newProblems): the file's own
	// problems are the new config's alone.
	cfg, ps := Validate(d.path, d.opt, false)
	var local config.Problems
	if cfg != nil {
		local = LocalProblems(cfg, d.opt)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if ps = append(ps, d.newProblems(cfg, local)...); len(ps) > 0 {
		return &ps
	}
	p := planReload(d.cfg, cfg)
	cfg, _ = inForce(d.cfg, cfg)
	if len(p.AtRestart) > 0 {
		d.log.Warn("changes to these settings take effect only at restart", zap.Strings("keys", p.AtRestart))
	}
	var err error
	vault, stopVault := d.vault, func() {}
	if p.Vault {
		if vault, stopVault, err = startVault(cfg.Secrets.Vault, d.log, d.metrics); err != nil {
			return err
		}
	}
	if p.CheckSharing {
		checkSharing(cfg, vault, d.log)
	}
	next := map[string]*running{}
	for _, name := range p.Keep {
		next[name] = d.ups[name]
		kind, _, _ := config.ParseRef(cfg.Upstreams[name].Credentials)
		next[name].watch.SetInterval(cfg.PollInterval(kind))
		next[name].watch.Kick() // a reload also re-reads credentials
	}
	for _, name := range p.Start {
		r, err := d.startUpstream(name, cfg.Upstreams[name], cfg, vault)
		if err != nil {
			for _, name := range p.Start {
				if r := next[name]; r != nil {
					r.close()
				}
			}
			stopVault()
			return err
		}
		next[name] = r
	}
	prev, prevStopVault := d.ups, d.vaultStop
	d.ups, d.cfg, d.loadedAt = next, cfg, time.Now()
	d.proxy.SetTable(d.table())
	if p.LogLevel {
		// Only a new log_level: a level set at /loglevel for an incident
		// outlives a reload made for another reason.
		d.level.SetLevel(level(cfg.LogLevel))
	}
	for _, name := range p.Stop {
		prev[name].close()
		if _, kept := next[name]; !kept {
			d.metrics.Forget(name)
		}
	}
	if p.Vault {
		d.vault, d.vaultStop = vault, stopVault
		prevStopVault()
	}
	return nil
}

// newProblems is ps, the problems of what the new config points to on this
// machine (LocalProblems), without those the running config has as well: a
// file that an upstream the reload keeps as it is (or an unchanged
// secrets.vault) points to. The file's own problems never pass through
// here. Rejecting the reload for those would protect
// nothing and hold back every other change (reverting to the config in
// force included), so they are logged instead, as at start. d.mu held.
func (d *Daemon) newProblems(cfg *config.Config, ps config.Problems) config.Problems {
	var out config.Problems
	for _, p := range ps {
		if cfg != nil && d.hasToo(cfg, p.Path) {
			d.log.Warn("not rejected: the config in force has this problem too", zap.String("problem", p.String()))
			continue
		}
		out = append(out, p)
	}
	return out
}

// hasToo reports whether the key at path is one the running config has
// alike in cfg, together with everything it is read with.
func (d *Daemon) hasToo(cfg *config.Config, path string) bool {
	if rest, ok := strings.CutPrefix(path, "upstreams."); ok {
		name, _, _ := strings.Cut(rest, ".")
		return keep(d.cfg, cfg, name)
	}
	return strings.HasPrefix(path, "secrets.vault.") && reflect.DeepEqual(cfg.Secrets.Vault, d.cfg.Secrets.Vault)
}

func (d *Daemon) config() *config.Config {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cfg
}

func (d *Daemon) closeAll() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, r := range d.ups {
		r.close()
	}
	d.ups = map[string]*running{}
	if d.vaultStop != nil {
		d.vaultStop()
		d.vaultStop = nil
	}
	if d.tracing != nil {
		// The spans of the last requests are still in the batch.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := d.tracing.Shutdown(ctx); err != nil {
			d.log.Warn("spans not sent at exit", zap.Error(err))
		}
		d.tracing = nil
	}
}

// states reports every upstream for the admin plane, by name.
func (d *Daemon) states() []admin.Upstream {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]admin.Upstream, 0, len(d.ups))
	for _, r := range d.ups {
		out = append(out, admin.Upstream{Type: r.cfg.Type, Credentials: r.cfg.Credentials,
			BaseHost: host(r.cfg.BaseURL), TokenHost: host(r.cfg.TokenURL), State: r.cache.State(), Events: r.cache.Events})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (d *Daemon) upstreamStates() []metrics.UpstreamState {
	var out []metrics.UpstreamState
	for _, u := range d.states() {
		out = append(out, metrics.UpstreamState{Upstream: u.Name, Ready: u.Ready, Obtained: u.TokenObtainedAt, Expiry: u.TokenExpiresAt,
			Failures: u.Failures, NextAttempt: u.NextAttemptAt})
	}
	return out
}

// host is the host[:port] of a URL the config validated.
func host(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return u.Host
}

// vaultState is the Vault login for the admin plane; nil without Vault.
func (d *Daemon) vaultState() *secrets.VaultState {
	d.mu.Lock()
	v := d.vault
	d.mu.Unlock()
	if v == nil {
		return nil
	}
	s := v.State()
	return &s
}

// configInfo is the config in force for the admin plane.
func (d *Daemon) configInfo() admin.ConfigInfo {
	d.mu.Lock()
	defer d.mu.Unlock()
	return admin.ConfigInfo{Path: d.path, Config: d.cfg, LoadedAt: d.loadedAt, LastReloadAt: d.reloadAt, LastReloadError: d.reloadErr}
}

// levelHandler is zap's level handler (GET shows, PUT {"level":"debug"}
// changes), logging each change so that the log says why it grew.
func (d *Daemon) levelHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		before := d.level.Level()
		d.level.ServeHTTP(w, r)
		if after := d.level.Level(); after != before {
			d.log.Warn("log level changed at /loglevel", zap.Stringer("from", before), zap.Stringer("to", after),
				zap.String("remote", r.RemoteAddr))
		}
	})
}
