//go:build linux

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptrace"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/switchyard-dev/switchyard/inference-backend/backend"
	"github.com/switchyard-dev/switchyard/inference-backend/demomodels"
	"github.com/switchyard-dev/switchyard/oip"
	pb "github.com/switchyard-dev/switchyard/oip/inferencepb"
)

// This file is the fault suite's part of the harness: the processes of a
// running `switchyard up` (signalled, killed and started again with the
// same command line), bounded paced load over REST and gRPC, and the
// judgement of each answer. The cases are in fault_test.go.

// proc is one process of the stack: up's child at first, the test's own
// child once the test started it again.
type proc struct {
	name string
	argv []string // as read from /proc/PID/cmdline at the start
	pid  int
	cmd  *exec.Cmd     // nil while it is up's child
	done chan struct{} // closed when cmd exited (own children only)
	err  error         // cmd.Wait's answer, valid after done
	log  string
}

// faultStack is one `switchyard up` shared by the fault cases, each of
// which restores what it changed.
type faultStack struct {
	up     *upProcess
	info   upInfo
	sy     syctl
	rest   *client
	grpc   *grpcClient
	admin  string
	doc    []byte // the suite's model document (JSON), applied at start and by every restore
	broken string // the case whose restore failed: later cases cannot run on this stack

	mu       sync.Mutex
	procs    map[string]*proc
	restarts int
}

// cmdline reads a process's argv.
func cmdline(t *testing.T, pid int) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		t.Fatalf("command line of pid %d: %v", pid, err)
	}
	return strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
}

func startFaultStack(t *testing.T) *faultStack {
	t.Helper()
	bins := buildBinaries(t)
	// The backends' repository API (unloads below) takes a bearer token:
	// up's backends inherit it from the environment.
	t.Setenv(backend.EnvRepositoryToken, faultRepositoryToken)
	up := startUp(t, bins.switchyard, filepath.Join(t.TempDir(), "state"))
	fs := &faultStack{up: up, info: up.info, sy: syctl{bin: bins.syctl, server: up.info.API, home: t.TempDir()},
		admin: up.info.ProxyAdmin, procs: map[string]*proc{}}
	for name, pid := range up.info.Processes {
		if !alive(pid) {
			b, _ := os.ReadFile(filepath.Join(up.stateDir, "logs", name+".log"))
			t.Fatalf("%s (pid %d) died right after switchyard up started it\nup's stderr:\n%s\n%s.log:\n%s", name, pid, up.stderr, name, b)
		}
		fs.procs[name] = &proc{name: name, argv: cmdline(t, pid), pid: pid}
	}
	// Registered after startUp's cleanup, so it runs first: the processes
	// the test started itself go too.
	t.Cleanup(fs.killOwn)
	fs.rest = newClient(t, up.info.ProxyHTTP)
	fs.grpc = dialProxyGRPC(t, up.info.ProxyGRPC)
	fs.doc = fs.faultModel(t)
	fs.apply(t, fs.doc, "fault suite: starting state")
	fs.baseline(t)
	return fs
}

// backend returns up.json's entry of one demo version.
func (fs *faultStack) backend(t *testing.T, version string) (httpURL, grpcAddr string) {
	t.Helper()
	for _, b := range fs.info.Backends {
		if b.Version == version {
			return b.HTTP, b.GRPC
		}
	}
	t.Fatalf("up.json has no backend %s", version)
	return "", ""
}

