//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/switchyard-dev/switchyard/api"
	"github.com/switchyard-dev/switchyard/inference-backend/backend"
	"github.com/switchyard-dev/switchyard/inference-backend/demomodels"
	"github.com/switchyard-dev/switchyard/internal/tlsutil"
)

func init() {
	register("up", "the whole stack locally: control plane, proxy, backends for recommender v1, v2, v3, lite", runUp)
}

// Default ports of `switchyard up` (all on 127.0.0.1).
const (
	upAPIPort        = 7070
	upXDSPort        = 18000
	upProxyHTTPPort  = 8080
	upProxyGRPCPort  = 8081
	upProxyAdminPort = 9901
)

var (
	upBackendHTTPPorts = []int{8001, 8002, 8003, 8004}
	upBackendGRPCPorts = []int{9001, 9002, 9003, 9004}
)

// upVersion is one demo model version served by its own backend process.
type upVersion struct {
	Name  string `json:"name"`  // version name in the desired state
	Model string `json:"model"` // backend model name
}

var upVersions = []upVersion{
	{"v1", demomodels.V1}, {"v2", demomodels.V2}, {"v3", demomodels.V3}, {"lite", demomodels.Lite},
}

// upPorts are the listen ports; 0 picks a free one.
type upPorts struct {
	API, XDS, ProxyHTTP, ProxyGRPC, ProxyAdmin int
	BackendHTTP, BackendGRPC                   []int
}

// upInfo is written to STATE/up.json once the stack is ready (for scripts
// and tests) and removed when it stops.
type upInfo struct {
	PID        int             `json:"pid"`
	API        string          `json:"api"`
	XDS        string          `json:"xds"`
	ProxyHTTP  string          `json:"proxyHttp"`
	ProxyGRPC  string          `json:"proxyGrpc"`
	ProxyAdmin string          `json:"proxyAdmin"`
	Backends   []upBackendInfo `json:"backends"`
	Processes  map[string]int  `json:"processes"`
	// Exited names the children that died after start-up and are down
	// (with --restart=always, until their restart), with how they ended.
	Exited    map[string]string `json:"exited,omitempty"`
	Revision  int64             `json:"revision"`
	Model     string            `json:"model"`
	StartedAt time.Time         `json:"startedAt"`
	StateDir  string            `json:"stateDir"`
	// TLS, with --tls: the CA and the client certificate for syctl, curl
	// and tests (every listener wants a client certificate).
	TLS *upTLSInfo `json:"tls,omitempty"`
}

// upTLSInfo names the files of `switchyard up --tls` a client needs.
type upTLSInfo struct {
	CA   string `json:"ca"`
	Cert string `json:"cert"`
	Key  string `json:"key"`
}

type upBackendInfo struct {
	Version string `json:"version"`
	Model   string `json:"model"`
	HTTP    string `json:"http"`
	GRPC    string `json:"grpc"`
}

