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
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/tokenproxy/tokenproxy/internal/config"
	"github.com/tokenproxy/tokenproxy/internal/daemon"
	"github.com/tokenproxy/tokenproxy/internal/devserver"
	"github.com/tokenproxy/tokenproxy/internal/suggest"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

// Exit codes (CONTRACT.md §1).
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// command is one verb of the binary.
type command struct {
	name     string
	synopsis string // after "tokenproxy "
	summary  string // one line, for the list of commands
	about    string // a paragraph, for the command's own --help
	run      func(cmd *command, args []string, stdout, stderr io.Writer) int
}

// commands in the order the usage lists them; set in init, as help reads it.
var commands []*command

func init() {
	commands = []*command{
		{"run", "run --config FILE", "run the proxy",
			"Runs the proxy. FILE may also come from $TOKENPROXY_CONFIG. Exits 0 after a clean\n" +
				"shutdown (SIGTERM, SIGINT), 1 on a runtime failure, 2 on a bad config.",
			runDaemon},
		{"validate", "validate --config FILE [--offline]", "check a config; every problem, one per line",
			"Checks a config without touching the network: every problem on stderr, one per line,\n" +
				"each starting with its key path; exit 0 when valid, 2 otherwise. It also reads what\n" +
				"the config points to on this machine (file: and env: credentials, ca_file bundles),\n" +
				"unless --offline.",
			validate},
		{"check", "check --config FILE", "fetch one token per upstream, then exit",
			"Reads every upstream's credentials and fetches one token per upstream, as the proxy\n" +
				"does at start, without binding a listener: a pre-deploy smoke test or an init\n" +
				"container step. Each upstream gets at most its token_timeout, credential read\n" +
				"included. Prints one line per upstream on stdout, \"<name>: ok, token valid until\n" +
				"<RFC 3339>\" or \"<name>: <reason>\"; exit 0 when all succeeded, 1 otherwise, 2 on a\n" +
				"bad config. Never prints a credential or a token.",
			check},
		{"dev", "dev [--listen ADDR] [--admin-listen ADDR] [--token-lifetime D]", "simulated vendors and the proxy on loopback",
			"Starts simulators of the four vendor APIs on loopback and the proxy in front of them,\n" +
				"with in-memory demo credentials, and prints curl lines to try. Needs no Vault.",
			dev},
		{"version", "version", "print the version, commit and build date",
			"Prints the version, the commit it was built from and the build date.",
			printVersion},
		{"help", "help [COMMAND]", "print this help, or a command's",
			"Prints the list of commands, or the usage of COMMAND.",
			help},
	}
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: tokenproxy COMMAND [flags]")
	fmt.Fprintln(w, "\ncommands:")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-9s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\n\"tokenproxy COMMAND --help\" prints a command's flags.")
}

func find(name string) *command {
	for _, c := range commands {
		if c.name == name {
			return c
		}
	}
	return nil
}

func commandNames() []string {
	names := make([]string, len(commands))
	for i, c := range commands {
		names[i] = c.name
	}
	return names
}

// run returns the exit code: 0 clean, 1 runtime failure, 2 bad usage or config.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return exitUsage
	}
	switch args[0] {
	case "-h", "-help", "--help":
		usage(stdout)
		return exitOK
	case "-version", "--version":
		args[0] = "version"
	}
	c := find(args[0])
	if c == nil {
		fmt.Fprintf(stderr, "tokenproxy: unknown command %q%s\n\n", args[0], suggest.DidYouMean(args[0], commandNames()))
		usage(stderr)
		return exitUsage
	}
	return c.run(c, args[1:], stdout, stderr)
}

// flags is a command's flag set, parsed by parse.
func (c *command) flags() *flag.FlagSet {
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // parse reports errors and help itself
	return fs
}

// printUsage writes the command's synopsis, paragraph and flags.
func (c *command) printUsage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintf(w, "usage: tokenproxy %s\n\n%s\n", c.synopsis, c.about)
	if fs == nil {
		return
	}
	first := true
	fs.VisitAll(func(f *flag.Flag) {
		if first {
			fmt.Fprintln(w, "\nflags:")
			first = false
		}
		kind, text := flag.UnquoteUsage(f)
		name := "--" + f.Name
		if kind != "" {
			name += " " + strings.ToUpper(kind)
		}
		if f.DefValue != "" && f.DefValue != "false" {
			text += " (default " + f.DefValue + ")"
		}
		fmt.Fprintf(w, "  %-24s %s\n", name, text)
	})
}

// parse parses args into fs. It returns done with the exit code when the
// command should not go on: help asked for (-h or --help anywhere before
// "--": usage on stdout, 0), an unknown flag (with the nearest known one),
// a bad flag value, or an argument the command does not take (2).
func (c *command) parse(fs *flag.FlagSet, args []string, stdout, stderr io.Writer) (done bool, code int) {
	if done, code := c.parseArgs(fs, args, stdout, stderr); done {
		return done, code
	}
	if fs.NArg() > 0 {
		extra := fs.Arg(0)
		msg := fmt.Sprintf("unexpected argument %q: %s takes none", extra, c.name)
		if f := fs.Lookup("config"); f != nil && f.Value.String() == "" {
			msg += fmt.Sprintf("; the config file goes after --config (tokenproxy %s --config %s)", c.name, extra)
		}
		fmt.Fprintf(stderr, "tokenproxy %s: %s\n", c.name, msg)
		return true, exitUsage
	}
	return false, exitOK
}