// faultModel is the stack's recommender with the policy the suite
// exercises: v1 serves 100 % over REST, v2 and the backup lite are called
// over gRPC, a 500ms latency budget, the chain backup → static, and a
// breaker that opens after 5 failures.
func (fs *faultStack) faultModel(t *testing.T) []byte {
	t.Helper()
	var cur map[string]any // the document apply takes back, and status
	fs.sy.json(t, &cur, "get", "model", "recommender")
	delete(cur, "status")
	spec := cur["spec"].(map[string]any)
	for _, v := range spec["versions"].([]any) {
		v := v.(map[string]any)
		if name := v["name"].(string); name == "v2" || name == "lite" {
			_, g := fs.backend(t, name)
			v["protocol"], v["endpoints"] = "grpc", []string{g}
		}
	}
	spec["traffic"].(map[string]any)["weights"] = map[string]int{"v1": 100}
	spec["timeout"] = "500ms"
	static := make([]float64, demomodels.Items)
	for i := range static {
		static[i] = float64(demomodels.Items-i) / demomodels.Items
	}
	spec["fallback"] = map[string]any{
		"chain": []string{"backup", "static"}, "backup": "lite", "backupTimeout": "500ms",
		"static":  map[string]any{"outputs": []any{map[string]any{"name": demomodels.OutputName, "datatype": "FP32", "shape": []int{1, demomodels.Items}, "data": static}}},
		"breaker": map[string]any{"consecutiveFailures": 5, "openFor": "2s"},
	}
	b, err := json.Marshal(cur)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// withSpec returns doc with spec fields replaced (a copy).
func withSpec(t *testing.T, doc []byte, set func(spec map[string]any)) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(doc, &m); err != nil {
		t.Fatal(err)
	}
	set(m["spec"].(map[string]any))
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var revisionOut = regexp.MustCompile(`\(revision (\d+)\)`)

// apply runs `syctl apply -f -` with doc and returns the revision.
func (fs *faultStack) apply(t *testing.T, doc []byte, reason string) int64 {
	t.Helper()
	r := fs.sy.run(t, string(doc), "apply", "-f", "-", "--reason", reason)
	m := revisionOut.FindStringSubmatch(r.stdout)
	if r.code != 0 || m == nil {
		t.Fatalf("apply:\n%s", r)
	}
	rev, _ := strconv.ParseInt(m[1], 10, 64)
	return rev
}

// setWeights runs `syctl weights set` and returns the new revision.
func (fs *faultStack) setWeights(t *testing.T, reason string, weights ...string) int64 {
	t.Helper()
	r := fs.sy.ok(t, append(append([]string{"weights", "set", "recommender"}, weights...), "--reason", reason)...)
	m := revisionOut.FindStringSubmatch(r.stdout)
	if m == nil {
		t.Fatalf("weights set:\n%s", r)
	}
	rev, _ := strconv.ParseInt(m[1], 10, 64)
	return rev
}

// stored is the control plane's model as `syctl get model` shows it.
type stored struct {
	Revision int64
	Model    storedModel
}

type storedModel struct {
	Spec struct {
		Traffic struct {
			Weights map[string]int `json:"weights"`
		} `json:"traffic"`
		Timeout string `json:"timeout"`
	} `json:"spec"`
}

func (fs *faultStack) stored(t *testing.T) stored {
	t.Helper()
	var doc struct { // get -o json: the document and its status
		storedModel
		Status struct {
			Revision int64 `json:"revision"`
		} `json:"status"`
	}
	fs.sy.json(t, &doc, "get", "model", "recommender")
	return stored{Revision: doc.Status.Revision, Model: doc.storedModel}
}

// waitProxyAt waits until the proxy serves revision rev from the control
// plane (xDS) and returns its weights.
func (fs *faultStack) waitProxyAt(t *testing.T, rev int64) map[string]int {
	t.Helper()
	var w map[string]int
	want := strconv.FormatInt(rev, 10)
	waitFor(t, "the proxy to serve revision "+want+" from the control plane", 50*time.Millisecond, 600, func() (bool, string) {
		got, v, d := proxyWeights(t, fs.admin)
		w = got
		return v == want && d.Source == "xds", fmt.Sprintf("config version %s from %s, weights %v", v, d.Source, got)
	})
	return w
}

// baseline waits until the stack is in the suite's starting state: the
// proxy at the control plane's revision, and v1 answering by itself (no
// fallback: its breaker closed) over REST and gRPC. It returns the revision.
func (fs *faultStack) baseline(t *testing.T) int64 {
	t.Helper()
	st := fs.stored(t)
	if !sameWeights(st.Model.Spec.Traffic.Weights, map[string]int{"v1": 100}) {
		t.Fatalf("stored weights %v, want v1=100", st.Model.Spec.Traffic.Weights)
	}
	fs.waitProxyAt(t, st.Revision)
	rows := demomodels.RandomFeatures(99, 64)
	i := 0
	waitFor(t, "v1 to answer by itself over REST and gRPC", 50*time.Millisecond, 600, func() (bool, string) {
		i++
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		row := rows[i%len(rows)]
		for _, s := range []shot{{answer: fs.rest.infer(ctx, fmt.Sprintf("baseline-%d", i), row), proto: "rest"},
			{answer: fs.grpc.infer(ctx, fmt.Sprintf("baseline-%d", i), row), proto: "grpc"}} {
			if p := s.problem(); p != "" || s.fallback != "" || s.variant != "v1" {
				return false, fmt.Sprintf("%s: variant %q fallback %q %s", s.proto, s.variant, s.fallback, p)
			}
		}
		return true, ""
	})
	return st.Revision
}

// pid is the current pid of one process of the stack.
func (fs *faultStack) pid(t *testing.T, name string) int {
	t.Helper()
	fs.mu.Lock()
	defer fs.mu.Unlock()
	p := fs.procs[name]
	if p == nil {
		t.Fatalf("no process %q", name)
	}
	return p.pid
}

func (fs *faultStack) signal(t *testing.T, name string, sig syscall.Signal) {
	t.Helper()
	pid := fs.pid(t, name)
	if err := syscall.Kill(pid, sig); err != nil {
		t.Fatalf("%v to %s (pid %d): %v", sig, name, pid, err)
	}
}

// kill9 sends SIGKILL and waits (bounded) until the process is gone.
func (fs *faultStack) kill9(t *testing.T, name string) {
	t.Helper()
	fs.signal(t, name, syscall.SIGKILL)
	fs.waitExit(t, name, 10*time.Second)
}

// waitExit waits until the process exited and returns how it ended
// ("exit status 0", "signal: killed") as its parent saw it.
func (fs *faultStack) waitExit(t *testing.T, name string, within time.Duration) string {
	t.Helper()
	fs.mu.Lock()
	p := fs.procs[name]
	fs.mu.Unlock()
	if p.cmd != nil {
		select {
		case <-p.done:
			return exitText(p.err)
		case <-time.After(within):
			t.Fatalf("%s (pid %d) did not exit within %s", name, p.pid, within)
		}
	}
	// up's child: up reaps it and says how it ended on its stderr
	// ("exited: <how> (log: FILE); ...").
	re := regexp.MustCompile(regexp.QuoteMeta(fmt.Sprintf("switchyard up: %s (pid %d) exited: ", name, p.pid)) + `([^;]*?)(?: \(log: [^)]*\))?;`)
	var how string
	waitFor(t, fmt.Sprintf("%s (pid %d) to exit", name, p.pid), 20*time.Millisecond, int(within/(20*time.Millisecond)), func() (bool, string) {
		m := re.FindStringSubmatch(fs.up.stderr.String())
		if m != nil && !alive(p.pid) {
			how = m[1]
			return true, ""
		}
		return false, fmt.Sprintf("alive %v", alive(p.pid))
	})
	return how
}

func exitText(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// restart starts the process again with its first command line (same
// ports, same state), as the test's own child in its own process group,
// killed if the test dies; it waits until it is ready.
func (fs *faultStack) restart(t *testing.T, name string) {
	t.Helper()
	fs.mu.Lock()
	old := fs.procs[name]
	if old.cmd == nil && alive(old.pid) || old.cmd != nil && !isClosed(old.done) {
		fs.mu.Unlock()
		t.Fatalf("restart %s: pid %d is still running", name, old.pid)
	}
	fs.restarts++
	logPath := filepath.Join(fs.up.stateDir, "logs", fmt.Sprintf("%s.restart-%d.log", name, fs.restarts))
	fs.mu.Unlock()
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(old.argv[0], old.argv[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start %s again: %v", name, err)
	}
	p := &proc{name: name, argv: old.argv, pid: cmd.Process.Pid, cmd: cmd, done: make(chan struct{}), log: logPath}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	fs.mu.Lock()
	fs.procs[name] = p
	fs.mu.Unlock()
	fs.waitReady(t, p)
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// waitReady polls the readiness endpoint of a restarted process.
func (fs *faultStack) waitReady(t *testing.T, p *proc) {
	t.Helper()
	var url string
	switch {
	case p.name == "controlplane":
		url = fs.info.API + "/healthz"
	case p.name == "proxy":
		url = fs.admin + "/ready"
	case strings.HasPrefix(p.name, "backend-"):
		h, _ := fs.backend(t, strings.TrimPrefix(p.name, "backend-"))
		url = h + "/v2/health/ready"
	default:
		t.Fatalf("no readiness check for %s", p.name)
	}
	waitFor(t, p.name+" to be ready at "+url, 50*time.Millisecond, 600, func() (bool, string) {
		if isClosed(p.done) {
			b, _ := os.ReadFile(p.log)
			t.Fatalf("%s exited: %v\n%s", p.name, exitText(p.err), b)
		}
		code, body := httpDo(http.MethodGet, url)
		return code == http.StatusOK, fmt.Sprintf("HTTP %d %s", code, body)
	})
}

// httpDo sends one bodiless request (no connection kept) and returns the
// status (0 when there was no answer) and the body or error.
func httpDo(method, url string, header ...string) (int, string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		return 0, err.Error()
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	req.Close = true
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	return resp.StatusCode, strings.TrimSpace(string(b))
}

// repository calls a backend's repository API: action is "load" or
// "unload" (POST /v2/repository/models/<model>/<action>).
func (fs *faultStack) repository(t *testing.T, version, action string) {
	t.Helper()
	h, _ := fs.backend(t, version)
	url := h + "/v2/repository/models/recommender-" + version + "/" + action
	if code, body := httpDo(http.MethodPost, url, "Authorization", "Bearer "+faultRepositoryToken); code != http.StatusOK {
		t.Fatalf("POST %s: HTTP %d %s", url, code, body)
	}
}

// faultRepositoryToken is the suite's credential for the backends'
// repository API (docs/security.md).
const faultRepositoryToken = "fault-suite-repository-token"

// waitModelReady waits until the backend says the version's model is ready.
func (fs *faultStack) waitModelReady(t *testing.T, version string) {
	t.Helper()
	h, _ := fs.backend(t, version)
	url := h + "/v2/models/recommender-" + version + "/ready"
	waitFor(t, url, 50*time.Millisecond, 600, func() (bool, string) {
		code, body := httpDo(http.MethodGet, url)
		return code == http.StatusOK, fmt.Sprintf("HTTP %d %s", code, body)
	})
}

// proxyStats is the part of the proxy's /stats the suite reads.
type proxyStats struct {
	Models []struct {
		Model    string `json:"model"`
		Variants []struct {
			Variant   string `json:"variant"`
			Breaker   string `json:"breaker"`
			Endpoints []struct {
				InFlight int64 `json:"inFlight"`
			} `json:"endpoints"`
		} `json:"variants"`
	} `json:"models"`
}

// breakers and inFlight read the recommender's breaker states and the
// upstream calls in flight (all endpoints) from the proxy's /stats.
func (fs *faultStack) stats(t *testing.T) (breakers map[string]string, inFlight int64) {
	t.Helper()
	var s proxyStats
	getJSON(t, fs.admin+"/stats", &s)
	breakers = map[string]string{}
	for _, m := range s.Models {
		if m.Model != "recommender" {
			continue
		}
		for _, v := range m.Variants {
			breakers[v.Variant] = v.Breaker
			for _, e := range v.Endpoints {
				inFlight += e.InFlight
			}
		}
	}
	return breakers, inFlight
}

// waitBreaker waits until the proxy shows the version's breaker in state.
func (fs *faultStack) waitBreaker(t *testing.T, version, state string) bool {
	t.Helper()
	for range 200 {
		if b, _ := fs.stats(t); b[version] == state {
			return true
		}
		time.Sleep(25 * time.Millisecond)
	}
	return false
}

// killOwn stops the processes the test started itself (SIGTERM to the
// group, SIGKILL after 10s) and waits for them.
func (fs *faultStack) killOwn() {
	fs.mu.Lock()
	var own []*proc
	for _, p := range fs.procs {
		if p.cmd != nil {
			own = append(own, p)
		}
	}
	fs.mu.Unlock()
	for _, p := range own {
		_ = syscall.Kill(-p.pid, syscall.SIGTERM)
	}
	for _, p := range own {
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-p.pid, syscall.SIGKILL)
			<-p.done
		}
		_ = syscall.Kill(-p.pid, syscall.SIGKILL) // anything it left in its group (the proxy's shadow agent)
	}
}

// stop ends the stack: `switchyard up` with Ctrl-C, then the test's own
// processes; nothing may be left.
func (fs *faultStack) stop(t *testing.T) {
	t.Helper()
	if err := fs.up.stop(t, 30*time.Second); err != nil {
		t.Errorf("switchyard up after SIGINT: %v\nstderr:\n%s", err, fs.up.stderr)
	}
	fs.killOwn()
	all := map[string]int{}
	for name, pid := range fs.info.Processes {
		all[name+"(up)"] = pid
	}
	fs.mu.Lock()
	for name, p := range fs.procs {
		all[name] = p.pid
	}
	fs.mu.Unlock()
	if left := leftAlive(all, 5*time.Second); len(left) > 0 {
		killAll(all)
		t.Errorf("processes left behind: %v", left)
	}
}

// grpcClient is a product service calling recommender over OIP v2 gRPC on
// the proxy; it reconnects quickly (the proxy restarts in one case).
type grpcClient struct {
	cc *grpc.ClientConn
	c  pb.GRPCInferenceServiceClient
}

func dialProxyGRPC(t *testing.T, addr string) *grpcClient {
	t.Helper()
	if !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Fatalf("proxy gRPC %q is not on 127.0.0.1", addr)
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{MinConnectTimeout: 5 * time.Second,
			Backoff: backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second}}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return &grpcClient{cc: cc, c: pb.NewGRPCInferenceServiceClient(cc)}
}

// infer sends one ModelInfer for user with one feature row; a gRPC OK is
// code 200 in the answer, any other status an error naming it.
func (g *grpcClient) infer(ctx context.Context, user string, row []float32) answer {
	a := answer{user: user, row: row}
	req := oip.InferRequestToProto(&oip.InferRequest{ModelName: "recommender",
		Inputs: []oip.Tensor{oip.NewTensor(demomodels.InputName, []int64{1, demomodels.Features}, row)}})
	ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(ctx, "x-user-id", user), 15*time.Second)
	defer cancel()
	var hdr metadata.MD
	resp, err := g.c.ModelInfer(ctx, req, grpc.Header(&hdr))
	first := func(k string) string {
		if v := hdr.Get(k); len(v) > 0 {
			return v[0]
		}
		return ""
	}
	a.variant, a.fallback, a.reason = first("x-switchyard-variant"), first("x-switchyard-fallback"), first("x-switchyard-fallback-reason")
	if err != nil {
		st := status.Convert(err)
		a.err = fmt.Errorf("gRPC %s: %.300s", st.Code(), st.Message())
		return a
	}
	a.code = http.StatusOK
	res, err := oip.InferResponseFromProto(resp)
	if err != nil {
		a.err = fmt.Errorf("decode the answer: %v", err)
		return a
	}
	a.model = res.ModelName
	for i := range res.Outputs {
		if res.Outputs[i].Name == demomodels.OutputName {
			if a.scores, err = res.Outputs[i].Float64s(); err != nil {
				a.err = fmt.Errorf("decode the scores: %v", err)
			}
		}
	}
	return a
}