func runUp(args []string) error {
	fs := flag.NewFlagSet("switchyard up", flag.ContinueOnError)
	stateDir := fs.String("state-dir", ".state", "`DIR` for the control plane's state, demo models, the proxy's last good config and logs (created; reused on the next run)")
	p := upPorts{}
	fs.IntVar(&p.API, "api-port", upAPIPort, "control plane REST API port")
	fs.IntVar(&p.XDS, "xds-port", upXDSPort, "control plane xDS (ADS) port")
	fs.IntVar(&p.ProxyHTTP, "proxy-http-port", upProxyHTTPPort, "proxy OIP v2 REST port")
	fs.IntVar(&p.ProxyGRPC, "proxy-grpc-port", upProxyGRPCPort, "proxy OIP v2 gRPC port")
	fs.IntVar(&p.ProxyAdmin, "proxy-admin-port", upProxyAdminPort, "proxy admin port (/ready, /stats, /config_dump, /metrics)")
	bHTTP := fs.String("backend-http-ports", joinInts(upBackendHTTPPorts), "REST `PORTS` of the v1,v2,v3,lite backends")
	bGRPC := fs.String("backend-grpc-ports", joinInts(upBackendGRPCPorts), "gRPC `PORTS` of the v1,v2,v3,lite backends")
	anyPorts := fs.Bool("any-ports", false, "pick free ports instead of the defaults for every port flag not given (a port flag of 0 does this for one port)")
	keep := fs.Bool("keep-state", false, "keep a stored recommender model instead of applying the starting state")
	readyTimeout := fs.Duration("ready-timeout", 90*time.Second, "how long to wait for every process to become ready")
	restart := fs.String("restart", restartAlways, "what to do when a child process dies after start-up: "+restartAlways+" (start it again, with backoff 1s, 2s, 4s … 30s) or "+restartNever+" (leave it down: for demos and tests that kill processes on purpose)")
	useTLS := fs.Bool("tls", false, "run the stack on mTLS: a development CA and certificates in STATE/tls (the CA is kept across runs; certificates are issued anew), every listener on TLS with client certificates, the proxy's dials to the control plane and the backends with its certificate; syctl and curl need --ca/--cert/--key (printed)")
	ortLib := fs.String("ort-lib", "", "ONNX Runtime shared library for the backends (default: $"+backend.EnvORTLibrary+", else third_party/onnxruntime/ above the working directory or this binary)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	var err error
	if p.BackendHTTP, err = parsePorts("--backend-http-ports", *bHTTP, len(upVersions)); err != nil {
		return err
	}
	if p.BackendGRPC, err = parsePorts("--backend-grpc-ports", *bGRPC, len(upVersions)); err != nil {
		return err
	}
	if *restart != restartAlways && *restart != restartNever {
		return fmt.Errorf("--restart: want %s or %s, got %q", restartAlways, restartNever, *restart)
	}
	if *readyTimeout <= 0 {
		return fmt.Errorf("--ready-timeout: want > 0, got %s", *readyTimeout)
	}
	if *anyPorts {
		// Free ports for every port flag not given explicitly.
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		for name, port := range map[string]*int{"api-port": &p.API, "xds-port": &p.XDS, "proxy-http-port": &p.ProxyHTTP,
			"proxy-grpc-port": &p.ProxyGRPC, "proxy-admin-port": &p.ProxyAdmin} {
			if !set[name] {
				*port = 0
			}
		}
		if !set["backend-http-ports"] {
			p.BackendHTTP = make([]int, len(upVersions))
		}
		if !set["backend-grpc-ports"] {
			p.BackendGRPC = make([]int, len(upVersions))
		}
	}
	if err := resolvePorts(&p); err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	u := &upStack{ports: p, stateDir: *stateDir, keep: *keep, readyTimeout: *readyTimeout, ortLib: *ortLib, tls: *useTLS,
		restart: *restart == restartAlways, out: os.Stdout, logw: os.Stderr, stopCh: make(chan struct{})}
	return u.run(ctx)
}

func joinInts(xs []int) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = strconv.Itoa(x)
	}
	return strings.Join(s, ",")
}

func parsePorts(flagName, s string, n int) ([]int, error) {
	parts := strings.Split(s, ",")
	if len(parts) != n {
		return nil, fmt.Errorf("%s: want %d comma-separated ports (v1,v2,v3,lite), got %q", flagName, n, s)
	}
	out := make([]int, n)
	for i, p := range parts {
		v, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil || v < 0 || v > 65535 {
			return nil, fmt.Errorf("%s: %q is not a port (0..65535)", flagName, p)
		}
		out[i] = v
	}
	return out, nil
}

