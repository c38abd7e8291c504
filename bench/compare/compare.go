// Package compare is the side-by-side benchmark suite behind
// bench/compare.sh (`make bench-compare`): on one machine, in one run, with
// the same backend and the same open-loop load (package loadtest), it
// measures
//
//   - direct: the load generator straight to the backend;
//   - nginx (keep-alive upstream) and haproxy reverse proxies;
//   - the Switchyard proxy on a plain route, with the prediction cache hit,
//     and with shadow at 100 %;
//   - the backend with dynamic batching off (a second backend process) and
//     in-process ONNX Runtime (the same model, no protocol at all);
//   - the backend's cold start with and without warm-up;
//
// at fixed rates, repeated, reporting medians and ranges, the latency each
// proxy adds over direct, requests per proxy CPU-second and the proxy's
// RSS, and ratios against nginx computed pair by pair (same repetition,
// same rate). Every process runs in the foreground as a child on
// 127.0.0.1, configured in a temporary folder, and is stopped at the end.
// A piece whose binary or feature is missing is skipped with its reason,
// never faked.
package compare

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/switchyard-dev/switchyard/inference-backend/backend"
	"github.com/switchyard-dev/switchyard/loadtest"
	"github.com/switchyard-dev/switchyard/oip"
)

// Piece names.
const (
	Direct           = "direct"
	Nginx            = "nginx"
	HAProxy          = "haproxy"
	Switchyard       = "switchyard"
	SwitchyardCache  = "switchyard-cache"
	SwitchyardShadow = "switchyard-shadow"
	BatchingOff      = "backend-batching-off"
	InProcess        = "inprocess-ort"
	ColdStartPiece   = "cold-start"
)

// AllPieces is every piece in report order.
var AllPieces = []string{Direct, Nginx, HAProxy, Switchyard, SwitchyardCache, SwitchyardShadow, BatchingOff, InProcess, ColdStartPiece}

// ProxyPieces are the pieces whose proxy process is measured.
var ProxyPieces = []string{Nginx, HAProxy, Switchyard, SwitchyardCache, SwitchyardShadow}

// Config is one suite run.
type Config struct {
	// Switchyard is the switchyard binary (required: it serves the
	// backends, control plane and proxy).
	Switchyard string
	// Nginx and HAProxy are the peers' binaries; "" skips the piece.
	Nginx, HAProxy string
	// ORTLib is the ONNX Runtime library for the backends and the
	// in-process piece ("" = backend.FindORTLibrary's search).
	ORTLib string
	// PeerWorkers is nginx's worker_processes and haproxy's nbthread
	// (default 1).
	PeerWorkers int
	Rates       []float64     // fixed rates (default 1000, 2000)
	Duration    time.Duration // each measured run (default 5s)
	Warmup      time.Duration // unmeasured run before each (default 1s)
	Repeats     int           // repetitions (default 3)
	Workers     int           // load generator workers (default 64)
	// Pieces limits the run to these pieces (default AllPieces); direct
	// always runs (the added latencies are measured against it).
	Pieces []string
	// ColdStartRequests are the first requests timed after each load
	// (default 5).
	ColdStartRequests int
	// WorkDir holds configs, model repositories and logs ("" = a new
	// temporary folder, removed at the end).
	WorkDir string
	// Progress receives one line per run (nil: none).
	Progress io.Writer
	// ProxyArgs are more flags for the switchyard proxy (e.g.
	// --shadow-agent-priority=normal).
	ProxyArgs []string
}