// shot is one request of a load and what came back.
type shot struct {
	answer
	proto string // rest or grpc
	phase int    // the load's phase when the request was sent
	// REST only (httptrace): a connection was had (the dial succeeded or
	// an idle one was reused), it was a reused one, an answer byte came.
	gotConn, reused, gotByte bool
}

// problem says what is wrong with an answer the proxy gave, or "": the
// suite's promise is a 200 (gRPC OK) from the primary, named in
// x-switchyard-variant, or from a fallback marked in
// x-switchyard-fallback with its reason, with 100 finite scores.
func (s shot) problem() string {
	a := s.answer
	who := fmt.Sprintf("%s user %s", s.proto, a.user)
	switch {
	case a.err != nil:
		return fmt.Sprintf("%s: %v", who, a.err)
	case a.code != http.StatusOK:
		return fmt.Sprintf("%s: HTTP %d", who, a.code)
	}
	if a.fallback == "" {
		if a.variant == "" {
			return who + ": a primary answer without x-switchyard-variant"
		}
		if a.model != "recommender-"+a.variant {
			return fmt.Sprintf("%s: x-switchyard-variant %s but model_name %s", who, a.variant, a.model)
		}
	} else {
		if a.reason == "" {
			return fmt.Sprintf("%s: fallback %s without x-switchyard-fallback-reason", who, a.fallback)
		}
		if a.fallback == "backup" && (a.variant != "lite" || a.model != demomodels.Lite) {
			return fmt.Sprintf("%s: backup answer from variant %q model %q, want lite", who, a.variant, a.model)
		}
	}
	if len(a.scores) != demomodels.Items {
		return fmt.Sprintf("%s: %d scores, want %d", who, len(a.scores), demomodels.Items)
	}
	for _, x := range a.scores {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return fmt.Sprintf("%s: a NaN/Inf score reached the client (variant %s, fallback %q)", who, a.variant, a.fallback)
		}
	}
	return ""
}