// resolvePorts checks that every fixed port is free on 127.0.0.1 and picks
// free ports for the zeros. A taken port is a clear error naming its flag.
func resolvePorts(p *upPorts) error {
	type slot struct {
		port *int
		what string
		flag string
	}
	slots := []slot{
		{&p.API, "control plane API", "--api-port"}, {&p.XDS, "control plane xDS", "--xds-port"},
		{&p.ProxyHTTP, "proxy HTTP", "--proxy-http-port"}, {&p.ProxyGRPC, "proxy gRPC", "--proxy-grpc-port"},
		{&p.ProxyAdmin, "proxy admin", "--proxy-admin-port"},
	}
	for i, v := range upVersions {
		slots = append(slots,
			slot{&p.BackendHTTP[i], "backend " + v.Name + " HTTP", "--backend-http-ports"},
			slot{&p.BackendGRPC[i], "backend " + v.Name + " gRPC", "--backend-grpc-ports"})
	}
	seen := map[int]string{}
	// Hold every listener until all are chosen, so free picks never collide.
	var held []net.Listener
	defer func() {
		for _, l := range held {
			l.Close()
		}
	}()
	for _, s := range slots {
		if *s.port != 0 {
			if other, dup := seen[*s.port]; dup {
				return fmt.Errorf("port %d is given for both %s and %s", *s.port, other, s.what)
			}
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(*s.port)))
		if err != nil {
			return fmt.Errorf("port %d (%s, %s) is taken on 127.0.0.1: %v; stop what uses it, choose another port with %s, or use --any-ports",
				*s.port, s.what, s.flag, errors.Unwrap(err), s.flag)
		}
		held = append(held, l)
		*s.port = l.Addr().(*net.TCPAddr).Port
		seen[*s.port] = s.what
	}
	return nil
}

// upStack runs and supervises the child processes.
type upStack struct {
	ports        upPorts
	stateDir     string
	keep         bool
	readyTimeout time.Duration
	ortLib       string
	tls          bool         // --tls
	pki          *upPKI       // with --tls: the files in STATE/tls
	hc           *http.Client // up's own calls (mTLS with syctl's certificate under --tls)
	out, logw    io.Writer

	restart bool // start a child again when it dies after start-up

	exe      string
	mu       sync.Mutex
	children []*upChild
	stopping bool
	stopCh   chan struct{} // closed when stopping
	ready    bool          // everything came up; later exits are reported
	info     upInfo        // written to up.json; pids updated on restarts
	infoPath string
}

type upChild struct {
	name    string
	args    []string
	cmd     *exec.Cmd
	log     string
	done    chan struct{}
	err     error
	started time.Time
	// restarts counts the restarts in a row that did not stay up for
	// restartStable (they set the backoff).
	restarts int
}

// --restart values.
const (
	restartAlways = "always"
	restartNever  = "never"
)

// restartStable is how long a restarted child must stay up for its backoff
// to start again from the first step.
const restartStable = 30 * time.Second

// restartDelay is the backoff before restart number n (1, 2, ...) of a
// child in a row: 1s, 2s, 4s, ... at most 30s. Pure.
func restartDelay(n int) time.Duration {
	d := time.Second
	for i := 1; i < n && d < 30*time.Second; i++ {
		d *= 2
	}
	return min(d, 30*time.Second)
}

// nextRestart is the restart count of a child that ran for ran after
// prev restarts in a row: a child that stayed up restartStable starts
// over. Pure.
func nextRestart(prev int, ran time.Duration) int {
	if ran >= restartStable {
		return 1
	}
	return prev + 1
}

