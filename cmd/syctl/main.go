// Command syctl is Switchyard's operator CLI: it drives the control plane's
// REST API (apply desired state, change weights, run canaries, roll back,
// shadow, read history, audit and proxies).
//
// Exit codes (stable; scripts may rely on them):
//
//	0  success
//	1  API or other error (validation errors, unreachable server, ...)
//	2  usage error (unknown command or flag, bad arguments, bad config file)
//	3  not found (model, revision)
//	4  conflict (stale revision: the model changed since it was read)
//	5  unauthorized or forbidden (missing/invalid token, role too low)
//
// See docs/cli.md for every command with example output.
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/switchyard-dev/switchyard/api"

	"go.yaml.in/yaml/v3"

	"github.com/switchyard-dev/switchyard/cmd/syctl/internal/client"
	"github.com/switchyard-dev/switchyard/internal/tlsutil"
)

// Exit codes.
const (
	exitOK           = 0
	exitError        = 1
	exitUsage        = 2
	exitNotFound     = 3
	exitConflict     = 4
	exitUnauthorized = 5
)

// DefaultServer is the control plane's API address when neither --server,
// SYCTL_SERVER nor the config file name one.
const DefaultServer = "http://127.0.0.1:7070"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}

// usageError is a mistake in the command line (exit 2).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

// notFoundError is a local "not found" (exit 3).
type notFoundError struct{ msg string }

func (e notFoundError) Error() string { return e.msg }

// app holds what every command needs.
type app struct {
	ctx    context.Context
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	getenv func(string) string

	// Global flags.
	server, token, config, output string
	timeout                       time.Duration
	// TLS to the control plane (and the proxies' admin pages): the CA
	// its certificate chains to, a client certificate for mTLS.
	ca, cert, key string
	tlsConfig     *tls.Config // nil: the defaults (system roots, no client certificate)

	api *client.Client
	// forceCommand is the running command repeated with --force, for a
	// "force" hint ("": the command has no --force).
	forceCommand string
}

type cmdFunc func(a *app, args []string) error

type command struct {
	name, usage, summary string
	run                  cmdFunc
}

func commands() []command {
	return []command{
		{"apply", "apply -f FILE|- [--revision N]", "create or replace models from a YAML or JSON desired-state file", cmdApply},
		{"get", "get models | get model NAME", "list models or show one", cmdGet},
		{"describe", "describe model NAME [--proxy-admin URL]", "show a model's versions, weights, canary, shadow, fallback and live state", cmdDescribe},
		{"delete", "delete model NAME [--revision N] [--reason TEXT]", "delete a model", cmdDelete},
		{"weights", "weights set MODEL v1=80 v2=20 [--reason TEXT] [--revision N]", "change a model's traffic weights", cmdWeights},
		{"canary", "canary start|pause|resume|promote|abort|reset|status MODEL", "drive a model's canary", cmdCanary},
		{"rollback", "rollback MODEL [--to REVISION] [--reason TEXT] [--wait 10s]", "restore the previous (or a named) revision", cmdRollback},
		{"shadow", "shadow set MODEL --version V --percent P [--mode M --k K] | shadow off MODEL | shadow report MODEL [--window 5m]", "mirror traffic to a version and compare", cmdShadow},
		{"history", "history MODEL [--limit N]", "list a model's revisions", cmdHistory},
		{"audit", "audit [--model NAME] [--limit N] [--before REVISION]", "show the audit log", cmdAudit},
		{"proxies", "proxies", "list connected proxies and the config they applied", cmdProxies},
		{"version", "version", "print syctl's version and the server's state", cmdVersion},
		loadtestCommand(),
	}
}

func printUsage(w io.Writer) {
	fmt.Fprintln(w, "usage: syctl [global flags] <command> [arguments] [flags]")
	fmt.Fprintln(w, "\ncommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-9s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nglobal flags (also accepted after the command):")
	fs := flag.NewFlagSet("syctl", flag.ContinueOnError)
	a := newApp(context.Background(), nil, nil, nil, nil)
	a.globalFlags(fs)
	printFlags(w, fs)
	fmt.Fprintln(w, "\nexit codes: 0 ok, 1 API/other error, 2 usage, 3 not found, 4 conflict (stale revision), 5 unauthorized/forbidden")
	fmt.Fprintln(w, "run 'syctl <command> --help' for a command's flags")
}