// notAccepted reports whether a failed REST request demonstrably never
// reached the proxy's request handling: no connection (refused), or Go's
// transport saw the proxy close the idle connection before the request
// went out.
func (s shot) notAccepted() bool {
	if s.err == nil || s.code != 0 || s.proto != "rest" {
		return false
	}
	return !s.gotConn || strings.Contains(s.err.Error(), "server closed idle connection")
}

// loadSpec sizes a load: requests per second over REST and over gRPC, at
// most max requests in all and no new one after limit.
type loadSpec struct {
	prefix           string
	seed             uint64
	restRPS, grpcRPS int
	max              int64
	limit            time.Duration
	restW, grpcW     int // workers (default 16 each)
}

// load is bounded, paced traffic to the proxy from ever new users: each
// protocol's pacer ticks at its rate and drops a tick when all its workers
// are busy, so a hung upstream slows the load instead of piling it up.
// The test marks phases (fault injected, repaired, ...); every request
// remembers the phase it was sent in.
type load struct {
	fs    *faultStack
	stopc chan struct{}
	once  sync.Once
	wg    sync.WaitGroup

	gate        sync.RWMutex // held for reading while a request starts; pause and mark take it
	paused      bool
	phase       int
	names       []string
	started     atomic.Int64
	outstanding atomic.Int64 // requests sent and not yet answered
	restOut     atomic.Int64 // of which over REST
	grpcOut     atomic.Int64 // and over gRPC

	mu    sync.Mutex
	shots []shot
}