func addr(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

func (u *upStack) run(ctx context.Context) (err error) {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find the switchyard binary: %w", err)
	}
	u.exe = exe
	// Find ONNX Runtime once, here, so a missing library is one clear
	// error before anything starts.
	if u.ortLib, err = backend.FindORTLibrary(u.ortLib); err != nil {
		return err
	}
	dirs := map[string]string{}
	for _, d := range []string{"", "logs", "models", "proxy"} {
		p := filepath.Join(u.stateDir, d)
		if err := os.MkdirAll(p, 0o755); err != nil {
			return fmt.Errorf("state folder: %w", err)
		}
		dirs[d] = p
	}
	infoPath := filepath.Join(u.stateDir, "up.json")
	u.infoPath = infoPath
	os.Remove(infoPath)
	defer func() {
		os.Remove(infoPath)
		if serr := u.stopAll(); err == nil {
			err = serr
		}
	}()

	// Demo models: one repository per version, so each backend serves one.
	for _, v := range upVersions {
		if err := demomodels.WriteModel(filepath.Join(dirs["models"], v.Name), v.Model, "1"); err != nil {
			return fmt.Errorf("write demo model %s: %w", v.Model, err)
		}
	}
	fmt.Fprintf(u.logw, "switchyard up: state in %s, logs in %s\n", u.stateDir, dirs["logs"])

	p := u.ports
	u.hc = &http.Client{Timeout: 10 * time.Second}
	scheme := "http://"
	var cpTLS, beTLS, pxTLS []string
	if u.tls {
		if u.pki, err = writeUpPKI(filepath.Join(u.stateDir, "tls")); err != nil {
			return fmt.Errorf("--tls: %w", err)
		}
		k := u.pki
		cc, err := tlsutil.NewClientConfig(tlsutil.Files{CA: k.ca, Cert: k.file("syctl", ".crt"), Key: k.file("syctl", ".key")}, tlsutil.ClientOptions{})
		if err != nil {
			return fmt.Errorf("--tls: %w", err)
		}
		u.hc.Transport = &http.Transport{TLSClientConfig: cc}
		scheme = "https://"
		cpTLS = k.serverArgs("controlplane")
		beTLS = k.serverArgs("backend")
		pxTLS = append(k.serverArgs("proxy"),
			"--control-plane-ca", k.ca, "--control-plane-cert", k.file("proxy", ".crt"), "--control-plane-key", k.file("proxy", ".key"),
			"--upstream-ca", k.ca, "--upstream-cert", k.file("proxy", ".crt"), "--upstream-key", k.file("proxy", ".key"))
		fmt.Fprintf(u.logw, "switchyard up: mTLS between every part; certificates in %s (CA %s)\n", k.dir, k.ca)
	}
	if _, err := u.start("controlplane", append([]string{"controlplane", "--state", filepath.Join(u.stateDir, "controlplane.db"),
		"--api", addr(p.API), "--xds", addr(p.XDS), "--insecure-loopback-no-auth"}, cpTLS...)...); err != nil {
		return err
	}
	for i, v := range upVersions {
		args := []string{"backend", "--model-repository", filepath.Join(dirs["models"], v.Name),
			"--http", addr(p.BackendHTTP[i]), "--grpc", addr(p.BackendGRPC[i])}
		args = append(args, "--ort-lib", u.ortLib)
		args = append(args, beTLS...)
		if _, err := u.start("backend-"+v.Name, args...); err != nil {
			return err
		}
	}
	if _, err := u.start("proxy", append([]string{"proxy", "--xds", addr(p.XDS), "--http", addr(p.ProxyHTTP), "--grpc", addr(p.ProxyGRPC),
		"--admin", addr(p.ProxyAdmin), "--node-id", upProxyNode, "--state-dir", dirs["proxy"]}, pxTLS...)...); err != nil {
		return err
	}

	rctx, cancel := context.WithTimeout(ctx, u.readyTimeout)
	defer cancel()
	apiURL := scheme + addr(p.API)
	if err := u.waitHTTP(rctx, "controlplane", apiURL+"/healthz", true); err != nil {
		return err
	}
	for i, v := range upVersions {
		if err := u.waitHTTP(rctx, "backend-"+v.Name, scheme+addr(p.BackendHTTP[i])+"/v2/health/ready", true); err != nil {
			return err
		}
	}
	if err := u.waitHTTP(rctx, "proxy", scheme+addr(p.ProxyAdmin)+"/ready", false); err != nil {
		return err
	}
	rev, verb, err := u.applyStartingState(rctx, apiURL)
	if err != nil {
		return err
	}
	inferURL := scheme + addr(p.ProxyHTTP) + "/v2/models/recommender/infer"
	variant, err := u.waitServing(rctx, inferURL)
	if err != nil {
		return err
	}

	info := upInfo{PID: os.Getpid(), API: apiURL, XDS: addr(p.XDS), ProxyHTTP: scheme + addr(p.ProxyHTTP),
		ProxyGRPC: addr(p.ProxyGRPC), ProxyAdmin: scheme + addr(p.ProxyAdmin), Processes: map[string]int{},
		Revision: rev, Model: "recommender", StartedAt: time.Now().UTC(), StateDir: u.stateDir}
	if k := u.pki; k != nil {
		info.TLS = &upTLSInfo{CA: k.ca, Cert: k.file("syctl", ".crt"), Key: k.file("syctl", ".key")}
	}
	for i, v := range upVersions {
		info.Backends = append(info.Backends, upBackendInfo{Version: v.Name, Model: v.Model,
			HTTP: scheme + addr(p.BackendHTTP[i]), GRPC: addr(p.BackendGRPC[i])})
	}
	u.mu.Lock()
	for _, c := range u.children {
		info.Processes[c.name] = c.cmd.Process.Pid
	}
	u.ready = true
	u.info = info
	u.info.Processes = maps.Clone(info.Processes) // restarts update this copy
	u.writeInfoLocked()
	u.mu.Unlock()
	u.printBanner(info, rev, verb, variant)

	<-ctx.Done()
	fmt.Fprintln(u.logw, "\nswitchyard up: stopping")
	return nil
}

