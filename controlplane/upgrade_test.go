package controlplane_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/api"
	"github.com/switchyard-dev/switchyard/controlplane"
	"github.com/switchyard-dev/switchyard/controlplane/cptest"
)

// The upgrade fixture is a bbolt state file written by an earlier release
// (testdata/upgrade/state.db) and the REST answers that release gave for it
// (testdata/upgrade/golden/*.json). Regenerate both only when the stored
// format changes on purpose, with the old code:
//
//	go test ./controlplane -run TestUpgradeReadsPreviousStateFile -write-upgrade-fixture
var writeUpgradeFixture = flag.Bool("write-upgrade-fixture", false, "write testdata/upgrade (the state file and its golden REST answers) with this code")

const upgradeDir = "testdata/upgrade"

// upgradeGets are the REST answers compared byte for byte: every model,
// its history and canary status, the list and the audit log.
var upgradeGets = map[string]string{
	"models.json":                      "/v1/models",
	"model-recommender.json":           "/v1/models/recommender",
	"model-search.json":                "/v1/models/search",
	"history-recommender.json":         "/v1/models/recommender/history",
	"history-search.json":              "/v1/models/search/history",
	"history-ranker.json":              "/v1/models/ranker/history",
	"audit.json":                       "/v1/audit",
	"audit-search.json":                "/v1/audit?model=search",
	"canary-search.json":               "/v1/models/search/canary",
	"model-recommender-revision1.json": "/v1/models/recommender/history?limit=1",
}

// buildUpgradeFixture writes the scenario through the REST API: models with
// weights, shadow, canary and a fallback chain; a weight change, a rollback,
// a static-answer update, a canary started and aborted (a failed mark and
// canary side state), a model created and deleted (a tombstone).
func buildUpgradeFixture(t *testing.T, statePath string) {
	t.Helper()
	cp := startUpgradeCP(t, statePath)
	defer cp.Close()
	step := func(method, path, token, body string, want int, headers ...string) {
		t.Helper()
		r := cptest.Call(t, cp, method, path, token, body, append([]string{"X-Switchyard-Reason", "fixture: " + method + " " + path}, headers...)...)
		if r.Code != want {
			t.Fatalf("%s %s: %d %s (want %d)", method, path, r.Code, r.Body, want)
		}
	}
	step("PUT", "/v1/models/recommender", cptest.EditorToken, `{
  "apiVersion": "switchyard.dev/v1", "kind": "Model",
  "metadata": {"name": "recommender", "labels": {"team": "discovery"}},
  "spec": {
    "versions": [
      {"name": "v1", "endpoints": ["127.0.0.1:8001"], "backendModel": "recommender-v1"},
      {"name": "v2", "endpoints": ["127.0.0.1:8002", "127.0.0.1:8012"], "backendModel": "recommender-v2", "protocol": "grpc"},
      {"name": "lite", "endpoints": ["127.0.0.1:8003"], "backendModel": "recommender-lite"}
    ],
    "traffic": {"weights": {"v1": 80, "v2": 20}, "stickyHeader": "x-user-id"},
    "timeout": "50ms",
    "retries": {"attempts": 1, "budgetPercent": 20},
    "shadow": {"version": "lite", "percent": 10, "compare": {"mode": "topk", "k": 10}},
    "fallback": {
      "chain": ["cache", "backup", "static"],
      "backup": "lite",
      "static": {"outputs": [{"name": "scores", "datatype": "FP32", "shape": [1, 3], "data": [0.5, 0.25, 0.125]}]},
      "breaker": {"consecutiveFailures": 5, "openFor": "10s"}
    },
    "cache": {"ttl": "30s", "maxEntries": 1000}
  }
}`, http.StatusCreated, "If-None-Match", "*")
	step("PUT", "/v1/models/recommender/weights", cptest.EditorToken, `{"weights": {"v1": 50, "v2": 50}, "reason": "half and half"}`, http.StatusOK)
	step("POST", "/v1/models/recommender/rollback", cptest.OperatorToken, `{"reason": "back to 80/20", "waitForAck": "1ns"}`, http.StatusOK)
	step("PUT", "/v1/models/recommender/fallback/static", cptest.EditorToken, `{"outputs": [{"name": "scores", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}], "reason": "today's popular items"}`, http.StatusOK)
	step("PUT", "/v1/models/search", cptest.EditorToken, `{
  "apiVersion": "switchyard.dev/v1", "kind": "Model",
  "metadata": {"name": "search"},
  "spec": {
    "versions": [
      {"name": "v1", "endpoints": ["127.0.0.1:9001"]},
      {"name": "v2", "endpoints": ["127.0.0.1:9002"]}
    ],
    "traffic": {"weights": {"v1": 100, "v2": 0}},
    "canary": {"version": "v2", "steps": [20, 50, 100], "stepDuration": "5m", "minRequests": 500, "maxErrorRate": 0.01, "maxP99Ratio": 1.25},
    "fallback": {"chain": ["cache", "empty"]},
    "cache": {"ttl": "1m", "maxEntries": 10}
  }
}`, http.StatusCreated)
	step("POST", "/v1/models/search/canary/start", cptest.EditorToken, `{"reason": "ramp v2", "waitForAck": "0s"}`, http.StatusOK)
	step("POST", "/v1/models/search/canary/abort", cptest.OperatorToken, `{"reason": "p99 too high", "waitForAck": "0s"}`, http.StatusOK)
	step("PUT", "/v1/models/ranker", cptest.EditorToken, `{
  "apiVersion": "switchyard.dev/v1", "kind": "Model",
  "metadata": {"name": "ranker"},
  "spec": {"versions": [{"name": "v1", "endpoints": ["127.0.0.1:7001"]}], "traffic": {"weights": {"v1": 1}}}
}`, http.StatusCreated)
	step("DELETE", "/v1/models/ranker", cptest.OperatorToken, "", http.StatusOK)
}