func (fs *faultStack) startLoad(t *testing.T, spec loadSpec) *load {
	t.Helper()
	if spec.restW == 0 {
		spec.restW = 16
	}
	if spec.grpcW == 0 {
		spec.grpcW = 16
	}
	l := &load{fs: fs, stopc: make(chan struct{}), names: []string{"before"}}
	ctx, cancel := context.WithTimeout(context.Background(), spec.limit)
	rows := demomodels.RandomFeatures(spec.seed, 4096)
	var pacers sync.WaitGroup
	run := func(proto string, rps, workers int) {
		if rps <= 0 {
			return
		}
		tokens := make(chan struct{}, workers)
		pacers.Add(1)
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			defer pacers.Done()
			defer close(tokens)
			tick := time.NewTicker(time.Second / time.Duration(rps))
			defer tick.Stop()
			for {
				select {
				case <-l.stopc:
					return
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				select {
				case tokens <- struct{}{}:
				default: // every worker busy: this tick is dropped
				}
			}
		}()
		for range workers {
			l.wg.Add(1)
			go func() {
				defer l.wg.Done()
				for range tokens {
					l.gate.RLock()
					if l.paused {
						l.gate.RUnlock()
						continue
					}
					n := l.started.Add(1)
					if n > spec.max {
						l.gate.RUnlock()
						return
					}
					phase := l.phase
					l.outstanding.Add(1)
					out := &l.restOut
					if proto == "grpc" {
						out = &l.grpcOut
					}
					out.Add(1)
					l.gate.RUnlock()
					i := int(n - 1)
					user := fmt.Sprintf("%s-%s-%d", spec.prefix, proto, i)
					var s shot
					if proto == "rest" {
						s = l.restShot(user, rows[i%len(rows)])
					} else {
						s = shot{answer: fs.grpc.infer(context.Background(), user, rows[i%len(rows)]), proto: "grpc"}
					}
					s.phase = phase
					l.mu.Lock()
					l.shots = append(l.shots, s)
					l.mu.Unlock()
					out.Add(-1)
					l.outstanding.Add(-1)
				}
			}()
		}
	}
	run("rest", spec.restRPS, spec.restW)
	run("grpc", spec.grpcRPS, spec.grpcW)
	go func() {
		pacers.Wait()
		cancel()
	}()
	t.Cleanup(func() { l.stop() })
	return l
}

