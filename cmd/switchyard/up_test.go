//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// buildSwitchyard builds this command into a temp folder.
func buildSwitchyard(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "switchyard")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// upRun is a running `switchyard up`.
type upRun struct {
	cmd    *exec.Cmd
	stdout *bytes.Buffer
	stderr *bytes.Buffer
	ready  chan struct{}
	done   chan error
}

// startUp starts `switchyard up` on free ports with state in dir and waits
// (bounded) until it prints that it is up.
func startUp(t *testing.T, bin, dir string, extra ...string) *upRun {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"up", "--state-dir", dir, "--any-ports", "--ready-timeout", "90s"}, extra...)...)
	r := &upRun{cmd: cmd, stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}, ready: make(chan struct{}), done: make(chan error, 1)}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, r.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	scanDone := make(chan struct{})
	go func() {
		defer close(scanDone)
		sc := bufio.NewScanner(pr)
		once := false
		for sc.Scan() {
			r.stdout.WriteString(sc.Text() + "\n")
			if !once && strings.HasPrefix(sc.Text(), "Ctrl-C stops everything") {
				once = true
				close(r.ready)
			}
		}
	}()
	go func() {
		err := cmd.Wait()
		pw.Close()
		<-scanDone
		r.done <- err
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		select {
		case <-r.done:
		case <-time.After(10 * time.Second):
		}
	})
	select {
	case <-r.ready:
	case err := <-r.done:
		r.done <- err
		t.Fatalf("switchyard up exited before it was up: %v\nstdout:\n%s\nstderr:\n%s", err, r.stdout, r.stderr)
	case <-time.After(150 * time.Second):
		t.Fatalf("switchyard up not up within 150s\nstdout:\n%s\nstderr:\n%s", r.stdout, r.stderr)
	}
	return r
}

func (r *upRun) wait(t *testing.T, within time.Duration) error {
	t.Helper()
	select {
	case err := <-r.done:
		r.done <- err
		return err
	case <-time.After(within):
		t.Fatalf("switchyard up did not exit within %s\nstderr:\n%s", within, r.stderr)
		return nil
	}
}

func readUpInfo(t *testing.T, dir string) upInfo {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "up.json"))
	if err != nil {
		t.Fatal(err)
	}
	var info upInfo
	if err := json.Unmarshal(b, &info); err != nil {
		t.Fatal(err)
	}
	if len(info.Processes) != 6 {
		t.Fatalf("up.json lists %d processes, want 6: %v", len(info.Processes), info.Processes)
	}
	return info
}

// alive reports whether pid is a live (not zombie) process.
func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// pid (comm) STATE ...: Z is a zombie, X dead.
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z' && s[i+2] != 'X'
	}
	return true
}