// start launches `switchyard ARGS...` as a child in its own process group,
// killed by the kernel if this process dies (Pdeathsig), output to a log.
func (u *upStack) start(name string, args ...string) (*upChild, error) {
	return u.launch(&upChild{name: name, args: args}, os.O_TRUNC)
}

// launch starts c's process (a new one, or a restart of one that died:
// its log is appended to) and watches it.
func (u *upStack) launch(c *upChild, logMode int) (*upChild, error) {
	logPath := filepath.Join(u.stateDir, "logs", c.name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|logMode, 0o644)
	if err != nil {
		return nil, fmt.Errorf("log file for %s: %w", c.name, err)
	}
	cmd := exec.Command(u.exe, c.args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.stopping {
		f.Close()
		return nil, errors.New("stopping")
	}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", c.name, err)
	}
	nc := &upChild{name: c.name, args: c.args, cmd: cmd, log: logPath, done: make(chan struct{}), started: time.Now(), restarts: c.restarts}
	replaced := false
	for i, old := range u.children {
		if old.name == nc.name {
			u.children[i], replaced = nc, true
		}
	}
	if !replaced {
		u.children = append(u.children, nc)
	}
	go func() {
		nc.err = cmd.Wait()
		f.Close()
		u.mu.Lock()
		stopping, ready := u.stopping, u.ready
		u.mu.Unlock()
		close(nc.done)
		if !stopping && ready {
			u.exited(nc)
		}
	}()
	return nc, nil
}

// exited reports a child that died after start-up and, with --restart
// always, starts it again after its backoff.
func (u *upStack) exited(c *upChild) {
	what := fmt.Sprintf("switchyard up: %s (pid %d) exited: %v", c.name, c.cmd.Process.Pid, exitText(c.err))
	defer func() { // after the message: a reader of up.json finds it said
		u.mu.Lock()
		if u.info.Exited == nil {
			u.info.Exited = map[string]string{}
		}
		u.info.Exited[c.name] = exitText(c.err)
		u.writeInfoLocked()
		u.mu.Unlock()
	}()
	if !u.restart {
		fmt.Fprintf(u.logw, "%s; not restarted (--restart=%s); the rest keeps running; restart switchyard up to bring it back (log: %s)\n", what, restartNever, c.log)
		return
	}
	n := nextRestart(c.restarts, time.Since(c.started))
	delay := restartDelay(n)
	fmt.Fprintf(u.logw, "%s; restarting it in %s (restart %d in a row; --restart=%s leaves it down) (log: %s)\n", what, delay, n, restartNever, c.log)
	go func() {
		select {
		case <-u.stopCh:
			return
		case <-time.After(delay):
		}
		nc, err := u.launch(&upChild{name: c.name, args: c.args, restarts: n}, os.O_APPEND)
		if err != nil {
			if !u.isStopping() {
				fmt.Fprintf(u.logw, "switchyard up: restart %s: %v\n", c.name, err)
			}
			return
		}
		fmt.Fprintf(u.logw, "switchyard up: %s restarted (pid %d)\n", nc.name, nc.cmd.Process.Pid)
		u.mu.Lock()
		u.info.Processes[nc.name] = nc.cmd.Process.Pid
		delete(u.info.Exited, nc.name)
		u.writeInfoLocked()
		u.mu.Unlock()
	}()
}

