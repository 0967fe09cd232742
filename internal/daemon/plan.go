package daemon

import (
	"reflect"
	"slices"

	"github.com/tokenproxy/tokenproxy/internal/config"
)

// plan is what a reload from one config to the next does, decided from the
// two configs alone (so that it is tested without starting anything) and
// carried out by apply.
type plan struct {
	// Keep run on with their caches, and so their warm tokens: nothing
	// they are built from changed (keep).
	Keep []string
	// Start are built afresh: new upstreams, and changed ones.
	Start []string
	// Stop are closed once the new config is in force: upstreams gone,
	// and changed ones (which are in Start too).
	Stop []string
	// Vault says the Vault client restarts: secrets.vault changed.
	Vault bool
	// CheckSharing says the sharing store is checked again (logged once):
	// the store or the Vault it lives in changed.
	CheckSharing bool
	// LogLevel says log_level changed, so the new one replaces whatever
	// level is in force (one set at /loglevel included).
	LogLevel bool
	// AtRestart are the changed keys that only a restart applies.
	AtRestart []string
}

// planReload is the plan of a reload from old to cfg. Every list is in
// name order.
func planReload(old, cfg *config.Config) plan {
	var p plan
	for _, name := range cfg.UpstreamNames() {
		switch _, had := old.Upstreams[name]; {
		case keep(old, cfg, name):
			p.Keep = append(p.Keep, name)
		case had:
			p.Start, p.Stop = append(p.Start, name), append(p.Stop, name)
		default:
			p.Start = append(p.Start, name)
		}
	}
	for _, name := range old.UpstreamNames() {
		if _, ok := cfg.Upstreams[name]; !ok {
			p.Stop = append(p.Stop, name)
		}
	}
	slices.Sort(p.Stop)
	p.Vault = !reflect.DeepEqual(cfg.Secrets.Vault, old.Secrets.Vault)
	p.CheckSharing = p.Vault || !reflect.DeepEqual(cfg.Sharing, old.Sharing)
	p.LogLevel = cfg.LogLevel != old.LogLevel
	_, p.AtRestart = inForce(old, cfg)
	return p
}

// restartOnly are the settings that only a restart applies: the listeners
// are bound, their servers built and the tracer started once, at start.
// field reaches the setting in a config, as a pointer.
var restartOnly = []struct {
	key   string
	field func(*config.Config) any
}{
	{"listen", func(c *config.Config) any { return &c.Listen }},
	{"admin_listen", func(c *config.Config) any { return &c.AdminListen }},
	{"read_header_timeout", func(c *config.Config) any { return &c.ReadHeaderTimeout }},
	{"tracing", func(c *config.Config) any { return &c.Tracing }},
}

// inForce is cfg as a reload from running puts it in force: every
// restart-only setting keeps running's value, so that /config shows what
// serves (README: "the config in force"). pending are the keys whose value
// in cfg waits for a restart, in restartOnly's order; a later reload from
// the config returned names them again while the file still differs.
func inForce(running, cfg *config.Config) (next *config.Config, pending []string) {
	c := *cfg
	for _, s := range restartOnly {
		have, want := reflect.ValueOf(s.field(running)).Elem(), reflect.ValueOf(s.field(&c)).Elem()
		if !reflect.DeepEqual(have.Interface(), want.Interface()) {
			pending = append(pending, s.key)
			want.Set(have)
		}
	}
	return &c, pending
}

// keep reports whether upstream name may keep its running cache, and so its
// warm token, across a reload from old to cfg: nothing it is built from
// changed (its settings, the Vault its credentials or shared token come
// from, how it shares). A new secrets.poll_interval alone is applied to the
// running watch (SetInterval): re-reading more or less often changes no
// credential, and a new cache would mint a token the vendor may refuse
// while the first is live (Inspera's 409).
func keep(old, cfg *config.Config, name string) bool {
	u, ok := cfg.Upstreams[name]
	was, had := old.Upstreams[name]
	if !ok || !had || !reflect.DeepEqual(u, was) {
		return false
	}
	kind, _, _ := config.ParseRef(u.Credentials)
	vaultSame := reflect.DeepEqual(cfg.Secrets.Vault, old.Secrets.Vault)
	switch {
	case kind == "vault" && !vaultSame,
		cfg.IsShared(name) != old.IsShared(name),
		cfg.IsShared(name) && (!vaultSame || !reflect.DeepEqual(cfg.Sharing, old.Sharing)):
		return false
	}
	return true
}