// newApp is an app with the global flags' defaults.
func newApp(ctx context.Context, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) *app {
	return &app{ctx: ctx, stdin: stdin, stdout: stdout, stderr: stderr, getenv: getenv, output: "table", timeout: 2 * time.Minute}
}

func (a *app) globalFlags(fs *flag.FlagSet) {
	// Defining a flag sets its variable to the default: keep what an
	// earlier parse (global flags before the command) set.
	cur := *a
	d := newApp(nil, nil, nil, nil, nil)
	fs.StringVar(&a.server, "server", d.server, "control plane API `URL` (env SYCTL_SERVER, config file; default "+DefaultServer+")")
	fs.StringVar(&a.token, "token", d.token, "bearer `TOKEN` (env SYCTL_TOKEN, config file)")
	fs.StringVar(&a.config, "config", d.config, "config `FILE` with server and token (env SYCTL_CONFIG; default ~/.config/syctl/config.yaml)")
	fs.StringVar(&a.output, "o", d.output, "same as --output")
	fs.StringVar(&a.output, "output", d.output, "output `FORMAT`: table, wide (more columns), json or yaml")
	fs.DurationVar(&a.timeout, "timeout", d.timeout, "`DURATION` of the whole command")
	fs.StringVar(&a.ca, "ca", d.ca, "CA `FILE` the control plane's (and proxies' admin) certificate must chain to, for an https:// server (env SYCTL_CA, config file; default the system roots)")
	fs.StringVar(&a.cert, "cert", d.cert, "client certificate `FILE` for a server that wants mTLS (env SYCTL_CERT, config file); needs --key")
	fs.StringVar(&a.key, "key", d.key, "the key `FILE` of --cert (env SYCTL_KEY, config file)")
	a.server, a.token, a.config, a.output, a.timeout = cur.server, cur.token, cur.config, cur.output, cur.timeout
	a.ca, a.cert, a.key = cur.ca, cur.cert, cur.key
}

// run is syctl without the process: it returns the exit code.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	a := newApp(ctx, stdin, stdout, stderr, getenv)
	// Global flags before the command.
	gfs := flag.NewFlagSet("syctl", flag.ContinueOnError)
	gfs.SetOutput(io.Discard)
	a.globalFlags(gfs)
	if err := gfs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage(stdout)
			return exitOK
		}
		fmt.Fprintf(stderr, "error: %v\n\n", flagError(err))
		printUsage(stderr)
		return exitUsage
	}
	rest := gfs.Args()
	if len(rest) == 0 {
		printUsage(stderr)
		return exitUsage
	}
	name := rest[0]
	if name == "help" {
		printUsage(stdout)
		return exitOK
	}
	var cmd *command
	for _, c := range commands() {
		if c.name == name {
			cmd = &c
			break
		}
	}
	if cmd == nil {
		fmt.Fprintf(stderr, "error: unknown command %q\n\n", name)
		printUsage(stderr)
		return exitUsage
	}
	err := cmd.run(a, rest[1:])
	return a.report(err, cmd)
}

// exitCode lets a command that manages its own output return a code.
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit %d", int(e)) }
func (e exitCode) code() int     { return int(e) }

// report prints err and maps it to an exit code.
func (a *app) report(err error, cmd *command) int {
	if err == nil {
		return exitOK
	}
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	var ec exitCode
	if errors.As(err, &ec) {
		return ec.code()
	}
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(a.stderr, "error: %s\nusage: syctl %s\n", ue.msg, cmd.usage)
		return exitUsage
	}
	var nf notFoundError
	if errors.As(err, &nf) {
		fmt.Fprintf(a.stderr, "error: %s\n", nf.msg)
		return exitNotFound
	}
	var ae *client.APIError
	if errors.As(err, &ae) {
		a.printAPIError(ae)
		switch {
		case ae.NoEndpoint:
			return exitError
		case ae.Status == http.StatusNotFound:
			return exitNotFound
		case ae.Status == http.StatusConflict || ae.Status == http.StatusPreconditionFailed:
			return exitConflict
		case ae.Status == http.StatusUnauthorized || ae.Status == http.StatusForbidden:
			return exitUnauthorized
		}
		return exitError
	}
	fmt.Fprintf(a.stderr, "error: %v\n", err)
	return exitError
}

