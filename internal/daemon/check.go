package daemon

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/tokenproxy/tokenproxy/internal/broker"
	"github.com/tokenproxy/tokenproxy/internal/config"
	"github.com/tokenproxy/tokenproxy/internal/secrets"
	"github.com/tokenproxy/tokenproxy/internal/upstream"
)

// CheckResult is the outcome of `tokenproxy check` for one upstream.
type CheckResult struct {
	Name   string
	Expiry time.Time // when the token obtained expires; zero when none was
	// Err is why no token was had. Its message never holds a credential or
	// a token (the broker scrubs what a vendor echoes).
	Err error
}

// Check does for every upstream of cfg what `tokenproxy run` does at start
// (CONTRACT.md §1, `tokenproxy check`): reads its credentials and fetches
// one token, with the daemon's own parts (build, newCache), and binds no
// listener. Upstreams are checked at once, each within its token_timeout,
// which bounds the credential read (a Vault login included) and the token
// request together, so that the whole check ends within the largest
// token_timeout. A cancelled ctx ends every check. Results are in name order.
func Check(ctx context.Context, cfg *config.Config, opt Options) []CheckResult {
	opt.defaults()
	log := opt.logger(level(cfg.LogLevel))
	defer log.Sync()
	vault, stopVault, vaultErr := startVault(cfg.Secrets.Vault, log, nil)
	if vaultErr == nil {
		defer stopVault()
	}
	// A store the fleet cannot use would leave every replica minting alone
	// (and meeting a one-token-per-user vendor's 409s): a smoke test fails
	// on it rather than passing on tokens minted alone.
	var storeErr error
	if vaultErr == nil && cfg.Sharing != nil {
		sctx, cancel := context.WithTimeout(ctx, maxTokenTimeout(cfg))
		storeErr = sharingProblem(sctx, cfg, vault)
		cancel()
	}
	names := cfg.UpstreamNames()
	results := make([]CheckResult, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		u := cfg.Upstreams[name]
		results[i].Name = name
		if kind, _, _ := config.ParseRef(u.Credentials); kind == "vault" && vaultErr != nil {
			results[i].Err = fmt.Errorf("credentials unavailable: %w", vaultErr)
			continue
		}
		if storeErr != nil && cfg.IsShared(name) {
			results[i].Err = fmt.Errorf("shared token store unusable: %w", storeErr)
			continue
		}
		wg.Go(func() {
			results[i].Expiry, results[i].Err = opt.checkOne(ctx, name, u, opt.sharingOf(cfg, name, vault), vault, log.With(zap.String("upstream", name)))
		})
	}
	wg.Wait()
	return results
}

// checkOne obtains one token for upstream name within its token_timeout
// and returns the token's expiry.
func (opt *Options) checkOne(ctx context.Context, name string, u config.Upstream, sh *broker.Sharing, vault *secrets.Vault, log *zap.Logger) (time.Time, error) {
	budget := u.TokenTimeout.Duration
	ctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	p, err := opt.build(name, u, vault)
	if err != nil {
		return time.Time{}, err
	}
	defer p.tr.CloseIdleConnections()

	creds, err := secrets.Load(ctx, p.src, u.RequiredKeys(), u.Credentials)
	if err != nil {
		if why := ended(ctx, budget, "credentials not read", err); why != nil {
			return time.Time{}, why
		}
		return time.Time{}, fmt.Errorf("credentials unavailable: %w", err)
	}
	log.Info("credentials loaded", zap.String("credentials", u.Credentials), zap.String("version", creds.Version()))

	// With sharing (CONTRACT.md §7), a valid stored token is used without a
	// vendor call, and one is minted under the lease only when there is none.
	cache := newCache(name, u, p.adapter, sh, nil, log, nil)
	defer cache.Close()
	cache.SetCredentials(creds)
	tok, err := cache.Token(ctx)
	if err != nil {
		// The broker's own timeout is the same token_timeout, begun after
		// the read: whichever fired, the budget is what ran out.
		if why := ended(ctx, budget, "no token", errors.New("the token endpoint did not answer in time")); why != nil {
			return time.Time{}, why
		}
		if e, ok := broker.AsError(err); ok {
			return time.Time{}, errors.New(strings.TrimPrefix(e.Msg, name+": "))
		}
		return time.Time{}, err
	}
	return tok.Expiry, nil
}

