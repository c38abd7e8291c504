//go:build linux

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// binaries are the built `switchyard` and `syctl`.
type binaries struct {
	switchyard, syctl string
}

// buildBinaries builds cmd/switchyard and cmd/syctl (normal builds, no
// -race) into a temp folder, once per test.
func buildBinaries(t *testing.T) binaries {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", dir+string(filepath.Separator), "./cmd/switchyard", "./cmd/syctl")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/switchyard ./cmd/syctl: %v\n%s", err, out)
	}
	return binaries{switchyard: filepath.Join(dir, "switchyard"), syctl: filepath.Join(dir, "syctl")}
}

// upInfo is the part of STATE/up.json the story reads.
type upInfo struct {
	PID        int    `json:"pid"`
	API        string `json:"api"`
	ProxyHTTP  string `json:"proxyHttp"`
	ProxyGRPC  string `json:"proxyGrpc"`
	ProxyAdmin string `json:"proxyAdmin"`
	Backends   []struct {
		Version string `json:"version"`
		Model   string `json:"model"`
		HTTP    string `json:"http"`
		GRPC    string `json:"grpc"`
	} `json:"backends"`
	Processes map[string]int `json:"processes"`
	Revision  int64          `json:"revision"`
}

// syncBuffer is a bytes.Buffer safe for one writer and concurrent readers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// upProcess is a running `switchyard up`.
type upProcess struct {
	cmd      *exec.Cmd
	stateDir string
	stdout   *syncBuffer
	stderr   *syncBuffer
	done     chan struct{}
	err      error // valid after done
	info     upInfo
}

// startUp runs `switchyard up --any-ports --state-dir DIR --restart=never`
// and waits (bounded) until it prints that it is up and up.json is written.
// --restart=never: the fault and story tests kill processes on purpose and
// start them again themselves, so up must not race them with its own
// restart.
func startUp(t *testing.T, bin, stateDir string) *upProcess {
	t.Helper()
	return startUpWith(t, bin, upOptions{stateDir: stateDir, args: []string{"up", "--any-ports", "--ready-timeout", "90s", "--restart=never"}})
}

// startUpWith runs `switchyard ARGS --state-dir DIR` as o says and waits
// (bounded) until it prints that it is up and up.json is written.
func startUpWith(t *testing.T, bin string, o upOptions) *upProcess {
	t.Helper()
	u := &upProcess{stateDir: o.stateDir, stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan struct{})}
	if o.dir != "" && !filepath.IsAbs(o.stateDir) {
		u.stateDir = filepath.Join(o.dir, o.stateDir)
	}
	u.cmd = exec.Command(bin, append(o.args, "--state-dir", o.stateDir)...)
	u.cmd.Dir = o.dir
	u.cmd.Env = o.env
	pr, pw := io.Pipe()
	u.cmd.Stdout, u.cmd.Stderr = pw, u.stderr
	if o.combined {
		u.cmd.Stderr = pw
	}
	if err := u.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(pr)
		once := false
		for sc.Scan() {
			u.stdout.Write([]byte(sc.Text() + "\n"))
			if !once && strings.HasPrefix(sc.Text(), "Ctrl-C stops everything") {
				once = true
				close(ready)
			}
		}
		io.Copy(io.Discard, pr)
	}()
	go func() {
		u.err = u.cmd.Wait()
		pw.Close()
		<-scanned
		close(u.done)
	}()
	t.Cleanup(func() {
		// A test that failed half-way: stop the stack all the same.
		select {
		case <-u.done:
			return
		default:
		}
		_ = u.cmd.Process.Signal(os.Interrupt)
		select {
		case <-u.done:
		case <-time.After(20 * time.Second):
			_ = u.cmd.Process.Kill()
			<-u.done
		}
		killAll(u.info.Processes)
	})
	select {
	case <-ready:
	case <-u.done:
		t.Fatalf("switchyard up exited before it was up: %v\nstdout:\n%s\nstderr:\n%s", u.err, u.stdout, u.stderr)
	case <-time.After(150 * time.Second):
		t.Fatalf("switchyard up was not up within 150s\nstdout:\n%s\nstderr:\n%s", u.stdout, u.stderr)
	}
	b, err := os.ReadFile(filepath.Join(u.stateDir, "up.json"))
	if err != nil {
		t.Fatalf("up.json: %v", err)
	}
	if err := json.Unmarshal(b, &u.info); err != nil {
		t.Fatalf("up.json: %v\n%s", err, b)
	}
	return u
}