func waitGone(t *testing.T, procs map[string]int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		var left []string
		for name, pid := range procs {
			if alive(pid) {
				left = append(left, name+"="+strconv.Itoa(pid))
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			for _, pid := range procs {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
			t.Fatalf("processes left behind after %s: %v", within, left)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func inferThroughProxy(t *testing.T, proxyURL string) (string, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, proxyURL+"/v2/models/recommender/infer", strings.NewReader(demoFeatures()))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("x-user-id", "test-user")
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("infer through the proxy: HTTP %d: %s", resp.StatusCode, body)
	}
	return resp.Header.Get("x-switchyard-variant"), body
}

func TestUpServesAndLeavesNoProcessBehind(t *testing.T) {
	bin := buildSwitchyard(t)
	dir := filepath.Join(t.TempDir(), "state")

	// First run: a fresh state folder.
	r := startUp(t, bin, dir)
	info := readUpInfo(t, dir)
	for _, want := range []string{"Switchyard is up", "curl -si " + info.ProxyHTTP + "/v2/models/recommender/infer",
		"export SYCTL_SERVER=" + info.API + " ", "recommender applied at revision", "weights set recommender v1=80 v2=20"} {
		if !strings.Contains(r.stdout.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, r.stdout)
		}
	}
	variant, body := inferThroughProxy(t, info.ProxyHTTP)
	if variant != "v1" {
		t.Errorf("x-switchyard-variant = %q, want v1 (v1 has 100%%)", variant)
	}
	var ans struct {
		ModelName string `json:"model_name"`
		Outputs   []struct {
			Name  string    `json:"name"`
			Shape []int     `json:"shape"`
			Data  []float64 `json:"data"`
		} `json:"outputs"`
	}
	if err := json.Unmarshal(body, &ans); err != nil || ans.ModelName != "recommender-v1" || len(ans.Outputs) != 1 ||
		ans.Outputs[0].Name != "scores" || len(ans.Outputs[0].Data) != 100 {
		t.Fatalf("answer: %v %s", err, body)
	}
	// The starting state is in the control plane, with its reason.
	resp, err := http.Get(info.API + "/v1/models/recommender/history")
	if err != nil {
		t.Fatal(err)
	}
	hist, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(hist), "switchyard up: starting state") {
		t.Errorf("history lacks the starting state: %s", hist)
	}

	// Ctrl-C: everything stops, up exits 0, nothing is left.
	if err := r.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if err := r.wait(t, 30*time.Second); err != nil {
		t.Fatalf("up after SIGINT: %v\nstderr:\n%s", err, r.stderr)
	}
	waitGone(t, info.Processes, 5*time.Second)
	if _, err := os.Stat(filepath.Join(dir, "up.json")); !os.IsNotExist(err) {
		t.Errorf("up.json left behind: %v", err)
	}
	if !strings.Contains(r.stderr.String(), "stopped 6 processes") {
		t.Errorf("stderr lacks the stop summary:\n%s", r.stderr)
	}

	// Second run on the same state, without clean-up: the stored starting
	// state is found unchanged.
	r = startUp(t, bin, dir)
	info2 := readUpInfo(t, dir)
	if !strings.Contains(r.stdout.String(), "recommender unchanged at revision") &&
		!strings.Contains(r.stdout.String(), "recommender re-applied") {
		t.Errorf("second run output:\n%s", r.stdout)
	}
	if v, _ := inferThroughProxy(t, info2.ProxyHTTP); v != "v1" {
		t.Errorf("second run: variant %q", v)
	}
	// up killed outright (no chance to clean up): the kernel kills the
	// children (Pdeathsig).
	if err := r.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	r.wait(t, 10*time.Second)
	waitGone(t, info2.Processes, 10*time.Second)
}

func TestUpRefusesATakenPort(t *testing.T) {
	bin := buildSwitchyard(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "up", "--state-dir", t.TempDir(), "--any-ports", "--proxy-http-port", port)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("want exit 1, got %v\n%s", err, out)
	}
	want := "port " + port + " (proxy HTTP, --proxy-http-port) is taken on 127.0.0.1"
	if !strings.Contains(string(out), want) {
		t.Fatalf("output lacks %q:\n%s", want, out)
	}
}

func TestRestartBackoff(t *testing.T) {
	for n, want := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 5: 16 * time.Second, 6: 30 * time.Second, 50: 30 * time.Second} {
		if got := restartDelay(n); got != want {
			t.Errorf("restartDelay(%d) = %s, want %s", n, got, want)
		}
	}
	if nextRestart(3, time.Second) != 4 || nextRestart(3, restartStable) != 1 || nextRestart(0, 0) != 1 {
		t.Error("nextRestart: a quick death counts on, a stable run starts over")
	}
}