// restShot sends one REST request, tracing its connection.
func (l *load) restShot(user string, row []float32) shot {
	var gotConn, reused, gotByte atomic.Bool
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
		GotConn:              func(i httptrace.GotConnInfo) { gotConn.Store(true); reused.Store(i.Reused) },
		GotFirstResponseByte: func() { gotByte.Store(true) },
	})
	a := l.fs.rest.infer(ctx, user, row)
	return shot{answer: a, proto: "rest", gotConn: gotConn.Load(), reused: reused.Load(), gotByte: gotByte.Load()}
}

// mark starts a new phase; requests sent from now on carry it.
func (l *load) mark(name string) int {
	l.gate.Lock()
	defer l.gate.Unlock()
	l.phase++
	l.names = append(l.names, name)
	return l.phase
}

// pause stops sending: when it returns, no request starts until resume.
func (l *load) pause() {
	l.gate.Lock()
	l.paused = true
	l.gate.Unlock()
}

func (l *load) resume() {
	l.gate.Lock()
	l.paused = false
	l.gate.Unlock()
}

// stop ends the load and waits for the requests in flight (each bounded by
// its client's timeout); it returns every request with its answer.
func (l *load) stop() []shot {
	l.once.Do(func() { close(l.stopc) })
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]shot(nil), l.shots...)
}