func (a *app) printAPIError(ae *client.APIError) {
	if ae.NoEndpoint {
		fmt.Fprintf(a.stderr, "error: %s\n", ae.Error())
		return
	}
	if len(ae.Fields) > 0 {
		fmt.Fprintf(a.stderr, "error: the API rejected the request (HTTP %d %s):\n", ae.Status, http.StatusText(ae.Status))
		for _, f := range ae.Fields {
			fmt.Fprintf(a.stderr, "  %s: %s\n", f.Field, f.Message)
		}
		return
	}
	defer a.printHints(ae.Hints)
	// A message naming an API request (POST .../canary/reset) names the
	// syctl command instead.
	model, version := modelOfPath(ae.Path), ""
	for _, h := range ae.Hints {
		model, version = first(h.Model, model), first(h.Version, version)
	}
	msg := restToCommands(ae.Error(), model, version)
	switch ae.Status {
	case http.StatusConflict:
		if ae.Revision > 0 {
			msg += fmt.Sprintf(" (current revision %d; read it again and retry)", ae.Revision)
		}
	case http.StatusUnauthorized:
		msg += " (give a token with --token, SYCTL_TOKEN or the config file)"
	}
	fmt.Fprintf(a.stderr, "error: %s (HTTP %d)\n", msg, ae.Status)
}

// modelOfPath is NAME in /v1/models/NAME/...
func modelOfPath(p string) string {
	rest, ok := strings.CutPrefix(p, "/v1/models/")
	if !ok {
		return ""
	}
	name, _, _ := strings.Cut(rest, "/")
	name, _, _ = strings.Cut(name, "?")
	return name
}

// printHints renders the actions that resolve a refusal as the commands
// to run.
func (a *app) printHints(hints []api.Hint) {
	if len(hints) == 0 {
		return
	}
	fmt.Fprintln(a.stderr, "to resolve it, run one of:")
	for _, h := range hints {
		fmt.Fprintf(a.stderr, "  %s\n      (%s)\n", a.hintCommand(h), h.Message)
	}
}

// hintCommand is the syctl command that does what a hint says, or the API
// request where syctl has none.
func (a *app) hintCommand(h api.Hint) string {
	switch h.Action {
	case api.HintCanaryAbort:
		return "syctl canary abort " + h.Model
	case api.HintCanaryReset:
		return "syctl canary reset " + h.Model + " --version " + h.Version
	case api.HintForce:
		if a.forceCommand != "" {
			return a.forceCommand
		}
	}
	req := h.Method + " " + h.Path
	if len(h.Body) > 0 {
		if b, err := json.Marshal(h.Body); err == nil {
			req += " " + string(b)
		}
	}
	return req
}

// parse parses a command's flags wherever they appear among its positional
// arguments (kubectl style) and returns the positionals. Global flags are
// accepted too. -- ends flag parsing.
func (a *app) parse(fs *flag.FlagSet, args []string) ([]string, error) {
	a.globalFlags(fs)
	fs.SetOutput(io.Discard)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fmt.Fprintf(a.stdout, "usage: syctl %s\n\nflags:\n", fs.Name())
				printFlags(a.stdout, fs)
				return nil, flag.ErrHelp
			}
			return nil, flagError(err)
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		// fs.Parse stops at the first positional or after "--".
		consumed := len(args) - len(rest)
		if consumed > 0 && args[consumed-1] == "--" {
			pos = append(pos, rest...)
			break
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
	switch a.output {
	case "table", "json", "yaml", "wide":
	default:
		return nil, usagef("--output: want table, wide, json or yaml, got %q", a.output)
	}
	return pos, a.connect()
}

