// Command tokenproxy runs the credential-injecting proxy: services send plain
// HTTP to localhost and tokenproxy forwards it over HTTPS with the vendor's
// token. See README.md and shared/CONTRACT.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/tokenproxy/tokenproxy/internal/config"
	"github.com/tokenproxy/tokenproxy/internal/daemon"
	"github.com/tokenproxy/tokenproxy/internal/devserver"
	"github.com/tokenproxy/tokenproxy/internal/secrets"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3".
var version = ""

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

const usage = `usage:
  tokenproxy run --config FILE       run the proxy (FILE may come from $TOKENPROXY_CONFIG)
  tokenproxy validate --config FILE  check a config without touching the network
  tokenproxy dev                     simulated vendors + proxy on loopback, no Vault needed
  tokenproxy version                 print the version
`

// run returns the exit code: 0 clean, 1 runtime failure, 2 bad usage or config.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "run":
		return runDaemon(args[1:], stderr)
	case "validate":
		return validate(args[1:], stdout, stderr)
	case "dev":
		return dev(args[1:], stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, "tokenproxy", buildVersion())
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "tokenproxy: unknown command %q\n%s", args[0], usage)
	return 2
}

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "devel"
}

// configFlag parses --config, defaulting to $TOKENPROXY_CONFIG.
func configFlag(name string, args []string, stderr io.Writer) (string, bool) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", os.Getenv("TOKENPROXY_CONFIG"), "config file (YAML)")
	if err := fs.Parse(args); err != nil {
		return "", false
	}
	if *path == "" || fs.NArg() > 0 {
		fmt.Fprintf(stderr, "tokenproxy %s: --config FILE is required (or set TOKENPROXY_CONFIG)\n", name)
		return "", false
	}
	return *path, true
}

// load reads a config and prints its problems, one per line with the key path.
func load(path string, stderr io.Writer) *config.Config {
	cfg, err := config.Load(path)
	var ps *config.Problems
	switch {
	case errors.As(err, &ps):
		fmt.Fprintln(stderr, ps.Error())
		return nil
	case err != nil:
		fmt.Fprintln(stderr, "(file):", err)
		return nil
	}
	return cfg
}

func validate(args []string, stdout, stderr io.Writer) int {
	path, ok := configFlag("validate", args, stderr)
	if !ok {
		return 2
	}
	cfg, ps := config.Inspect(path)
	if cfg != nil {
		ps = append(ps, localCredentials(cfg)...)
	}
	for _, p := range ps {
		fmt.Fprintln(stderr, p.String())
	}
	if len(ps) > 0 {
		return 2
	}
	for _, w := range cfg.Warnings() {
		fmt.Fprintf(stderr, "%s: warning: %s\n", w.Path, w.Msg)
	}
	fmt.Fprintf(stdout, "%s: valid (%d upstreams)\n", path, len(cfg.Upstreams))
	return 0
}

// localCredentials reads file: and env: credentials and checks their keys;
// Vault is not contacted.
func localCredentials(cfg *config.Config) config.Problems {
	var ps config.Problems
	for _, name := range cfg.UpstreamNames() {
		u := cfg.Upstreams[name]
		kind, _, err := config.ParseRef(u.Credentials)
		if err != nil || kind == "vault" || secrets.RequiredKeys[u.Type] == nil {
			continue // already reported, or not local
		}
		src, err := secrets.Open(u.Credentials, nil)
		if err == nil {
			var c secrets.Credentials
			if c, err = src.Read(context.Background()); err == nil {
				err = secrets.Check(u.Type, c)
			}
		}
		if err != nil {
			ps = append(ps, config.Problem{Path: "upstreams." + name + ".credentials", Msg: err.Error()})
		}
	}
	return ps
}

func runDaemon(args []string, stderr io.Writer) int {
	path, ok := configFlag("run", args, stderr)
	if !ok {
		return 2
	}
	cfg := load(path, stderr)
	if cfg == nil {
		return 2
	}
	d, err := daemon.New(cfg, path, daemon.Options{Version: buildVersion()})
	if err != nil {
		fmt.Fprintln(stderr, "tokenproxy:", err)
		return 1
	}
	return d.Run(context.Background(), signals())
}

func signals() <-chan os.Signal {
	ch := make(chan os.Signal, 4)
	signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	return ch
}

func dev(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	fs.SetOutput(stderr)
	opt := devserver.Options{}
	fs.StringVar(&opt.Listen, "listen", config.DefaultListen, "data plane address")
	fs.StringVar(&opt.AdminListen, "admin-listen", config.DefaultAdminListen, "admin plane address")
	fs.StringVar(&opt.LogLevel, "log-level", "info", "debug | info | warn | error")
	fs.DurationVar(&opt.TokenLifetime, "token-lifetime", time.Hour, "lifetime of the simulators' tokens (try 30s to watch refreshes)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	env, err := devserver.Start(opt)
	if err != nil {
		fmt.Fprintln(stderr, "tokenproxy dev:", err)
		return 1
	}
	defer env.Close()
	d, err := daemon.New(env.Config, "", daemon.Options{
		Version:       buildVersion(),
		OpenSource:    env.OpenSource,
		ExtraRootsPEM: env.CAPEM,
		OnListening: func(data, admin net.Addr) {
			devserver.PrintTry(stdout, data.String(), admin.String())
		},
	})
	if err != nil {
		fmt.Fprintln(stderr, "tokenproxy dev:", err)
		return 1
	}
	return d.Run(context.Background(), signals())
}