func (u *upStack) isStopping() bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.stopping
}

// writeInfoLocked writes up.json (u.mu held), whole or not at all (a
// reader never sees half of it).
func (u *upStack) writeInfoLocked() {
	b, err := json.MarshalIndent(u.info, "", "  ")
	if err != nil {
		return
	}
	tmp := u.infoPath + ".tmp"
	if os.WriteFile(tmp, append(b, '\n'), 0o644) == nil {
		_ = os.Rename(tmp, u.infoPath)
	}
}

func exitText(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// stopAll sends SIGTERM to every child's process group, waits up to 10s,
// then SIGKILLs what is left and waits for it.
func (u *upStack) stopAll() error {
	u.mu.Lock()
	if !u.stopping {
		close(u.stopCh)
	}
	u.stopping = true
	children := append([]*upChild(nil), u.children...)
	u.mu.Unlock()
	// Proxy first (it drains), then the control plane, then the backends.
	for i := len(children) - 1; i >= 0; i-- {
		c := children[i]
		select {
		case <-c.done:
		default:
			_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGTERM)
		}
	}
	deadline := time.After(10 * time.Second)
	var stuck []string
	for _, c := range children {
		select {
		case <-c.done:
		case <-deadline:
			stuck = append(stuck, c.name)
			_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
			<-c.done
		}
	}
	// A child's own children (none today) share its group: make sure.
	for _, c := range children {
		_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
	}
	if len(children) > 0 {
		fmt.Fprintf(u.logw, "switchyard up: stopped %d processes\n", len(children))
	}
	if len(stuck) > 0 {
		return fmt.Errorf("killed %s after 10s without stopping", strings.Join(stuck, ", "))
	}
	return nil
}

func (u *upStack) child(name string) *upChild {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, c := range u.children {
		if c.name == name {
			return c
		}
	}
	return nil
}