// pid of one of up's children ("proxy", "controlplane", "backend-v2").
func (u *upProcess) pid(t *testing.T, name string) int {
	t.Helper()
	pid, ok := u.info.Processes[name]
	if !ok || pid <= 0 {
		t.Fatalf("up.json has no process %q: %v", name, u.info.Processes)
	}
	return pid
}

// stop sends SIGINT (Ctrl-C) and waits, bounded, for up to exit.
func (u *upProcess) stop(t *testing.T, within time.Duration) error {
	t.Helper()
	if err := u.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatalf("SIGINT to switchyard up: %v", err)
	}
	select {
	case <-u.done:
		return u.err
	case <-time.After(within):
		t.Fatalf("switchyard up did not exit within %s of SIGINT\nstderr:\n%s", within, u.stderr)
		return nil
	}
}

// alive reports whether pid is a live process (not a zombie).
func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z' && s[i+2] != 'X'
	}
	return true
}

// leftAlive lists the processes of procs still alive after waiting up to
// within for them to go.
func leftAlive(procs map[string]int, within time.Duration) []string {
	deadline := time.Now().Add(within)
	for {
		var left []string
		for name, pid := range procs {
			if alive(pid) {
				left = append(left, fmt.Sprintf("%s=%d", name, pid))
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func killAll(procs map[string]int) {
	for _, pid := range procs {
		if alive(pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// syctlResult is one syctl run as a user sees it.
type syctlResult struct {
	args   []string
	stdout string
	stderr string
	code   int
}

func (r syctlResult) String() string {
	return fmt.Sprintf("$ syctl %s\n(exit %d)\nstdout:\n%sstderr:\n%s", strings.Join(r.args, " "), r.code, r.stdout, r.stderr)
}

// syctl runs the syctl binary against the stack's control plane (via
// SYCTL_SERVER, as the banner of `up` tells a user to), bounded in time.
type syctl struct {
	bin    string
	server string
	home   string // XDG_CONFIG_HOME (empty: no config file)
}

func (s syctl) run(t *testing.T, stdin string, args ...string) syctlResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, s.bin, args...)
	// No syctl settings from the machine running the test: a fresh
	// config home and only SYCTL_SERVER.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SYCTL_") && !strings.HasPrefix(kv, "XDG_CONFIG_HOME=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "SYCTL_SERVER="+s.server, "XDG_CONFIG_HOME="+s.home)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	err := cmd.Run()
	r := syctlResult{args: args, stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("syctl %s: %v", strings.Join(args, " "), err)
	}
	if ctx.Err() != nil {
		t.Fatalf("syctl %s did not finish within 60s\n%s", strings.Join(args, " "), r)
	}
	return r
}

// ok runs syctl and fails the test unless it exits 0.
func (s syctl) ok(t *testing.T, args ...string) syctlResult {
	t.Helper()
	r := s.run(t, "", args...)
	if r.code != 0 {
		t.Fatalf("want exit 0:\n%s", r)
	}
	return r
}

// json runs syctl with -o json, wants exit 0 and decodes stdout into v.
func (s syctl) json(t *testing.T, v any, args ...string) syctlResult {
	t.Helper()
	r := s.ok(t, append(args, "-o", "json")...)
	if err := json.Unmarshal([]byte(r.stdout), v); err != nil {
		t.Fatalf("decode the JSON output: %v\n%s", err, r)
	}
	return r
}

// getJSON fetches url (the proxy's admin endpoints) and decodes it.
func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	b := getBody(t, url)
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("GET %s: %v\n%s", url, err, b)
	}
}

func getBody(t *testing.T, url string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Close = true // no idle connection (and its goroutines) left behind
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: HTTP %d %v\n%s", url, resp.StatusCode, err, b)
	}
	return b
}

// waitFor polls cond every interval, at most max times; it fails the test
// with what the last poll said when cond never holds.
func waitFor(t *testing.T, what string, interval time.Duration, max int, cond func() (bool, string)) {
	t.Helper()
	last := ""
	for i := 0; i < max; i++ {
		ok, msg := cond()
		if ok {
			return
		}
		last = msg
		time.Sleep(interval)
	}
	t.Fatalf("gave up waiting for %s after %d polls (%s apart); last: %s", what, max, interval, last)
}

// configDump is the part of the proxy's /config_dump the story reads.
type configDump struct {
	Version string `json:"version"`
	Source  string `json:"source"`
	Models  []struct {
		Metadata struct {
			Name string `json:"name"`
		} `json:"metadata"`
		Spec struct {
			Traffic struct {
				Weights map[string]int `json:"weights"`
			} `json:"traffic"`
			Shadow *struct {
				Version string  `json:"version"`
				Percent float64 `json:"percent"`
			} `json:"shadow"`
			Canary *struct {
				Version string `json:"version"`
			} `json:"canary"`
		} `json:"spec"`
	} `json:"models"`
}

// proxyWeights reads the recommender's weights and config version from the
// proxy's /config_dump.
func proxyWeights(t *testing.T, admin string) (map[string]int, string, configDump) {
	t.Helper()
	var d configDump
	getJSON(t, admin+"/config_dump", &d)
	for _, m := range d.Models {
		if m.Metadata.Name == "recommender" {
			return nonZero(m.Spec.Traffic.Weights), d.Version, d
		}
	}
	return nil, d.Version, d
}

// nonZero drops zero weights (a version not listed gets 0).
func nonZero(w map[string]int) map[string]int {
	out := map[string]int{}
	for k, v := range w {
		if v != 0 {
			out[k] = v
		}
	}
	return out
}

func sameWeights(a, b map[string]int) bool {
	a, b = nonZero(a), nonZero(b)
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// waitProxyWeights waits until the proxy's /config_dump shows weights.
func waitProxyWeights(t *testing.T, admin string, want map[string]int) string {
	t.Helper()
	var version string
	waitFor(t, fmt.Sprintf("the proxy to serve weights %v", want), 50*time.Millisecond, 400, func() (bool, string) {
		got, v, _ := proxyWeights(t, admin)
		version = v
		return sameWeights(got, want), fmt.Sprintf("config version %s weights %v", v, got)
	})
	return version
}

// counters reads switchyard_proxy_requests_total{model="recommender"} from
// the proxy's /metrics: requests by variant (every code).
func requestCounters(t *testing.T, admin string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, s := range parseMetrics(getBody(t, admin+"/metrics"), "switchyard_proxy_requests_total") {
		if s.labels["model"] == "recommender" {
			out[s.labels["variant"]] += s.value
		}
	}
	return out
}

// sample is one series of a Prometheus text exposition.
type sample struct {
	labels map[string]string
	value  float64
}

// parseMetrics reads the samples of one metric from the Prometheus text
// format (name{a="x",b="y"} value).
func parseMetrics(body []byte, name string) []sample {
	var out []sample
	for _, line := range strings.Split(string(body), "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		rest := line[len(name):]
		s := sample{labels: map[string]string{}}
		if strings.HasPrefix(rest, "{") {
			end := strings.LastIndexByte(rest, '}')
			if end < 0 {
				continue
			}
			for _, kv := range splitLabels(rest[1:end]) {
				k, v, ok := strings.Cut(kv, "=")
				if !ok {
					continue
				}
				if uq, err := strconv.Unquote(v); err == nil {
					v = uq
				}
				s.labels[k] = v
			}
			rest = rest[end+1:]
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		s.value = v
		out = append(out, s)
	}
	return out
}

// splitLabels splits `a="x",b="y,z"` at the commas outside quotes.
func splitLabels(s string) []string {
	var out []string
	inQ, esc, start := false, false, 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case esc:
			esc = false
		case c == '\\':
			esc = true
		case c == '"':
			inQ = !inQ
		case c == ',' && !inQ:
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	if start < len(s) {
		out = append(out, s[start:])
	}
	return out
}