// parseArgs is parse for a command that takes arguments besides flags.
func (c *command) parseArgs(fs *flag.FlagSet, args []string, stdout, stderr io.Writer) (done bool, code int) {
	err := fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) || (err == nil && wantsHelp(args, fs.Args())) {
		c.printUsage(stdout, fs)
		return true, exitOK
	}
	if err != nil {
		msg := err.Error()
		if name, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
			var known []string
			fs.VisitAll(func(f *flag.Flag) { known = append(known, f.Name) })
			msg = fmt.Sprintf("unknown flag %q", "--"+strings.TrimPrefix(name, "-"))
			if n := suggest.Nearest(strings.TrimPrefix(name, "-"), known); n != "" {
				msg += fmt.Sprintf("; did you mean %q?", "--"+n)
			}
		}
		fmt.Fprintf(stderr, "tokenproxy %s: %s\n(\"tokenproxy %s --help\" lists its flags)\n", c.name, msg, c.name)
		return true, exitUsage
	}
	return false, exitOK
}

// wantsHelp reports whether -h or --help stands among rest, the arguments
// left after the flags of args, before any "--".
func wantsHelp(args, rest []string) bool {
	if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
		return false // flag parsing ended at "--": what follows is not a flag
	}
	for _, a := range rest {
		switch a {
		case "--":
			return false
		case "-h", "-help", "--help":
			return true
		}
	}
	return false
}

// configFlag defines --config, defaulting to $TOKENPROXY_CONFIG.
func configFlag(fs *flag.FlagSet) *string {
	return fs.String("config", os.Getenv("TOKENPROXY_CONFIG"), "the config `FILE` (YAML); $TOKENPROXY_CONFIG by default")
}

// needConfig reports whether a config file was named, and says so when not.
func (c *command) needConfig(path string, stderr io.Writer) bool {
	if path == "" {
		fmt.Fprintf(stderr, "tokenproxy %s: --config FILE is required (or set TOKENPROXY_CONFIG)\n", c.name)
		return false
	}
	return true
}

// load reads a config and prints its problems, one per line with the key
// path (or the file's name and line).
func load(path string, stderr io.Writer) *config.Config {
	cfg, err := config.Load(path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return nil
	}
	return cfg
}

func validate(c *command, args []string, stdout, stderr io.Writer) int {
	fs := c.flags()
	path := configFlag(fs)
	offline := fs.Bool("offline", false, "check the config file alone: read no credentials, CA bundle or other file it points to (for CI without the secrets)")
	if done, code := c.parse(fs, args, stdout, stderr); done {
		return code
	}
	if !c.needConfig(*path, stderr) {
		return exitUsage
	}
	cfg, ps := daemon.Validate(*path, daemon.Options{}, !*offline)
	if *offline {
		// Away from where it runs, an environment variable the config
		// relies on is not a problem of the file: say so, and go on.
		var fileOnly config.Problems
		for _, p := range ps {
			if p.Env == "" {
				fileOnly = append(fileOnly, p)
				continue
			}
			fmt.Fprintf(stderr, "%s: warning: not in the file; $%s must be set where tokenproxy runs\n", p.Path, p.Env)
		}
		ps = fileOnly
	}
	for _, p := range ps {
		fmt.Fprintln(stderr, p.String())
	}
	if len(ps) > 0 {
		return exitUsage
	}
	for _, w := range cfg.Warnings() {
		fmt.Fprintf(stderr, "%s: warning: %s\n", w.Path, w.Msg)
	}
	note := ""
	if *offline {
		note = "; credentials and files it points to not read (--offline)"
	}
	fmt.Fprintf(stdout, "%s: valid (%d upstreams%s)\n", *path, len(cfg.Upstreams), note)
	return exitOK
}

// configFromArgs parses the flags of a command that takes only --config and
// loads the config it names. done says the command ends here with code:
// its help was shown, or a usage or config mistake was reported.
func (c *command) configFromArgs(args []string, stdout, stderr io.Writer) (cfg *config.Config, path string, done bool, code int) {
	fs := c.flags()
	p := configFlag(fs)
	if done, code := c.parse(fs, args, stdout, stderr); done {
		return nil, "", true, code
	}
	if !c.needConfig(*p, stderr) {
		return nil, "", true, exitUsage
	}
	if cfg = load(*p, stderr); cfg == nil {
		return nil, "", true, exitUsage
	}
	return cfg, *p, false, exitOK
}