func (c *Config) defaults() {
	if c.PeerWorkers <= 0 {
		c.PeerWorkers = 1
	}
	if len(c.Rates) == 0 {
		c.Rates = []float64{1000, 2000}
	}
	if c.Duration <= 0 {
		c.Duration = 5 * time.Second
	}
	if c.Warmup < 0 {
		c.Warmup = 0
	}
	if c.Repeats <= 0 {
		c.Repeats = 3
	}
	if c.Workers <= 0 {
		c.Workers = 64
	}
	if len(c.Pieces) == 0 {
		c.Pieces = AllPieces
	}
	if c.ColdStartRequests <= 0 {
		c.ColdStartRequests = 5
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
}

// Skip is a piece that did not run and why.
type Skip struct {
	Piece  string `json:"piece"`
	Reason string `json:"reason"`
}

// ColdSample is one cold-start measurement.
type ColdSample struct {
	Rep         int     `json:"rep"`
	Warmup      int     `json:"warmup"`
	LoadToReady float64 `json:"load_to_ready_ms"`
	FirstMs     float64 `json:"first_request_ms"`
	RestMs      float64 `json:"later_requests_median_ms"`
	Errors      int     `json:"errors"`
}

// Results is a suite run.
type Results struct {
	Started  time.Time    `json:"started"`
	Machine  string       `json:"machine"`
	Versions []string     `json:"versions"`
	Config   string       `json:"config"`
	Samples  []Sample     `json:"samples"`
	Rows     []Row        `json:"rows"`
	Cold     []ColdSample `json:"cold_start"`
	Skipped  []Skip       `json:"skipped"`
	Notes    []string     `json:"notes"`
	// Checks are counters read from the proxy after the runs, proving the
	// pieces did what they are named for: cache_hits, cache_misses,
	// shadow_mirrored, shadow_dropped, shadow_compared.
	Checks map[string]float64 `json:"checks,omitempty"`
}

func (r *Results) skip(piece, format string, a ...any) {
	r.Skipped = append(r.Skipped, Skip{Piece: piece, Reason: fmt.Sprintf(format, a...)})
}

func (r *Results) skipped(piece string) bool {
	for _, s := range r.Skipped {
		if s.Piece == piece {
			return true
		}
	}
	return false
}

// target is a runnable piece.
type target struct {
	piece   string
	sender  loadtest.Sender
	proxy   *child // measured proxy process (nil: none)
	backend *child // serving backend (nil: in-process)
}

// Run runs the suite. It returns an error only when the suite cannot run at
// all (no switchyard binary, the backend does not start); a piece that
// cannot run is listed in Results.Skipped.
func Run(ctx context.Context, cfg Config) (*Results, error) {
	cfg.defaults()
	if cfg.Switchyard == "" {
		return nil, errors.New("the switchyard binary is required")
	}
	lib, err := backend.FindORTLibrary(cfg.ORTLib)
	if err != nil {
		return nil, err
	}
	want := map[string]bool{Direct: true}
	for _, p := range cfg.Pieces {
		want[p] = true
	}
	work := cfg.WorkDir
	if work == "" {
		d, err := os.MkdirTemp("", "switchyard-bench-compare-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(d)
		work = d
	}
	res := &Results{Started: time.Now().UTC(), Machine: Machine(),
		Config: fmt.Sprintf("rates %v rps, %s per run after %s warm-up, %d repetitions, %d load workers, peers with %d worker(s)",
			cfg.Rates, cfg.Duration, cfg.Warmup, cfg.Repeats, cfg.Workers, cfg.PeerWorkers)}
	res.Versions = append(res.Versions, "go "+goVersion())
	var children []*child
	defer func() {
		for i := len(children) - 1; i >= 0; i-- {
			children[i].stop()
		}
	}()
	hc := loadtest.NewHTTPClient(8)
	defer hc.CloseIdleConnections()

	// Two model repositories: A as written (dynamic batching on, warm-up 1),
	// B with batching off for recommender-v1.
	repoA, repoB := filepath.Join(work, "models-a"), filepath.Join(work, "models-b")
	for _, repo := range []string{repoA, repoB} {
		if out, err := exec.CommandContext(ctx, cfg.Switchyard, "demo-models", "--out", repo).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("switchyard demo-models: %v: %s", err, out)
		}
	}
	if err := writeModelConfig(repoB, false, 1); err != nil {
		return nil, err
	}
	startBackend := func(name, repo string) (*child, string, error) {
		hp, err1 := freePort()
		gp, err2 := freePort()
		if err := errors.Join(err1, err2); err != nil {
			return nil, "", err
		}
		addr := fmt.Sprintf("127.0.0.1:%d", hp)
		// The cold-start step unloads and loads through the repository
		// API: open on this loopback-only benchmark backend.
		c, err := startChild(work, name, cfg.Switchyard, "backend", "--model-repository", repo, "--http", addr,
			"--grpc", fmt.Sprintf("127.0.0.1:%d", gp), "--ort-lib", lib, "--log-level", "warn", "--repository-api-open")
		if err != nil {
			return nil, "", err
		}
		children = append(children, c)
		return c, addr, waitOK(ctx, hc, "http://"+addr+"/v2/models/recommender-v1/ready", c, time.Minute)
	}
	beA, addrA, err := startBackend("backend-a", repoA)
	if err != nil {
		return nil, fmt.Errorf("backend: %w", err)
	}

	// The same request for every piece: generated from the model's
	// metadata (seed 1). One distinct input, so the cache piece hits.
	md, err := loadtest.FetchMetadata(ctx, loadtest.Target{Protocol: "rest", Model: "recommender-v1"}, addrA, hc)
	if err != nil {
		return nil, err
	}
	reqs, err := loadtest.Generate(md, 1, 1)
	if err != nil {
		return nil, err
	}
	lhc := loadtest.NewHTTPClient(cfg.Workers)
	defer lhc.CloseIdleConnections()
	var encErr error
	rest := func(addr, model string) loadtest.Sender {
		s, err := loadtest.NewRESTSender(lhc, addr, model, "", reqs)
		if err != nil {
			encErr = err
		}
		return s
	}
	targets := []target{{piece: Direct, sender: rest(addrA, "recommender-v1"), backend: beA}}

	if want[Nginx] {
		if cfg.Nginx == "" {
			res.skip(Nginx, "nginx not installed (apt-get install -y nginx)")
		} else if c, addr, err := startPeer(ctx, hc, work, Nginx, func(port int) (*child, error) {
			return startNginx(cfg.Nginx, work, port, addrA, cfg.PeerWorkers)
		}); err != nil {
			res.skip(Nginx, "nginx did not start: %v", err)
		} else {
			children = append(children, c)
			res.Versions = append(res.Versions, PeerVersion(cfg.Nginx))
			targets = append(targets, target{piece: Nginx, sender: rest(addr, "recommender"), proxy: c, backend: beA})
		}
	}
	if want[HAProxy] {
		if cfg.HAProxy == "" {
			res.skip(HAProxy, "haproxy not installed (apt-get install -y haproxy)")
		} else if c, addr, err := startPeer(ctx, hc, work, HAProxy, func(port int) (*child, error) {
			return startHAProxy(cfg.HAProxy, work, port, addrA, cfg.PeerWorkers)
		}); err != nil {
			res.skip(HAProxy, "haproxy did not start: %v", err)
		} else {
			children = append(children, c)
			res.Versions = append(res.Versions, PeerVersion(cfg.HAProxy))
			targets = append(targets, target{piece: HAProxy, sender: rest(addr, "recommender"), proxy: c, backend: beA})
		}
	}

	var proxyAdmin string
	if want[Switchyard] || want[SwitchyardCache] || want[SwitchyardShadow] {
		px, pxAddr, admin, ready, err := startSwitchyard(ctx, hc, cfg, work, addrA, want, &children)
		if err != nil {
			for _, p := range []string{Switchyard, SwitchyardCache, SwitchyardShadow} {
				if want[p] {
					res.skip(p, "not available yet: %v", err)
				}
			}
		} else {
			proxyAdmin = admin
			for _, m := range switchyardModels {
				if !want[m.piece] {
					continue
				}
				if why, ok := ready[m.piece]; ok && why != "" {
					res.skip(m.piece, "not available yet: %s", why)
					continue
				}
				targets = append(targets, target{piece: m.piece, sender: rest(pxAddr, m.model), proxy: px, backend: beA})
			}
		}
	}

	var beB *child
	var backendB string
	if want[BatchingOff] || want[ColdStartPiece] {
		c, addrB, err := startBackend("backend-b", repoB)
		if err != nil {
			res.skip(BatchingOff, "second backend did not start: %v", err)
			res.skip(ColdStartPiece, "second backend did not start: %v", err)
		} else {
			beB, backendB = c, addrB
			if want[BatchingOff] {
				targets = append(targets, target{piece: BatchingOff, sender: rest(addrB, "recommender-v1"), backend: beB})
			}
		}
	}
	if want[InProcess] {
		s, closeFn, err := newInProcess(lib, filepath.Join(repoA, "recommender-v1", "1", "model.onnx"), reqs)
		if err != nil {
			res.skip(InProcess, "in-process ONNX Runtime: %v", err)
		} else {
			defer closeFn()
			res.Versions = append(res.Versions, "onnxruntime "+backend.ORTVersion())
			targets = append(targets, target{piece: InProcess, sender: s})
		}
	}

	if encErr != nil {
		return nil, fmt.Errorf("encode the request: %w", encErr)
	}

	// The runs: each repetition walks the pieces in a rotated order.
	for rep := range cfg.Repeats {
		for _, t := range Rotate(targets, rep) {
			for _, rate := range cfg.Rates {
				if err := ctx.Err(); err != nil {
					return res, err
				}
				s, err := measure(ctx, cfg, t, rate, rep)
				if err != nil {
					return res, fmt.Errorf("%s at %.0f rps: %w", t.piece, rate, err)
				}
				res.Samples = append(res.Samples, *s)
				fmt.Fprintf(cfg.Progress, "rep %d/%d  %-22s %5.0f rps: achieved %7.1f  p50 %7.3f ms  p99 %7.3f ms  errors %d  unsent %d%s\n",
					rep+1, cfg.Repeats, t.piece, rate, s.Achieved, s.P50ms, s.P99ms, s.Errors, s.Unsent, cpuNote(s))
			}
		}
	}
	if backendB != "" && want[ColdStartPiece] {
		coldStarts(ctx, cfg, res, lhc, repoB, backendB, reqs)
	}
	if proxyAdmin != "" {
		res.Notes = append(res.Notes, verifySwitchyard(ctx, hc, proxyAdmin, want, res)...)
	}
	order := make([]string, 0, len(targets))
	for _, p := range AllPieces {
		for _, t := range targets {
			if t.piece == p {
				order = append(order, p)
			}
		}
	}
	res.Rows = Aggregate(res.Samples, order, cfg.Rates, Direct, Nginx, InProcess)
	return res, nil
}

func cpuNote(s *Sample) string {
	var b strings.Builder
	if s.HasProxy {
		fmt.Fprintf(&b, "  proxy CPU %.2fs RSS %.1f MiB", s.ProxyCPU, float64(s.ProxyRSSPeak)/(1<<20))
	}
	if s.HasBackend {
		fmt.Fprintf(&b, "  backend CPU %.2fs", s.BackendCPU)
	}
	return b.String()
}

// measure runs an unmeasured warm-up, then the measured run with the
// proxy's and backend's /proc sampled over exactly that run.
func measure(ctx context.Context, cfg Config, t target, rate float64, rep int) (*Sample, error) {
	run := func(d time.Duration) (*loadtest.Result, error) {
		return loadtest.Run(ctx, loadtest.Config{Rate: rate, Duration: d, MaxRequests: int(rate*d.Seconds()) + 1,
			Workers: cfg.Workers, Timeout: 5 * time.Second}, t.sender)
	}
	if cfg.Warmup > 0 {
		if _, err := run(cfg.Warmup); err != nil {
			return nil, err
		}
	}
	var px, be *procSampler
	var err error
	if t.proxy != nil {
		if px, err = startSampler(t.proxy.pids()); err != nil {
			return nil, fmt.Errorf("proxy /proc: %w", err)
		}
	}
	if t.backend != nil {
		if be, err = startSampler([]int{t.backend.pid()}); err != nil {
			return nil, fmt.Errorf("backend /proc: %w", err)
		}
	}
	r, err := run(cfg.Duration)
	s := &Sample{Piece: t.piece, Rate: rate, Rep: rep}
	if px != nil {
		cpu, rss, perr := px.stop()
		s.HasProxy, s.ProxyCPU, s.ProxyRSSPeak = true, cpu, rss
		err = errors.Join(err, perr)
	}
	if be != nil {
		cpu, _, berr := be.stop()
		s.HasBackend, s.BackendCPU = true, cpu
		err = errors.Join(err, berr)
	}
	if err != nil {
		return nil, err
	}
	s.Achieved = r.AchievedRate()
	s.P50ms = float64(r.Hist.Quantile(0.5)) / 1e6
	s.P99ms = float64(r.Hist.Quantile(0.99)) / 1e6
	s.MaxMs = float64(r.Hist.MaxNS) / 1e6
	s.ServiceP50ms = float64(r.ServiceHist.Quantile(0.5)) / 1e6
	s.LagP50ms = float64(r.LagHist.Quantile(0.5)) / 1e6
	s.LagP99ms = float64(r.LagHist.Quantile(0.99)) / 1e6
	s.Scheduled, s.Completed, s.OK, s.Errors, s.Unsent = r.Scheduled, r.Completed, r.OK, r.ErrorCount(), r.Unsent
	return s, nil
}

func startPeer(ctx context.Context, hc *http.Client, work, name string, start func(port int) (*child, error)) (*child, string, error) {
	port, err := freePort()
	if err != nil {
		return nil, "", err
	}
	c, err := start(port)
	if err != nil {
		return nil, "", err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	if err := waitOK(ctx, hc, "http://"+addr+"/ready", c, 15*time.Second); err != nil {
		c.stop()
		return nil, "", err
	}
	return c, addr, nil
}

// switchyardModels are the virtual models the proxy serves, one per piece,
// all on backend A's recommender-v1 (shadow to recommender-v2).
var switchyardModels = []struct {
	piece, model, extra string
}{
	{Switchyard, "recommender", ``},
	{SwitchyardCache, "recommender-cached", `,"cache":{"ttl":"10m","maxEntries":10000}`},
	{SwitchyardShadow, "recommender-shadowed", `,"shadow":{"version":"v2","percent":100,"compare":{"mode":"topk","k":10}}`},
}

// startSwitchyard starts the control plane and the proxy, declares the
// models through the control plane's REST API and waits until the proxy
// serves them. ready maps a piece to "" when its model is served, or why
// not.
func startSwitchyard(ctx context.Context, hc *http.Client, cfg Config, work, backendAddr string, want map[string]bool,
	children *[]*child) (px *child, pxAddr, admin string, ready map[string]string, err error) {
	ports := make([]int, 5)
	for i := range ports {
		if ports[i], err = freePort(); err != nil {
			return
		}
	}
	api := fmt.Sprintf("127.0.0.1:%d", ports[0])
	cp, err := startChild(work, "controlplane", cfg.Switchyard, "controlplane", "--state", filepath.Join(work, "cp.db"),
		"--api", api, "--xds", fmt.Sprintf("127.0.0.1:%d", ports[1]), "--insecure-loopback-no-auth", "--log-level", "warn")
	if err != nil {
		return
	}
	*children = append(*children, cp)
	if err = waitOK(ctx, hc, "http://"+api+"/v1/models", cp, 30*time.Second); err != nil {
		return
	}
	ready = map[string]string{}
	for _, m := range switchyardModels {
		if !want[m.piece] {
			continue
		}
		doc := fmt.Sprintf(`{"apiVersion":"switchyard.dev/v1","kind":"Model","metadata":{"name":%q},
 "spec":{"versions":[{"name":"v1","endpoints":[%q],"backendModel":"recommender-v1"},
                     {"name":"v2","endpoints":[%q],"backendModel":"recommender-v2"}],
         "traffic":{"weights":{"v1":100}},"timeout":"2s"%s}}`, m.model, backendAddr, backendAddr, m.extra)
		if perr := put(ctx, hc, "http://"+api+"/v1/models/"+m.model, doc); perr != nil {
			ready[m.piece] = "the control plane refused the model: " + perr.Error()
		}
	}
	pxAddr = fmt.Sprintf("127.0.0.1:%d", ports[2])
	admin = fmt.Sprintf("127.0.0.1:%d", ports[4])
	args := append([]string{"proxy", "--xds", fmt.Sprintf("127.0.0.1:%d", ports[1]),
		"--http", pxAddr, "--grpc", fmt.Sprintf("127.0.0.1:%d", ports[3]), "--admin", admin,
		"--node-id", "bench-compare", "--state-dir", filepath.Join(work, "proxy-state"), "--log-level", "warn"}, cfg.ProxyArgs...)
	px, err = startChild(work, "proxy", cfg.Switchyard, args...)
	if err != nil {
		return
	}
	*children = append(*children, px)
	if err = waitOK(ctx, hc, "http://"+admin+"/ready", px, 30*time.Second); err != nil {
		return
	}
	for _, m := range switchyardModels {
		if !want[m.piece] || ready[m.piece] != "" {
			continue
		}
		if werr := waitOK(ctx, hc, "http://"+pxAddr+"/v2/models/"+m.model+"/ready", px, 30*time.Second); werr != nil {
			ready[m.piece] = "the proxy does not serve it: " + werr.Error()
		}
	}
	return
}

func put(ctx context.Context, hc *http.Client, url, body string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, url, strings.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(b)))
	}
	return nil
}