// A child killed after start-up is started again (and says so); with
// --restart=never it stays down and up says how to bring it back. Either
// way, Ctrl-C leaves no process behind, the restarted one included.
func TestUpRestartsACrashedChild(t *testing.T) {
	bin := buildSwitchyard(t)
	for _, mode := range []string{"always", "never"} {
		t.Run(mode, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "state")
			r := startUp(t, bin, dir, "--restart="+mode)
			info := readUpInfo(t, dir)
			old := info.Processes["backend-v2"]
			if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			all := map[string]int{}
			for k, v := range info.Processes {
				all[k] = v
			}
			if mode == "always" {
				deadline := time.Now().Add(60 * time.Second)
				for {
					now := readUpInfo(t, dir).Processes["backend-v2"]
					if now != old && alive(now) {
						all["backend-v2 restarted"] = now
						break
					}
					if time.Now().After(deadline) {
						t.Fatalf("backend-v2 not restarted within 60s (pid still %d)", now)
					}
					time.Sleep(100 * time.Millisecond)
				}
			} else {
				deadline := time.Now().Add(30 * time.Second)
				for readUpInfo(t, dir).Exited["backend-v2"] == "" {
					if time.Now().After(deadline) {
						t.Fatal("up.json does not say backend-v2 exited within 30s")
					}
					time.Sleep(50 * time.Millisecond)
				}
				if p := readUpInfo(t, dir).Processes["backend-v2"]; p != old {
					t.Fatalf("backend-v2 restarted with --restart=never: pid %d", p)
				}
			}
			if err := r.cmd.Process.Signal(os.Interrupt); err != nil {
				t.Fatal(err)
			}
			if err := r.wait(t, 30*time.Second); err != nil {
				t.Fatalf("up after SIGINT: %v\nstderr:\n%s", err, r.stderr)
			}
			waitGone(t, all, 5*time.Second)
			stderr := r.stderr.String()
			want := []string{"backend-v2 (pid " + strconv.Itoa(old) + ") exited: signal: killed; "}
			if mode == "always" {
				want = append(want, "restarting it in 1s (restart 1 in a row; --restart=never leaves it down)", "backend-v2 restarted (pid ")
			} else {
				want = append(want, "not restarted (--restart=never)")
			}
			for _, w := range want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr)
				}
			}
			if mode == "always" && !strings.Contains(r.stdout.String(), "A process that dies is started again") {
				t.Errorf("banner does not say it restarts:\n%s", r.stdout)
			}
		})
	}
}

// TestUpTLS: `switchyard up --tls` runs the stack on mTLS: every listener
// wants a client certificate of its development CA (STATE/tls), the proxy
// reaches the control plane (identified by its certificate) and the
// backends over mTLS, and a client with up's syctl certificate is served.
func TestUpTLS(t *testing.T) {
	bin := buildSwitchyard(t)
	dir := filepath.Join(t.TempDir(), "state")
	r := startUp(t, bin, dir, "--tls", "--restart=never")
	info := readUpInfo(t, dir)
	if info.TLS == nil || !strings.HasPrefix(info.API, "https://") || !strings.HasPrefix(info.ProxyHTTP, "https://") ||
		!strings.HasPrefix(info.Backends[0].HTTP, "https://") {
		t.Fatalf("up.json: %+v", info)
	}
	for _, want := range []string{"export SYCTL_SERVER=" + info.API + " SYCTL_CA=" + info.TLS.CA, "curl -si --cacert " + info.TLS.CA} {
		if !strings.Contains(r.stdout.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, r.stdout)
		}
	}
	pair, err := tls.LoadX509KeyPair(info.TLS.Cert, info.TLS.Key)
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(info.TLS.CA)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	client := func(certs ...tls.Certificate) *http.Client {
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: certs}}}
	}
	get := func(hc *http.Client, url string) (int, string, error) {
		resp, err := hc.Get(url)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), nil
	}
	req, _ := http.NewRequest(http.MethodPost, info.ProxyHTTP+"/v2/models/recommender/infer", strings.NewReader(demoFeatures()))
	req.Header.Set("Content-Type", "application/json")
	resp, err := client(pair).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("x-switchyard-variant") != "v1" {
		t.Fatalf("infer over mTLS: %d %s", resp.StatusCode, resp.Header.Get("x-switchyard-variant"))
	}
	code, body, err := get(client(pair), info.API+"/v1/proxies")
	if err != nil || code != 200 || !strings.Contains(body, `"local-proxy"`) || !strings.Contains(body, `"admin": "https://`) {
		t.Fatalf("GET /v1/proxies over mTLS: %d %v %s", code, err, body)
	}
	for _, url := range []string{info.API + "/healthz", info.ProxyAdmin + "/ready", info.Backends[0].HTTP + "/v2/health/ready"} {
		if code, _, err := get(client(), url); err == nil {
			t.Errorf("%s without a client certificate: HTTP %d, want a refused handshake", url, code)
		}
	}
	if err := r.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if err := r.wait(t, 30*time.Second); err != nil {
		t.Fatalf("up after SIGINT: %v\nstderr:\n%s", err, r.stderr)
	}
	waitGone(t, info.Processes, 5*time.Second)
}