// maxTokenTimeout is the largest token_timeout of cfg's upstreams.
func maxTokenTimeout(cfg *config.Config) time.Duration {
	var d time.Duration
	for _, u := range cfg.Upstreams {
		d = max(d, u.TokenTimeout.Duration)
	}
	return d
}

// ended says, when ctx has ended, why in words for a person: what had not
// happened within the budget (and err, the detail, unless it is only the
// deadline again), or that the check was interrupted. Nil while ctx lives.
func ended(ctx context.Context, budget time.Duration, what string, err error) error {
	// The deadline may have passed a moment before ctx's timer says so.
	deadline, hasDeadline := ctx.Deadline()
	switch {
	case errors.Is(ctx.Err(), context.Canceled):
		return errors.New("interrupted")
	case ctx.Err() == nil && (!hasDeadline || time.Now().Before(deadline)):
		return nil
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s within token_timeout (%s)", what, budget)
	}
	return fmt.Errorf("%s within token_timeout (%s): %w", what, budget, err)
}

// Validate reads the config at path and returns every problem `tokenproxy
// validate` reports, each on its key path with its line: the file's own
// (config.Inspect) and, with local, what the file points to on this machine
// (LocalProblems). The config is nil when the file could not be decoded.
// validate and every reload call it, so that a reload rejects exactly what
// validate rejects (CONTRACT.md §1).
func Validate(path string, opt Options, local bool) (*config.Config, config.Problems) {
	cfg, ps := config.Inspect(path)
	if cfg != nil && local {
		ps = append(ps, LocalProblems(cfg, opt)...)
	}
	return cfg, ps
}

// LocalProblems checks, as the daemon would load them and without touching
// the network, what cfg points to on this machine: each upstream's ca_file
// and file: or env: credentials (every key the type needs), and Vault's
// ca_file. Vault itself is not contacted. Problems are on their key paths,
// for `tokenproxy validate`, a reload (through Validate) and start-up.
// Vault credentials are not checked: that needs the network.
func LocalProblems(cfg *config.Config, opt Options) config.Problems {
	opt.defaults()
	var ps config.Problems
	for _, name := range cfg.UpstreamNames() {
		u := cfg.Upstreams[name]
		p := "upstreams." + name
		if u.CAFile != "" {
			if _, err := upstream.Transport(u.CAFile); err != nil {
				msg := strings.TrimPrefix(strings.TrimPrefix(err.Error(), "ca_file"), ": ")
				ps = append(ps, cfg.Locate(config.Problem{Path: p + ".ca_file", Msg: strings.TrimSpace(msg)}))
			}
		}
		kind, _, err := config.ParseRef(u.Credentials)
		if err != nil || kind == "vault" || u.RequiredKeys() == nil {
			continue // reported by Validate already, or not on this machine
		}
		src, err := opt.OpenSource(u.Credentials, nil)
		if err == nil {
			_, err = secrets.Load(context.Background(), src, u.RequiredKeys(), u.Credentials)
		}
		if err != nil {
			ps = append(ps, cfg.Locate(config.Problem{Path: p + ".credentials", Msg: err.Error()}))
		}
	}
	if v := cfg.Secrets.Vault; v != nil && v.CAFile != "" {
		if _, err := secrets.NewVault(v, nil); err != nil {
			if msg, ok := strings.CutPrefix(err.Error(), "vault: ca_file: "); ok {
				ps = append(ps, cfg.Locate(config.Problem{Path: "secrets.vault.ca_file", Msg: msg}))
			} else {
				ps = append(ps, cfg.Locate(config.Problem{Path: "secrets.vault", Msg: err.Error()}))
			}
		}
	}
	return ps
}
