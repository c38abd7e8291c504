package compare

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/switchyard-dev/switchyard/loadtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
	)
}

// buildSwitchyard builds cmd/switchyard into a temporary folder.
func buildSwitchyard(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool on PATH to build cmd/switchyard")
	}
	bin := filepath.Join(t.TempDir(), "switchyard")
	cmd := exec.Command(goBin, "build", "-o", bin, "github.com/switchyard-dev/switchyard/cmd/switchyard")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build switchyard: %v\n%s", err, out)
	}
	return bin
}

// TestSuiteSmoke runs every piece of the suite at tiny scale (50 rps for
// 1 s, one repetition) so the suite cannot rot: real backends, control
// plane, proxy, nginx and haproxy (when installed) as child processes on
// 127.0.0.1. It asserts counts and invariants, never timing.
func TestSuiteSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the smoke run builds cmd/switchyard and starts backends, control plane, proxy, nginx and haproxy (~20 s)")
	}
	bin := buildSwitchyard(t)
	nginx, _ := exec.LookPath("nginx")
	haproxy, _ := exec.LookPath("haproxy")
	if nginx == "" {
		if _, err := os.Stat("/usr/sbin/nginx"); err == nil {
			nginx = "/usr/sbin/nginx"
		}
	}
	if haproxy == "" {
		if _, err := os.Stat("/usr/sbin/haproxy"); err == nil {
			haproxy = "/usr/sbin/haproxy"
		}
	}
	const rate = 50
	var progress bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, err := Run(ctx, Config{Switchyard: bin, Nginx: nginx, HAProxy: haproxy, Rates: []float64{rate}, Duration: time.Second,
		Warmup: 200 * time.Millisecond, Repeats: 1, Workers: 4, ColdStartRequests: 2, WorkDir: t.TempDir(), Progress: &progress,
		// The smoke checks that every request of the shadow piece was
		// mirrored. At its default SCHED_IDLE the agent gets no CPU while
		// other jobs hold every core (by design), so here it runs at the
		// proxy's priority; the suite's own runs keep the default.
		ProxyArgs: []string{"--shadow-agent-priority=normal"}})
	if err != nil {
		t.Fatalf("suite: %v\n%s", err, progress.String())
	}
	t.Logf("progress:\n%s", progress.String())
	skipped := map[string]string{}
	for _, s := range res.Skipped {
		skipped[s.Piece] = s.Reason
	}
	var md bytes.Buffer
	if err := res.WriteMarkdown(&md); err != nil {
		t.Fatal(err)
	}
	var js bytes.Buffer
	if err := res.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var decoded Results
	if err := json.Unmarshal(js.Bytes(), &decoded); err != nil || len(decoded.Samples) != len(res.Samples) {
		t.Errorf("JSON round trip: %v (%d samples, want %d)", err, len(decoded.Samples), len(res.Samples))
	}
	planned := loadtest.Planned(rate, time.Second, rate+1)
	for _, piece := range AllPieces {
		t.Run(piece, func(t *testing.T) {
			if why, ok := skipped[piece]; ok {
				if !strings.Contains(md.String(), "- "+piece+": "+why) {
					t.Errorf("skipped %s not listed in the report:\n%s", piece, md.String())
				}
				t.Skipf("skipped by the suite: %s", why)
			}
			if piece == ColdStartPiece {
				checkColdStart(t, res)
				return
			}
			var got []Sample
			for _, s := range res.Samples {
				if s.Piece == piece {
					got = append(got, s)
				}
			}
			if len(got) != 1 {
				t.Fatalf("%d samples, want 1 (one rate, one repetition)", len(got))
			}
			s := got[0]
			if s.Scheduled != planned || s.Completed != planned || s.OK != planned || s.Errors != 0 || s.Unsent != 0 {
				t.Errorf("sample %+v: want %d scheduled, completed and ok, no errors", s, planned)
			}
			isProxy := isIn(piece, ProxyPieces)
			if s.HasProxy != isProxy || (isProxy && (s.ProxyRSSPeak <= 0 || s.ProxyCPU < 0)) {
				t.Errorf("proxy stats %+v: want them exactly for proxy pieces, RSS > 0", s)
			}
			if s.HasBackend != (piece != InProcess) || s.BackendCPU < 0 {
				t.Errorf("backend stats %+v: want them for every piece but in-process", s)
			}
			if !strings.Contains(md.String(), "| "+piece+" |") && piece != Direct && piece != BatchingOff && piece != InProcess {
				t.Errorf("report has no row for %s:\n%s", piece, md.String())
			}
			switch piece {
			case SwitchyardCache:
				// Every request carried the same input: all but the
				// first were answered from the cache.
				if res.Checks["cache_hits"] < float64(planned) {
					t.Errorf("cache hits %v, want >= %d (checks %v)", res.Checks["cache_hits"], planned, res.Checks)
				}
			case SwitchyardShadow:
				if res.Checks["shadow_mirrored"] < float64(planned) {
					t.Errorf("mirrored %v, want >= %d (checks %v)", res.Checks["shadow_mirrored"], planned, res.Checks)
				}
			}
		})
	}
	// One summary row per piece that ran, each with its one run.
	for _, r := range res.Rows {
		if r.Runs != 1 || r.Rate != rate {
			t.Errorf("row %s: %d runs at %v rps, want 1 at %d", r.Piece, r.Runs, r.Rate, rate)
		}
	}
	if t.Failed() {
		t.Logf("report:\n%s", md.String())
	}
}

func checkColdStart(t *testing.T, res *Results) {
	t.Helper()
	if len(res.Cold) != 2 {
		t.Fatalf("%d cold-start samples, want 2 (warm-up 0 and 1); notes %v", len(res.Cold), res.Notes)
	}
	for i, c := range res.Cold {
		if c.Warmup != i || c.Errors != 0 || c.LoadToReady <= 0 || c.FirstMs <= 0 {
			t.Errorf("cold start %+v: want warm-up %d, load-to-ready and a first request, no errors", c, i)
		}
	}
}
