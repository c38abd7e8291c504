package controlplane_test

import (
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/switchyard-dev/switchyard/api"
	"github.com/switchyard-dev/switchyard/controlplane"
	"github.com/switchyard-dev/switchyard/controlplane/cptest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestNewRefusesUnsafeConfig(t *testing.T) {
	dir := t.TempDir()
	tests := map[string]struct {
		cfg  controlplane.Config
		want string
	}{
		"insecure on all interfaces": {controlplane.Config{StatePath: filepath.Join(dir, "a.db"), APIAddr: "0.0.0.0:0", XDSAddr: "127.0.0.1:0", InsecureLoopbackNoAuth: true}, "needs a loopback --api address"},
		"insecure on empty host":     {controlplane.Config{StatePath: filepath.Join(dir, "a.db"), APIAddr: ":0", XDSAddr: "127.0.0.1:0", InsecureLoopbackNoAuth: true}, "needs a loopback --api address"},
		"no auth":                    {controlplane.Config{StatePath: filepath.Join(dir, "a.db"), APIAddr: "127.0.0.1:0", XDSAddr: "127.0.0.1:0"}, "give --tokens FILE"},
		"no state":                   {controlplane.Config{APIAddr: "127.0.0.1:0", XDSAddr: "127.0.0.1:0", InsecureLoopbackNoAuth: true}, "give --state FILE"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			cp, err := controlplane.New(tc.cfg)
			if err == nil {
				cp.Close()
				t.Fatal("want an error")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want %q, got %v", tc.want, err)
			}
		})
	}
}

// TestEnableCanaryOnce: a second EnableCanary is refused.
func TestEnableCanaryOnce(t *testing.T) {
	cp := cptest.New(t, controlplane.Config{}, &controlplane.CanaryOptions{Interval: time.Hour})
	if _, err := cp.EnableCanary(controlplane.CanaryOptions{}); err == nil {
		t.Error("a second EnableCanary was accepted")
	}
}

// TestEnableCanaryAfterAFailedLoad: a canary controller whose state cannot
// be loaded (a corrupt state file of an older release beside the state
// file) is an error that names the file and leaves nothing registered or
// served; once the file is dealt with, EnableCanary succeeds (it panicked
// on the stats service's second registration) and the stats series are
// there.
func TestEnableCanaryAfterAFailedLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	legacy := path + ".canary"
	if err := os.WriteFile(legacy, []byte("not a bbolt file, and long enough to be read as a page header by bbolt"), 0o600); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	cp := cptest.New(t, controlplane.Config{StatePath: path, Registerer: reg}, nil)
	if _, err := cp.EnableCanary(controlplane.CanaryOptions{Interval: time.Hour}); err == nil || !strings.Contains(err.Error(), legacy) {
		t.Fatalf("EnableCanary over a corrupt legacy state file: %v", err)
	}
	if err := os.Remove(legacy); err != nil {
		t.Fatal(err)
	}
	if _, err := cp.EnableCanary(controlplane.CanaryOptions{Interval: time.Hour}); err != nil {
		t.Fatalf("EnableCanary once the file is gone: %v", err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, mf := range mfs {
		names = append(names, mf.GetName())
	}
	if !slices.Contains(names, "switchyard_controlplane_stats_reporting_proxies") {
		t.Errorf("no stats series after the second EnableCanary: %v", names)
	}
}

func TestInsecureLoopbackMode(t *testing.T) {
	cp := cptest.Start(t, controlplane.Config{StatePath: filepath.Join(t.TempDir(), "s.db"), InsecureLoopbackNoAuth: true}, nil)
	if r := cptest.Call(t, cp, "PUT", "/v1/models/a", "", cptest.Doc("a", 1, 1)); r.Code != http.StatusCreated {
		t.Fatalf("PUT without token in loopback mode: %d %s", r.Code, r.Body)
	}
	var audit struct{ Items []api.AuditEntry }
	cptest.Call(t, cp, "GET", "/v1/audit", "", nil).Decode(t, &audit)
	if len(audit.Items) != 1 || audit.Items[0].Subject != "anonymous" {
		t.Fatalf("audit %+v", audit.Items)
	}
}

func TestRestartServesStoredState(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	cp := cptest.Start(t, controlplane.Config{StatePath: path, AllowAnonymousXDS: true}, nil)
	cptest.Call(t, cp, "PUT", "/v1/models/a", cptest.EditorToken, cptest.Doc("a", 3, 7))
	cp.Close()

	cp2 := cptest.Start(t, controlplane.Config{StatePath: path, AllowAnonymousXDS: true}, nil)
	if cp2.SnapshotVersion() != 1 {
		t.Fatalf("snapshot version after restart: %d", cp2.SnapshotVersion())
	}
	client := cptest.DialADS(t, cp2.XDSAddr(), "p", nil)
	if _, _, err := client.WaitFor(cptest.WaitCtx(t), func(v string, ms []api.Model) bool {
		return len(ms) == 1 && ms[0].Spec.Traffic.Weights["v2"] == 7
	}); err != nil {
		t.Fatal(err)
	}
}

func TestMetricsEndpoint(t *testing.T) {
	cp := cptest.Start(t, controlplane.Config{AllowAnonymousXDS: true}, nil)
	cptest.Call(t, cp, "PUT", "/v1/models/a", cptest.EditorToken, cptest.Doc("a", 1, 1))
	client := cptest.DialADS(t, cp.XDSAddr(), "p", nil)
	if _, _, err := client.WaitFor(cptest.WaitCtx(t), func(v string, ms []api.Model) bool { return len(ms) == 1 }); err != nil {
		t.Fatal(err)
	}
	cp.Tracker().WaitForAck(cptest.WaitCtx(t), "1")
	r := cptest.Call(t, cp, "GET", "/metrics", "", nil)
	for _, want := range []string{
		`switchyard_controlplane_api_requests_total{code="201",method="PUT",route="PUT /v1/models/{name}"} 1`,
		`switchyard_controlplane_store_duration_seconds_count{op="put"} 1`,
		`switchyard_controlplane_snapshot_version 1`,
		`switchyard_controlplane_connected_proxies 1`,
		`switchyard_controlplane_push_duration_seconds_count`,
		`switchyard_controlplane_ack_latency_seconds_count 1`,
	} {
		if !strings.Contains(string(r.Body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}