// count is how many answers (any outcome) came back for requests sent in
// phase p or later that satisfy pred (nil: all).
func (l *load) count(p int, pred func(shot) bool) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, s := range l.shots {
		if s.phase >= p && (pred == nil || pred(s)) {
			n++
		}
	}
	return n
}

// waitAnswers waits until n requests sent in the current phase (or later)
// came back.
func (l *load) waitAnswers(t *testing.T, n int) {
	t.Helper()
	l.gate.RLock()
	p, name := l.phase, l.names[l.phase]
	l.gate.RUnlock()
	waitFor(t, fmt.Sprintf("%d answers in phase %q", n, name), 20*time.Millisecond, 2000, func() (bool, string) {
		c := l.count(p, nil)
		return c >= n, fmt.Sprintf("%d so far, %d sent in all", c, l.started.Load())
	})
}

// waitClean waits until n requests sent in the current phase were
// answered by version by itself (no fallback), over each protocol that
// carries load.
func (l *load) waitClean(t *testing.T, n int, version string, protos ...string) {
	t.Helper()
	l.gate.RLock()
	p, name := l.phase, l.names[l.phase]
	l.gate.RUnlock()
	waitFor(t, fmt.Sprintf("%d answers by %s without fallback in phase %q over %v", n, version, name, protos), 20*time.Millisecond, 2000, func() (bool, string) {
		var msg []string
		ok := true
		for _, proto := range protos {
			c := l.count(p, func(s shot) bool {
				return s.proto == proto && s.problem() == "" && s.fallback == "" && s.variant == version
			})
			ok = ok && c >= n
			msg = append(msg, fmt.Sprintf("%s %d", proto, c))
		}
		return ok, strings.Join(msg, ", ")
	})
}