// startUpgradeCP serves statePath with the canary controller on (its
// ticks an hour apart: only the requests move a canary).
func startUpgradeCP(t *testing.T, statePath string) *cptest.CP {
	t.Helper()
	return cptest.Start(t, controlplane.Config{StatePath: statePath}, &controlplane.CanaryOptions{Interval: time.Hour})
}

func getRaw(t *testing.T, cp *cptest.CP, path string) []byte {
	t.Helper()
	r := cptest.Call(t, cp, "GET", path, cptest.ViewerToken, nil)
	if r.Code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", path, r.Code, r.Body)
	}
	return r.Body
}

// TestUpgradeReadsPreviousStateFile opens the state file an earlier release
// wrote and serves exactly the REST answers that release served for it.
func TestUpgradeReadsPreviousStateFile(t *testing.T) {
	if *writeUpgradeFixture {
		if err := os.RemoveAll(upgradeDir); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(upgradeDir, "golden"), 0o755); err != nil {
			t.Fatal(err)
		}
		buildUpgradeFixture(t, filepath.Join(upgradeDir, "state.db"))
	}
	// bbolt opens the file for writing: serve a copy, never the fixture.
	src, err := os.ReadFile(filepath.Join(upgradeDir, "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	statePath := filepath.Join(t.TempDir(), "state.db")
	if err := os.WriteFile(statePath, src, 0o600); err != nil {
		t.Fatal(err)
	}
	cp := startUpgradeCP(t, statePath)
	t.Cleanup(func() { cp.Close() })
	for file, path := range upgradeGets {
		got := getRaw(t, cp, path)
		if file == "canary-search.json" {
			got = dropVolatile(t, got)
		}
		golden := filepath.Join(upgradeDir, "golden", file)
		if *writeUpgradeFixture {
			if err := os.WriteFile(golden, got, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(golden)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("GET %s differs from %s:\n got: %s\nwant: %s", path, golden, got, want)
		}
	}
	// Every model decodes into today's types and re-encodes to the same
	// document (no field lost or renamed).
	var list struct {
		Items []struct {
			Model json.RawMessage `json:"model"`
		} `json:"items"`
	}
	if err := json.Unmarshal(getRaw(t, cp, "/v1/models"), &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 2 {
		t.Fatalf("%d models, want 2 (recommender, search)", len(list.Items))
	}
	for _, it := range list.Items {
		m, err := api.DecodeJSON(it.Model)
		if err != nil {
			t.Fatalf("stored model does not decode strictly: %v\n%s", err, it.Model)
		}
		again, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		var want bytes.Buffer
		if err := json.Compact(&want, it.Model); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(again, want.Bytes()) {
			t.Errorf("model %s re-encodes differently:\n got: %s\nwant: %s", m.Metadata.Name, again, want.Bytes())
		}
	}
}

// dropVolatile removes the canary status fields that depend on the clock of
// the reading (time in step).
func dropVolatile(t *testing.T, b []byte) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	delete(m, "timeInStep")
	var out bytes.Buffer
	enc := json.NewEncoder(&out)
	enc.SetIndent("", "  ")
	if err := enc.Encode(m); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}
