//go:build linux

package canaryctl_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/api"
	"github.com/switchyard-dev/switchyard/controlplane/canaryctl"
	"github.com/switchyard-dev/switchyard/controlplane/cptest"
)

const fsizeChildEnv = "SWITCHYARD_TEST_FSIZE_CHILD"

// TestCanaryStateWriteFailsLoudly runs a control plane whose state file
// cannot grow: the test binary again, in a child process under
// RLIMIT_FSIZE (process-wide, so not in this one; SIGXFSZ ignored, so
// writes fail with EFBIG as on a full disk). Tests run as root, so file
// permissions would prove nothing. In the child: a manual abort is
// answered 507 naming the cause and changes nothing; an automatic
// rollback fails the same way and the canary holds; the state in memory
// is what the file holds; the write-error metric rises and the status
// says why; with room again the rollback goes through, and a restart reads
// back what ran (issue 15: the failure was a log line and the saved state
// disagreed with the running one).
func TestCanaryStateWriteFailsLoudly(t *testing.T) {
	if os.Getenv(fsizeChildEnv) == "" {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCanaryStateWriteFailsLoudly$", "-test.v", "-test.timeout=120s")
		cmd.Env = append(os.Environ(), fsizeChildEnv+"=1")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "--- PASS: TestCanaryStateWriteFailsLoudly") {
			t.Fatalf("child under RLIMIT_FSIZE: %v\n%s", err, out)
		}
		line := grepLines(string(out), "state writes fail with: ")
		if line == "" {
			t.Fatalf("the child did not see a failing write:\n%s", out)
		}
		t.Log(strings.TrimSpace(line))
		return
	}
	signal.Ignore(syscall.SIGXFSZ)
	e := newTickEnv(t, "")
	e.put(cptest.CanaryModel(t, map[string]int{"v1": 80, "v2": 20}, &api.Canary{Version: "v2", StepDuration: api.Duration(time.Hour), MinRequests: 10, ConsecutiveFailures: 2}))
	e.tick()
	started := e.get()
	before := e.status()
	if before.Phase != "progressing" {
		t.Fatalf("canary did not start: %s", cptest.MustJSON(before))
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
		t.Fatal(err)
	}
	// Every bbolt commit writes pages past the two meta pages (8 KiB).
	full := syscall.Rlimit{Cur: 8192, Max: lim.Max}
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &full); err != nil {
		t.Fatal(err)
	}
	limited := true
	defer func() {
		if limited {
			syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim)
		}
	}()

	// A manual action: 507, naming the cause; nothing moves.
	r := cptest.Call(t, e.cp, "POST", "/v1/models/m/canary/abort", cptest.OperatorToken, map[string]any{"waitForAck": "0s"})
	var er api.ErrorResponse
	r.Decode(t, &er)
	if r.Code != http.StatusInsufficientStorage || !strings.Contains(er.Error, "file too large") || !strings.Contains(er.Error, "canary write (canary-abort)") {
		t.Fatalf("abort on a full disk: %d %s", r.Code, r.Body)
	}
	t.Logf("state writes fail with: %s", er.Error)
	if cur := e.get(); cur.Revision != started.Revision {
		t.Fatalf("a failed abort moved the model to revision %d", cur.Revision)
	}
	if len(e.failed()) != 0 {
		t.Fatalf("a failed abort marked %v", e.failed())
	}

	// Failing analyses: the first failing check cannot be written, so it
	// does not count; the canary holds at step 1, visibly.
	e.src.Set("v2", cptest.Figures(200, 200, "status_5xx"))
	e.tick()
	e.tick()
	s := e.status()
	if s.Phase != "progressing" || s.Step != 1 || !canaryctl.SameSplit(s.Weights, map[string]int{"v1": 80, "v2": 20}) || s.ConsecutiveFailures != 0 ||
		len(s.History) != len(before.History) || !strings.Contains(s.StateError, "file too large") || !strings.Contains(s.StateError, "canary holds") {
		t.Fatalf("status while the state file is full: %s", cptest.MustJSON(s))
	}
	if cur := e.get(); cur.Revision != started.Revision {
		t.Fatalf("a failed rollback moved the model to revision %d", cur.Revision)
	}
	// What runs is what the file holds.
	running := e.cc.RunState("m")
	if saved, run := savedRun(t, e), cptest.MustJSON(running); saved != run {
		t.Fatalf("saved canary state differs from the running one:\nsaved   %s\nrunning %s", saved, run)
	}
	body := cptest.Metrics(t, e.cp)
	if !strings.Contains(body, `switchyard_controlplane_store_write_errors_total{cause="no_space",op="put"} 1`) ||
		!strings.Contains(body, `switchyard_controlplane_store_write_errors_total{cause="no_space",op="side"} 2`) {
		t.Fatalf("write errors not counted (an abort, two failing checks):\n%s", grepLines(body, "store_write_errors"))
	}
	if !strings.Contains(body, `switchyard_canary_phase{model="m",phase="progressing"} 1`) {
		t.Fatalf("phase metric moved:\n%s", grepLines(body, "canary_phase"))
	}

	// Room again: the next tick rolls back, the error clears.
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
		t.Fatal(err)
	}
	limited = false
	e.tick()
	if s = e.status(); s.ConsecutiveFailures != 1 || s.StateError != "" {
		t.Fatalf("with room again, the first failing check: %s", cptest.MustJSON(s))
	}
	e.tick()
	s = e.status()
	if s.Phase != "rolled_back" || s.StateError != "" || e.get().Model.Spec.Traffic.Weights["v2"] != 0 {
		t.Fatalf("with room again: %s", cptest.MustJSON(s))
	}
	if _, ok := e.failed()["v2"]; !ok {
		t.Fatal("v2 not marked failed by the rollback")
	}
	path := e.path
	if err := e.cp.Close(); err != nil {
		t.Fatal(err)
	}
	after := newTickEnv(t, path).status()
	if after.Phase != "rolled_back" || after.Revision != s.Revision || fmt.Sprint(after.History) != fmt.Sprint(s.History) {
		t.Fatalf("after a restart:\n%s\nbefore:\n%s", cptest.MustJSON(after), cptest.MustJSON(s))
	}
}

// savedRun reads the model's canary run state as the state file holds it,
// in JSON.
func savedRun(t *testing.T, e *tickEnv) string {
	t.Helper()
	side, err := e.cp.Store().Side(context.Background(), canaryctl.SideKind)
	if err != nil {
		t.Fatal(err)
	}
	st, err := canaryctl.SavedRunState(side["m"].Value)
	if err != nil {
		t.Fatal(err)
	}
	return cptest.MustJSON(st)
}

func grepLines(text, sub string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