// connect resolves server and token: flag, then environment, then the
// config file, then the default.
func (a *app) connect() error {
	cfgPath := a.config
	explicit := cfgPath != ""
	if cfgPath == "" {
		cfgPath = a.getenv("SYCTL_CONFIG")
		explicit = cfgPath != ""
	}
	if cfgPath == "" {
		if dir := a.getenv("XDG_CONFIG_HOME"); dir != "" {
			cfgPath = filepath.Join(dir, "syctl", "config.yaml")
		} else if home := a.getenv("HOME"); home != "" {
			cfgPath = filepath.Join(home, ".config", "syctl", "config.yaml")
		}
	}
	var cfg fileConfig
	if cfgPath != "" {
		c, err := readConfig(cfgPath)
		switch {
		case errors.Is(err, os.ErrNotExist) && !explicit:
		case err != nil:
			return usageError{err.Error()}
		default:
			cfg = c
		}
	}
	server := first(a.server, a.getenv("SYCTL_SERVER"), cfg.Server, DefaultServer)
	token := first(a.token, a.getenv("SYCTL_TOKEN"), cfg.Token)
	if !strings.Contains(server, "://") {
		server = "http://" + server
	}
	ca, cert, key := first(a.ca, a.getenv("SYCTL_CA"), cfg.CA), first(a.cert, a.getenv("SYCTL_CERT"), cfg.Cert), first(a.key, a.getenv("SYCTL_KEY"), cfg.Key)
	switch {
	case (cert == "") != (key == ""):
		return usagef("--cert and --key go together (the client certificate and its key)")
	case ca != "" || cert != "":
		c, err := tlsutil.NewClientConfig(tlsutil.Files{CA: ca, Cert: cert, Key: key}, tlsutil.ClientOptions{})
		if err != nil {
			return usageError{err.Error()}
		}
		a.tlsConfig = c
	}
	a.api = client.New(server, token)
	a.api.HTTP.Timeout = a.timeout
	if a.tlsConfig != nil {
		a.api.HTTP.Transport = &http.Transport{TLSClientConfig: a.tlsConfig}
	}
	return nil
}

// httpClient is a client for other Switchyard endpoints (the proxies'
// admin pages) with syctl's TLS settings.
func (a *app) httpClient(timeout time.Duration) *http.Client {
	hc := &http.Client{Timeout: timeout}
	if a.tlsConfig != nil {
		hc.Transport = &http.Transport{TLSClientConfig: a.tlsConfig}
	}
	return hc
}

func first(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}

// fileConfig is ~/.config/syctl/config.yaml:
//
//	server: https://127.0.0.1:7070
//	token: "…"
//	ca: /path/ca.crt      # TLS: the CA of the server's certificate
//	cert: /path/me.crt    # mTLS: a client certificate and its key
//	key: /path/me.key
type fileConfig struct {
	Server string `yaml:"server"`
	Token  string `yaml:"token"`
	CA     string `yaml:"ca"`
	Cert   string `yaml:"cert"`
	Key    string `yaml:"key"`
}

func readConfig(path string) (fileConfig, error) {
	var c fileConfig
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return c, fmt.Errorf("config file %s: %w", path, os.ErrNotExist)
		}
		return c, fmt.Errorf("config file: %w", err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return c, fmt.Errorf("config file %s: %v", path, yamlError(b, err))
	}
	if len(doc.Content) == 0 {
		return c, nil
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return c, fmt.Errorf("config file %s: line %d: want a mapping with server and token", path, root.Line)
	}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		var dst *string
		switch k.Value {
		case "server":
			dst = &c.Server
		case "token":
			dst = &c.Token
		case "ca":
			dst = &c.CA
		case "cert":
			dst = &c.Cert
		case "key":
			dst = &c.Key
		default:
			return c, fmt.Errorf("config file %s: line %d: unknown key %q (allowed keys: server, token, ca, cert, key)", path, k.Line, k.Value)
		}
		if v.Kind != yaml.ScalarNode {
			return c, fmt.Errorf("config file %s: line %d: %s: want a string", path, v.Line, k.Value)
		}
		*dst = v.Value
	}
	return c, nil
}

// cctx is the command's context with the --timeout applied.
func (a *app) cctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(a.ctx, a.timeout)
}