// verifySwitchyard checks, after the runs, that the cache piece was served
// from the cache and the shadow piece was mirrored, from the proxy's
// answer header and its /metrics.
func verifySwitchyard(ctx context.Context, hc *http.Client, admin string, want map[string]bool, res *Results) []string {
	b, err := get(ctx, hc, "http://"+admin+"/metrics")
	if err != nil {
		return []string{"proxy /metrics: " + err.Error()}
	}
	var notes []string
	res.Checks = map[string]float64{}
	if want[SwitchyardCache] && !res.skipped(SwitchyardCache) {
		res.Checks["cache_hits"] = MetricSum(b, "switchyard_cache_hits_total")
		res.Checks["cache_misses"] = MetricSum(b, "switchyard_cache_misses_total")
		notes = append(notes, fmt.Sprintf("switchyard-cache: the proxy counted %.0f cache hits and %.0f misses over all its runs",
			res.Checks["cache_hits"], res.Checks["cache_misses"]))
	}
	if want[SwitchyardShadow] && !res.skipped(SwitchyardShadow) {
		res.Checks["shadow_mirrored"] = MetricSum(b, "switchyard_shadow_mirrored_total")
		res.Checks["shadow_dropped"] = MetricSum(b, "switchyard_shadow_dropped_total")
		res.Checks["shadow_compared"] = MetricSum(b, "switchyard_shadow_compared_total")
		notes = append(notes, fmt.Sprintf("switchyard-shadow: the proxy mirrored %.0f requests, dropped %.0f, compared %.0f",
			res.Checks["shadow_mirrored"], res.Checks["shadow_dropped"], res.Checks["shadow_compared"]))
	}
	return notes
}