// faultTally counts one protocol's requests in a range of phases.
type faultTally struct {
	sent, ok   int
	byVariant  map[string]int // primary answers
	byFallback map[string]int
	byReason   map[string]int
	problems   []string // the first few
	nProblems  int
}

func tallyShots(shots []shot, proto string, from, to int) *faultTally {
	ft := &faultTally{byVariant: map[string]int{}, byFallback: map[string]int{}, byReason: map[string]int{}}
	for _, s := range shots {
		if s.proto != proto || s.phase < from || s.phase > to {
			continue
		}
		ft.sent++
		if p := s.problem(); p != "" {
			ft.nProblems++
			if len(ft.problems) < 5 {
				ft.problems = append(ft.problems, p)
			}
			continue
		}
		ft.ok++
		if s.fallback == "" {
			ft.byVariant[s.variant]++
		} else {
			ft.byFallback[s.fallback]++
			ft.byReason[s.fallback+"/"+s.reason]++
		}
	}
	return ft
}

func (ft *faultTally) fallbacks() int {
	n := 0
	for _, v := range ft.byFallback {
		n += v
	}
	return n
}

func (ft *faultTally) String() string {
	s := fmt.Sprintf("%d sent, %d answered 2xx (primary %s; fallback %s; reasons %s), %d not",
		ft.sent, ft.ok, sortedCounts(ft.byVariant), sortedCounts(ft.byFallback), sortedCounts(ft.byReason), ft.nProblems)
	if ft.nProblems > 0 {
		s += fmt.Sprintf(", first: %q", ft.problems[0])
	}
	return s
}

func sortedCounts(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%d", k, m[k])
	}
	return b.String()
}

// report logs each protocol's counts per phase and over the whole load,
// and fails the test for every request that did not get its 2xx.
func (l *load) report(t *testing.T, shots []shot) map[string]*faultTally {
	t.Helper()
	all := map[string]*faultTally{}
	for _, proto := range []string{"rest", "grpc"} {
		whole := tallyShots(shots, proto, 0, len(l.names))
		if whole.sent == 0 {
			continue
		}
		all[proto] = whole
		for p, name := range l.names {
			t.Logf("%s, phase %q: %s", proto, name, tallyShots(shots, proto, p, p))
		}
		t.Logf("%s, whole load: %s", proto, whole)
		if whole.nProblems > 0 {
			t.Errorf("%s: %d of %d requests the proxy accepted did not get a 2xx from the primary or a marked fallback; first: %q",
				proto, whole.nProblems, whole.sent, whole.problems)
		}
	}
	return all
}

// errorKinds groups failed requests by a short form of their error.
func errorKinds(shots []shot) string {
	m := map[string]int{}
	for _, s := range shots {
		if s.err == nil && s.code == http.StatusOK {
			continue
		}
		k := fmt.Sprintf("HTTP %d", s.code)
		if s.err != nil {
			k = s.err.Error()
			if i := strings.LastIndex(k, ": "); i >= 0 && s.code == 0 {
				k = k[i+2:]
			}
			if len(k) > 80 {
				k = k[:80]
			}
		}
		m[s.proto+" "+k]++
	}
	return sortedCounts(m)
}