func check(c *command, args []string, stdout, stderr io.Writer) int {
	cfg, _, done, code := c.configFromArgs(args, stdout, stderr)
	if done {
		return code
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	b := build()
	code = exitOK
	for _, r := range daemon.Check(ctx, cfg, daemon.Options{Version: b.version, Revision: b.commit}) {
		if r.Err != nil {
			// One line per upstream, whatever a vendor's message holds.
			fmt.Fprintf(stdout, "%s: %s\n", r.Name, strings.Join(strings.Fields(r.Err.Error()), " "))
			code = exitFailure
			continue
		}
		fmt.Fprintf(stdout, "%s: ok, token valid until %s\n", r.Name, r.Expiry.UTC().Format(time.RFC3339))
	}
	return code
}

func runDaemon(c *command, args []string, stdout, stderr io.Writer) int {
	cfg, path, done, code := c.configFromArgs(args, stdout, stderr)
	if done {
		return code
	}
	b := build()
	d, err := daemon.New(cfg, path, daemon.Options{Version: b.version, Revision: b.commit, SizeProcs: true})
	if err != nil {
		fmt.Fprintln(stderr, "tokenproxy:", err)
		return exitFailure
	}
	return d.Run(context.Background(), signals())
}

func signals() <-chan os.Signal {
	ch := make(chan os.Signal, 4)
	signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	return ch
}

func dev(c *command, args []string, stdout, stderr io.Writer) int {
	fs := c.flags()
	opt := devserver.Options{}
	fs.StringVar(&opt.Listen, "listen", config.DefaultListen, "`ADDR` of the data plane")
	fs.StringVar(&opt.AdminListen, "admin-listen", config.DefaultAdminListen, "`ADDR` of the admin plane")
	fs.StringVar(&opt.LogLevel, "log-level", "info", "log `LEVEL`: debug, info, warn or error")
	fs.DurationVar(&opt.TokenLifetime, "token-lifetime", time.Hour, "`D`, the lifetime of the simulators' tokens (try 30s to watch refreshes)")
	if done, code := c.parse(fs, args, stdout, stderr); done {
		return code
	}
	// The flags are the config here: their mistakes are usage errors,
	// named by flag (exit 2), before any simulator starts.
	bad := false
	flagOf := map[string]string{"listen": "--listen", "admin_listen": "--admin-listen"}
	for _, p := range config.ListenerProblems(opt.Listen, opt.AdminListen) {
		fmt.Fprintf(stderr, "tokenproxy dev: %s: %s\n", flagOf[p.Path], strings.ReplaceAll(p.Msg, "admin_listen", "--admin-listen"))
		bad = true
	}
	if !slices.Contains(config.LogLevels, opt.LogLevel) {
		fmt.Fprintf(stderr, "tokenproxy dev: --log-level: %q is not one of %s\n", opt.LogLevel, strings.Join(config.LogLevels, ", "))
		bad = true
	}
	if opt.TokenLifetime <= 0 {
		fmt.Fprintf(stderr, "tokenproxy dev: --token-lifetime: %s is not a lifetime; give a positive duration such as 30s\n", opt.TokenLifetime)
		bad = true
	}
	if bad {
		return exitUsage
	}
	env, err := devserver.Start(opt)
	if err != nil {
		fmt.Fprintln(stderr, "tokenproxy dev:", err)
		return exitFailure
	}
	defer env.Close()
	b := build()
	d, err := daemon.New(env.Config, "", daemon.Options{
		Version:       b.version,
		Revision:      b.commit,
		OpenSource:    env.OpenSource,
		ExtraRootsPEM: env.CAPEM,
		SizeProcs:     true,
		OnListening: func(data, admin net.Addr) {
			devserver.PrintTry(stdout, data.String(), admin.String())
		},
	})
	if err != nil {
		fmt.Fprintln(stderr, "tokenproxy dev:", err)
		return exitFailure
	}
	return d.Run(context.Background(), signals())
}

func printVersion(c *command, args []string, stdout, stderr io.Writer) int {
	if done, code := c.parse(c.flags(), args, stdout, stderr); done {
		return code
	}
	b := build()
	fmt.Fprintf(stdout, "tokenproxy %s (commit %s, built %s)\n", b.version, b.commit, b.date)
	return exitOK
}

func help(c *command, args []string, stdout, stderr io.Writer) int {
	fs := c.flags()
	if done, code := c.parseArgs(fs, args, stdout, stderr); done {
		return code
	}
	switch fs.NArg() {
	case 0:
		usage(stdout)
		return exitOK
	case 1:
		if t := find(fs.Arg(0)); t != nil {
			// The flags are defined by the command itself: ask it.
			return t.run(t, []string{"--help"}, stdout, stderr)
		}
		fmt.Fprintf(stderr, "tokenproxy help: unknown command %q%s\n", fs.Arg(0), suggest.DidYouMean(fs.Arg(0), commandNames()))
		return exitUsage
	}
	fmt.Fprintf(stderr, "tokenproxy help: unexpected argument %q: help takes one command\n", fs.Arg(1))
	return exitUsage
}