// waitHTTP polls url until it answers 200 (or, when need200 is false, any
// HTTP answer), the child exits, or ctx ends.
func (u *upStack) waitHTTP(ctx context.Context, name, url string, need200 bool) error {
	c := u.child(name)
	hc := &http.Client{Timeout: 2 * time.Second, Transport: u.hc.Transport}
	var last string
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := hc.Do(req)
		if err == nil {
			io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
			resp.Body.Close()
			if !need200 || resp.StatusCode == http.StatusOK {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		select {
		case <-c.done:
			return fmt.Errorf("%s exited before it was ready: %v\n%s", name, exitText(c.err), tail(c.log, 15))
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.Canceled) {
				return errors.New("interrupted while starting")
			}
			return fmt.Errorf("%s not ready at %s within %s (last: %s)\n%s", name, url, u.readyTimeout, last, tail(c.log, 15))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// tail returns the last n lines of a log file, indented.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "  last lines of " + path + ":\n    " + strings.Join(lines, "\n    ")
}

// startingModel is the desired state `up` applies: every demo version
// behind one virtual model, v1 serving 100 %, lite as backup.
func (u *upStack) startingModel() api.Model {
	m := api.Model{APIVersion: api.APIVersion, Kind: api.KindModel,
		Metadata: api.Metadata{Name: "recommender", Labels: map[string]string{"created-by": "switchyard-up"}}}
	for i, v := range upVersions {
		m.Spec.Versions = append(m.Spec.Versions, api.Version{Name: v.Name,
			Endpoints: []string{addr(u.ports.BackendHTTP[i])}, Protocol: api.ProtocolHTTP, BackendModel: v.Model})
	}
	m.Spec.Traffic = api.Traffic{Weights: map[string]int{"v1": 100}, StickyHeader: "x-user-id"}
	m.Spec.Fallback = &api.Fallback{Chain: []string{api.FallbackBackup}, Backup: "lite"}
	return m
}

// applyStartingState puts the starting model through the REST API (create
// with If-None-Match, replace with If-Match; nothing when it is already
// what is stored, or with --keep-state).
func (u *upStack) applyStartingState(ctx context.Context, apiURL string) (int64, string, error) {
	want := u.startingModel()
	if err := api.Normalize(&want); err != nil {
		return 0, "", fmt.Errorf("starting state: %w", err)
	}
	body, err := json.Marshal(want)
	if err != nil {
		return 0, "", err
	}
	url := apiURL + "/v1/models/recommender"
	var cur struct {
		Revision int64     `json:"revision"`
		Model    api.Model `json:"model"`
	}
	code, raw, err := upHTTP(ctx, u.hc, http.MethodGet, url, nil, nil)
	if err != nil {
		return 0, "", err
	}
	hdr := http.Header{"X-Switchyard-Reason": {"switchyard up: starting state"}}
	switch code {
	case http.StatusOK:
		if err := json.Unmarshal(raw, &cur); err != nil {
			return 0, "", fmt.Errorf("read stored model: %w", err)
		}
		old, _ := json.Marshal(cur.Model)
		if u.keep {
			return cur.Revision, "kept (--keep-state)", nil
		}
		if bytes.Equal(old, body) {
			return cur.Revision, "unchanged", nil
		}
		hdr.Set("If-Match", `"`+strconv.FormatInt(cur.Revision, 10)+`"`)
	case http.StatusNotFound:
		hdr.Set("If-None-Match", "*")
	default:
		return 0, "", fmt.Errorf("GET %s: HTTP %d: %s", url, code, bytes.TrimSpace(raw))
	}
	code, raw, err = upHTTP(ctx, u.hc, http.MethodPut, url, body, hdr)
	if err != nil {
		return 0, "", err
	}
	if code != http.StatusOK && code != http.StatusCreated {
		return 0, "", fmt.Errorf("apply the starting state: HTTP %d: %s", code, bytes.TrimSpace(raw))
	}
	var res struct {
		Revision int64 `json:"revision"`
	}
	if err := json.Unmarshal(raw, &res); err != nil {
		return 0, "", err
	}
	verb := "applied"
	if cur.Revision > 0 {
		verb = "re-applied (the stored model differed; `syctl rollback recommender` restores it)"
	}
	return res.Revision, verb, nil
}

func upHTTP(ctx context.Context, hc *http.Client, method, url string, body []byte, hdr http.Header) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("%s %s: %w", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	return resp.StatusCode, b, err
}

// demoFeatures is the [1,32] FP32 request of the printed curl line.
func demoFeatures() string {
	v := make([]string, demomodels.Features)
	for i := range v {
		v[i] = strconv.FormatFloat(float64(i%8)*0.125, 'f', -1, 64)
	}
	return `{"inputs":[{"name":"features","datatype":"FP32","shape":[1,32],"data":[` + strings.Join(v, ",") + `]}]}`
}

// waitServing sends the demo infer request through the proxy until it
// answers 200 with x-switchyard-variant (the config reached the proxy).
func (u *upStack) waitServing(ctx context.Context, url string) (string, error) {
	c := u.child("proxy")
	var last string
	for {
		code, hdr, body, err := upInfer(ctx, u.hc, url)
		if err == nil && code == http.StatusOK && hdr.Get("x-switchyard-variant") != "" {
			return hdr.Get("x-switchyard-variant"), nil
		}
		if err != nil {
			last = err.Error()
		} else {
			last = fmt.Sprintf("HTTP %d %s", code, bytes.TrimSpace(body))
		}
		select {
		case <-c.done:
			return "", fmt.Errorf("proxy exited: %v\n%s", exitText(c.err), tail(c.log, 15))
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.Canceled) {
				return "", errors.New("interrupted while starting")
			}
			return "", fmt.Errorf("the proxy did not serve recommender within %s (last: %s)\n%s", u.readyTimeout, last, tail(c.log, 15))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func upInfer(ctx context.Context, hc *http.Client, url string) (int, http.Header, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(demoFeatures()))
	if err != nil {
		return 0, nil, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("x-user-id", "alice")
	resp, err := hc.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, resp.Header, b, err
}

// syctlCommand is how to run syctl from here: the binary next to this one
// when there is one (make build puts both in bin/), else go run.
func (u *upStack) syctlCommand() string {
	p := filepath.Join(filepath.Dir(u.exe), "syctl")
	if _, err := os.Stat(p); err != nil {
		return "go run ./cmd/syctl"
	}
	if wd, err := os.Getwd(); err == nil {
		if rel, err := filepath.Rel(wd, p); err == nil && !strings.HasPrefix(rel, "..") {
			if !strings.Contains(rel, "/") {
				rel = "./" + rel
			}
			return rel
		}
	}
	return p
}

func (u *upStack) printBanner(info upInfo, rev int64, verb, variant string) {
	w := bufio.NewWriter(u.out)
	defer w.Flush()
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	pid := func(name string) int { return info.Processes[name] }
	p("")
	p("Switchyard is up (state %s; logs %s):", u.stateDir, filepath.Join(u.stateDir, "logs"))
	p("  control plane   API %s   xDS %s   (pid %d)", info.API, info.XDS, pid("controlplane"))
	p("  proxy           OIP v2 REST %s   gRPC %s   admin %s   (pid %d)", info.ProxyHTTP, info.ProxyGRPC, info.ProxyAdmin, pid("proxy"))
	for _, b := range info.Backends {
		p("  backend %-6s  %-16s  REST %s   gRPC %s   (pid %d)", b.Version, b.Model, b.HTTP, b.GRPC, pid("backend-"+b.Version))
	}
	p("")
	p("Desired state: recommender %s at revision %d: v1 100%%, versions v1 v2 v3 lite, fallback backup lite,", verb, rev)
	p("sticky by x-user-id. A test request through the proxy was answered by %s.", variant)
	p("")
	p("Send a request ([1,32] FP32 features; the answer names the version in x-switchyard-variant):")
	curlTLS := ""
	if t := info.TLS; t != nil {
		curlTLS = fmt.Sprintf("--cacert %s --cert %s --key %s ", t.CA, t.Cert, t.Key)
	}
	p("  curl -si %s%s/v2/models/recommender/infer -H 'content-type: application/json' -H 'x-user-id: alice' \\", curlTLS, info.ProxyHTTP)
	p("    -d '%s'", demoFeatures())
	p("")
	sy := u.syctlCommand()
	p("Drive it with syctl:")
	switch t := info.TLS; {
	case t != nil:
		p("  export SYCTL_SERVER=%s SYCTL_CA=%s SYCTL_CERT=%s SYCTL_KEY=%s", info.API, t.CA, t.Cert, t.Key)
	case info.API != "http://"+addr(upAPIPort):
		p("  export SYCTL_SERVER=%s   # syctl's default is http://127.0.0.1:%d", info.API, upAPIPort)
	}
	p("  %s get models", sy)
	p("  %s describe model recommender --proxy-admin %s", sy, info.ProxyAdmin)
	p("  %s weights set recommender v1=80 v2=20 --reason 'A/B v2'", sy)
	p("  %s shadow set recommender --version v3 --percent 10 --mode topk --k 10", sy)
	p("  %s history recommender", sy)
	p("  %s rollback recommender", sy)
	p("  %s proxies", sy)
	p("")
	if u.restart {
		p("A process that dies is started again (backoff 1s, 2s, 4s … 30s; --restart=never leaves it down).")
	} else {
		p("A process that dies stays down (--restart=never); restart switchyard up to bring it back.")
	}
	p("Ctrl-C stops everything.")
}
