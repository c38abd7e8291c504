package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/switchyard-dev/switchyard/inference-backend/backendtest"
)

// TestLoadtestCommand drives `syctl loadtest` as a user would, against a
// real ONNX backend: a bounded JSON run, an HTML report, a usage error and
// an unknown model, each with its documented exit code.
func TestLoadtestCommand(t *testing.T) {
	be := backendtest.Start(t, backendtest.Options{})
	html := filepath.Join(t.TempDir(), "report.html")
	r := syctl(t, nil, nil, "", "loadtest", "--addr", be.HTTPAddr, "--model", "recommender-v1",
		"--rate", "100", "--duration", "2s", "--max-requests", "60", "--quiet", "--html", html, "-o", "json")
	if r.code != 0 {
		t.Fatalf("loadtest: exit %d\nstdout %s\nstderr %s", r.code, r.stdout, r.stderr)
	}
	var out map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("-o json is not JSON: %v\n%s", err, r.stdout)
	}
	if b, err := os.ReadFile(html); err != nil || !strings.Contains(string(b), "<svg") {
		t.Errorf("HTML report: %v (%d bytes, want inline SVG plots)", err, len(b))
	}
	if !strings.Contains(r.stdout, "60") {
		t.Errorf("report does not mention the 60 requests sent: %s", r.stdout)
	}

	if r := syctl(t, nil, nil, "", "loadtest", "--model", "recommender-v1"); r.code != 2 || !strings.Contains(r.stderr, "addr") {
		t.Errorf("missing --addr: exit %d, stderr %q (want 2 naming --addr)", r.code, r.stderr)
	}
	if r := syctl(t, nil, nil, "", "loadtest", "--addr", be.HTTPAddr, "--model", "no-such-model", "--rate", "50", "--duration", "1s", "--quiet"); r.code != 3 {
		t.Errorf("unknown model: exit %d (want 3)\nstdout %s\nstderr %s", r.code, r.stdout, r.stderr)
	}
}