func get(ctx context.Context, hc *http.Client, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return b, err
}

// MetricSum adds the values of every sample of a metric in a Prometheus
// text exposition (all label sets); 0 when absent (pure).
func MetricSum(text []byte, name string) float64 {
	var sum float64
	for line := range bytes.SplitSeq(text, []byte("\n")) {
		if !bytes.HasPrefix(line, []byte(name)) {
			continue
		}
		rest := line[len(name):]
		if len(rest) == 0 || (rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		f := bytes.Fields(rest[bytes.LastIndexByte(rest, '}')+1:])
		if len(f) == 0 {
			continue
		}
		if v, err := strconv.ParseFloat(string(f[0]), 64); err == nil {
			sum += v
		}
	}
	return sum
}

// writeModelConfig writes recommender-v1's config.yaml in repo: dynamic
// batching as the demo models have it, or off; and the warm-up count.
func writeModelConfig(repo string, batching bool, warmup int) error {
	var b strings.Builder
	b.WriteString("max_batch_size: 64\n")
	if batching {
		b.WriteString("dynamic_batching:\n  max_queue_delay: 200us\n")
	}
	fmt.Fprintf(&b, "warmup: %d\n", warmup)
	return os.WriteFile(filepath.Join(repo, "recommender-v1", "config.yaml"), []byte(b.String()), 0o644)
}

// coldStarts measures recommender-v1 on backend B per repetition, first
// with warm-up 0 and then 1: the backend re-reads config.yaml on each load
// (repository extension: unload, load, poll ready, then the first requests
// one at a time).
func coldStarts(ctx context.Context, cfg Config, res *Results, hc *http.Client, repo, addr string, reqs []*oip.InferRequest) {
	s, err := loadtest.NewRESTSender(hc, addr, "recommender-v1", "", reqs)
	if err != nil {
		res.Notes = append(res.Notes, "cold start: "+err.Error())
		return
	}
	for rep := range cfg.Repeats {
		for _, warm := range []int{0, 1} {
			if err := writeModelConfig(repo, false, warm); err != nil {
				res.Notes = append(res.Notes, "cold start: "+err.Error())
				return
			}
			cs, err := loadtest.MeasureColdStart(ctx, hc, loadtest.ColdStartConfig{Addr: addr, Model: "recommender-v1",
				Requests: cfg.ColdStartRequests, Timeout: time.Minute}, s.Bodies)
			if err != nil {
				res.Notes = append(res.Notes, "cold start: "+err.Error())
				return
			}
			c := ColdSample{Rep: rep, Warmup: warm, LoadToReady: float64(cs.LoadToReady) / 1e6}
			var rest []float64
			for i, d := range cs.FirstLatency {
				if i == 0 {
					c.FirstMs = float64(d) / 1e6
				} else {
					rest = append(rest, float64(d)/1e6)
				}
			}
			c.RestMs = SpreadOf(rest).Median
			for _, k := range cs.FirstErrors {
				if k != "" {
					c.Errors++
				}
			}
			res.Cold = append(res.Cold, c)
			fmt.Fprintf(cfg.Progress, "rep %d/%d  cold start warm-up %d: load to ready %.2f ms, first request %.3f ms, later %.3f ms\n",
				rep+1, cfg.Repeats, warm, c.LoadToReady, c.FirstMs, c.RestMs)
		}
	}
	_ = writeModelConfig(repo, false, 1)
}
