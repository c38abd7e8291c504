package api

import (
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.yaml.in/yaml/v3"
)

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// validModel is a full, defaulted, valid document used as the base of the
// table tests.
func validModel() Model {
	m := Model{
		Metadata: Metadata{Name: "recommender"},
		Spec: Spec{
			Versions: []Version{
				{Name: "v1", Endpoints: []string{"127.0.0.1:8001"}, BackendModel: "recommender-v1"},
				{Name: "v2", Endpoints: []string{"127.0.0.1:8002"}, BackendModel: "recommender-v2"},
				{Name: "lite", Endpoints: []string{"127.0.0.1:8003"}, Protocol: "grpc"},
			},
			Traffic: Traffic{Weights: map[string]int{"v1": 80, "v2": 20}, StickyHeader: "x-user-id"},
			Timeout: Duration(50 * time.Millisecond),
			Retries: &Retries{Attempts: 1, BudgetPercent: 20},
			Shadow:  &Shadow{Version: "v2", Percent: 10, Compare: Compare{Mode: "topk", K: 10}},
			Canary:  &Canary{Version: "v2"},
			Fallback: &Fallback{
				Chain:  []string{"cache", "backup", "static"},
				Backup: "lite",
				Static: &Static{Outputs: []StaticTensor{{Name: "scores", Datatype: "FP32", Shape: []int64{1, 3}, Data: []float64{0.5, 0.3, 0.2}}}},
			},
			Cache: &Cache{TTL: Duration(30 * time.Second)},
		},
	}
	m.Defaults()
	return m
}

func TestExampleDocumentsDecodeAndValidate(t *testing.T) {
	y, err := DecodeYAML(mustRead(t, "testdata/recommender.yaml"))
	if err != nil {
		t.Fatalf("DecodeYAML: %v", err)
	}
	if err := Normalize(&y); err != nil {
		t.Fatalf("Normalize: %v", err)
	}
	j, err := DecodeJSON(mustRead(t, "testdata/recommender.json"))
	if err != nil {
		t.Fatalf("DecodeJSON: %v", err)
	}
	if err := Normalize(&j); err != nil {
		t.Fatalf("Normalize: %v", err)
	}
	if d := cmp.Diff(y, j); d != "" {
		t.Errorf("YAML and JSON forms differ (-yaml +json):\n%s", d)
	}
	if y.Spec.Timeout.D() != 50*time.Millisecond || y.Spec.Traffic.Weights["v1"] != 80 ||
		y.Spec.Versions[0].Protocol != ProtocolHTTP || y.Spec.Versions[2].Protocol != ProtocolGRPC ||
		y.Spec.Canary.StepDuration.D() != 5*time.Minute || !y.Spec.Cache.On() {
		t.Errorf("unexpected decoded values: %+v", y.Spec)
	}
}

func TestDefaults(t *testing.T) {
	m := Model{Metadata: Metadata{Name: "m"}, Spec: Spec{
		Versions: []Version{{Name: "v1", Endpoints: []string{"10.0.0.1:80"}}},
		Shadow:   &Shadow{Version: "v1", Percent: 5},
		Canary:   &Canary{Version: "v1"},
		Fallback: &Fallback{Chain: []string{"empty"}},
		Cache:    &Cache{},
	}}
	m.Defaults()
	want := Model{APIVersion: APIVersion, Kind: KindModel, Metadata: Metadata{Name: "m"}, Spec: Spec{
		Versions: []Version{{Name: "v1", Endpoints: []string{"10.0.0.1:80"}, Protocol: "http", BackendModel: "m"}},
		Traffic:  Traffic{Weights: map[string]int{"v1": 100}, OverrideHeader: DefaultOverrideHeader},
		Timeout:  DefaultTimeout,
		Shadow: &Shadow{Version: "v1", Percent: 5, Sampling: "random", QueueSize: 1024, Workers: 4, Timeout: DefaultTimeout,
			Compare: Compare{Mode: "numeric", AbsTol: DefaultAbsTol, RelTol: DefaultRelTol}},
		Canary: &Canary{Version: "v1", Steps: []int{20, 50, 80, 100}, StepDuration: DefaultCanaryStepDuration, MinRequests: 500,
			MaxErrorRate: 0.01, MaxP99Ratio: 1.25, MaxNaNRate: 0.001, ConsecutiveFailures: 3},
		Fallback: &Fallback{Chain: []string{"empty"}, Breaker: Breaker{ConsecutiveFailures: 5, OpenFor: DefaultBreakerOpenFor}},
		Cache:    &Cache{Enabled: ptr(true), Coalesce: ptr(true), TTL: DefaultCacheTTL, MaxEntries: 10000, MaxBytes: 64 << 20},
	}}
	if d := cmp.Diff(want, m); d != "" {
		t.Fatalf("Defaults (-want +got):\n%s", d)
	}
	again := m.Clone()
	again.Defaults()
	if d := cmp.Diff(m, again); d != "" {
		t.Errorf("Defaults is not idempotent:\n%s", d)
	}
}

func ptr[T any](v T) *T { return &v }

func TestValidate(t *testing.T) {
	tests := map[string]struct {
		edit func(m *Model)
		want []string // "field: message substring"
	}{
		"valid": {edit: func(*Model) {}},
		"valid upstream mTLS": {edit: func(m *Model) {
			m.Spec.Versions[0].TLS = &UpstreamTLS{CAFile: "/etc/sy/ca.crt", CertFile: "/etc/sy/p.crt", KeyFile: "/etc/sy/p.key", ServerName: "backend"}
			m.Spec.Versions[1].TLS = &UpstreamTLS{Disabled: true}
		}},
		"bad upstream tls": {
			edit: func(m *Model) {
				m.Spec.Versions[0].TLS = &UpstreamTLS{CertFile: "p.crt"}
				m.Spec.Versions[1].TLS = &UpstreamTLS{Disabled: true, CAFile: "/ca.crt"}
			},
			want: []string{"spec.versions[0].tls.caFile: required", "spec.versions[0].tls: certFile and keyFile go together",
				`spec.versions[0].tls.certFile: "p.crt": want an absolute path`, "spec.versions[1].tls: disabled: true takes no files"},
		},
		"unknown weight version": {
			edit: func(m *Model) { m.Spec.Traffic.Weights["v9"] = 1 },
			want: []string{"spec.traffic.weights.v9: no such version (versions: v1, v2, lite)"},
		},
		"weight out of range": {
			edit: func(m *Model) { m.Spec.Traffic.Weights["v1"] = 10001 },
			want: []string{"spec.traffic.weights.v1: weight 10001 out of range: each weight is an integer 0..10000"},
		},
		"negative weight": {
			edit: func(m *Model) { m.Spec.Traffic.Weights["v2"] = -1 },
			want: []string{"spec.traffic.weights.v2: weight -1 out of range"},
		},
		"zero total": {
			edit: func(m *Model) { m.Spec.Traffic.Weights = map[string]int{"v1": 0, "v2": 0} },
			want: []string{"spec.traffic.weights: weights total 0"},
		},
		"no weights with several versions": {
			edit: func(m *Model) { m.Spec.Traffic.Weights = nil },
			want: []string{"spec.traffic.weights: required"},
		},
		"bad model name": {
			edit: func(m *Model) { m.Metadata.Name = "Recommender_1" },
			want: []string{"metadata.name: \"Recommender_1\" is not a valid model name"},
		},
		"wrong apiVersion and kind": {
			edit: func(m *Model) { m.APIVersion = "v1"; m.Kind = "Service" },
			want: []string{"apiVersion: must be \"switchyard.dev/v1\"", "kind: must be \"Model\""},
		},
		"no versions": {
			edit: func(m *Model) { m.Spec = Spec{Traffic: Traffic{OverrideHeader: "x"}, Timeout: DefaultTimeout} },
			want: []string{"spec.versions: at least one version", "spec.traffic.weights: required"},
		},
		"duplicate version": {
			edit: func(m *Model) { m.Spec.Versions[1].Name = "v1" },
			want: []string{"spec.versions[1].name: duplicate version name \"v1\"", "spec.traffic.weights.v2: no such version", "spec.shadow.version: no such version \"v2\"", "spec.canary.version: no such version \"v2\""},
		},
		"bad endpoints": {
			edit: func(m *Model) {
				m.Spec.Versions[0].Endpoints = []string{"127.0.0.1", "127.0.0.1:0", "bad host:80", "127.0.0.1:8001", "127.0.0.1:8001"}
			},
			want: []string{
				"spec.versions[0].endpoints[0]: \"127.0.0.1\" is not host:port",
				"spec.versions[0].endpoints[1]: \"127.0.0.1:0\": port must be a number 1..65535",
				"spec.versions[0].endpoints[2]: \"bad host:80\": host must be an IP address or a DNS name",
				"spec.versions[0].endpoints[4]: duplicate endpoint",
			},
		},
		"no endpoints": {
			edit: func(m *Model) { m.Spec.Versions[2].Endpoints = nil },
			want: []string{"spec.versions[2].endpoints: at least one host:port endpoint is required"},
		},
		"dns endpoint ok": {edit: func(m *Model) { m.Spec.Versions[0].Endpoints = []string{"backend-v1.ml.svc.cluster.local:8001"} }},
		"bad protocol": {
			edit: func(m *Model) { m.Spec.Versions[0].Protocol = "https" },
			want: []string{"spec.versions[0].protocol: must be \"http\" or \"grpc\", got \"https\""},
		},
		"bad backend model": {
			edit: func(m *Model) { m.Spec.Versions[0].BackendModel = "a/b" },
			want: []string{"spec.versions[0].backendModel: \"a/b\" is not a valid backend model name"},
		},
		"bad headers": {
			edit: func(m *Model) { m.Spec.Traffic.StickyHeader = "X User"; m.Spec.Traffic.OverrideHeader = "" },
			want: []string{"spec.traffic.stickyHeader: \"X User\" is not a valid header name", "spec.traffic.overrideHeader"},
		},
		"timeout": {
			edit: func(m *Model) { m.Spec.Timeout = Duration(-time.Second) },
			want: []string{"spec.timeout: must be a positive duration"},
		},
		"timeout too long": {
			edit: func(m *Model) { m.Spec.Timeout = Duration(time.Hour) },
			want: []string{"spec.timeout: must be at most 10m0s"},
		},
		"retries": {
			edit: func(m *Model) { m.Spec.Retries = &Retries{Attempts: 11, BudgetPercent: 101} },
			want: []string{"spec.retries.attempts: must be 0..10, got 11", "spec.retries.budgetPercent: must be in (0, 100]"},
		},
		"shadow": {
			edit: func(m *Model) {
				m.Spec.Shadow = &Shadow{Version: "v3", Percent: 0, Sampling: "always", QueueSize: -1, Workers: 0, Timeout: DefaultTimeout,
					Compare: Compare{Mode: "cosine", AbsTol: -1}, NoiseFloorPercent: 200}
			},
			want: []string{
				"spec.shadow.version: no such version \"v3\" (versions: v1, v2, lite)",
				"spec.shadow.percent: must be in (0, 100], got 0",
				"spec.shadow.sampling: must be \"random\" or \"sticky\"",
				"spec.shadow.queueSize: must be 1..",
				"spec.shadow.workers: must be 1..",
				"spec.shadow.compare.mode: must be one of numeric, topk, argmax, exact; got \"cosine\"",
				"spec.shadow.compare.absTol: must be a finite number >= 0",
				"spec.shadow.noiseFloorPercent: must be 0..100",
			},
		},
		"sticky shadow without sticky header": {
			edit: func(m *Model) { m.Spec.Traffic.StickyHeader = ""; m.Spec.Shadow.Sampling = "sticky" },
			want: []string{"spec.shadow.sampling: sticky sampling needs spec.traffic.stickyHeader"},
		},
		"shadow batch": {
			edit: func(m *Model) { m.Spec.Shadow.Batch = &ShadowBatch{MaxRows: 1, MaxDelay: Duration(2 * time.Second)} },
			want: []string{"spec.shadow.batch.maxRows: must be 2..4096, got 1", "spec.shadow.batch.maxDelay: must be 0..1s, got 2s"},
		},
		"topk k": {
			edit: func(m *Model) { m.Spec.Shadow.Compare.K = 0 },
			want: []string{"spec.shadow.compare.k: must be 1..100000, got 0"},
		},
		"canary": {
			edit: func(m *Model) {
				m.Spec.Canary = &Canary{Version: "", Steps: []int{50, 20, 90}, StepDuration: 0, MinRequests: -1,
					MaxErrorRate: 2, MaxP99Ratio: 0.5, MaxNaNRate: -0.1, ConsecutiveFailures: 0}
			},
			want: []string{
				"spec.canary.version: required: name a version (versions: v1, v2, lite)",
				"spec.canary.steps[1]: steps are percentages 1..100, strictly increasing; got 20",
				"spec.canary.steps: the last step must be 100, got 90",
				"spec.canary.stepDuration: must be > 0",
				"spec.canary.minRequests: must be >= 0",
				"spec.canary.maxErrorRate: must be a fraction 0..1, got 2",
				"spec.canary.maxNaNRate: must be a fraction 0..1",
				"spec.canary.maxP99Ratio: must be a finite ratio >= 1",
				"spec.canary.consecutiveFailures: must be 1..1000",
			},
		},
		"canary without baseline": {
			edit: func(m *Model) {
				m.Spec.Versions = m.Spec.Versions[:1]
				m.Spec.Traffic.Weights = map[string]int{"v1": 1}
				m.Spec.Shadow, m.Spec.Fallback = nil, nil
				m.Spec.Canary.Version = "v1"
			},
			want: []string{"spec.canary.version: a canary needs another version as its baseline"},
		},
		"fallback": {
			edit: func(m *Model) {
				m.Spec.Cache = nil
				m.Spec.Fallback = &Fallback{Chain: []string{"cache", "backup", "retry", "backup"}, Backup: "nope",
					Static: &Static{}, Breaker: Breaker{ConsecutiveFailures: 0, FailureRatio: 1.5, OpenFor: 0}, MaxConcurrency: -1}
			},
			want: []string{
				"spec.fallback.chain[2]: unknown step \"retry\" (allowed: cache, backup, static, empty)",
				"spec.fallback.chain[3]: step \"backup\" appears twice",
				"spec.fallback.backup: no such version \"nope\"",
				"spec.fallback.chain: the \"cache\" step needs spec.cache enabled",
				"spec.fallback.static: set, but the chain has no \"static\" step",
				"spec.fallback.breaker.consecutiveFailures: must be 1..100000",
				"spec.fallback.breaker.failureRatio: must be a fraction 0..1",
				"spec.fallback.breaker.openFor: must be > 0",
				"spec.fallback.maxConcurrency: must be >= 0",
			},
		},
		"concurrency: fixed without a limit": {
			edit: func(m *Model) { m.Spec.Concurrency = &Concurrency{MaxLimit: 10} },
			want: []string{"spec.concurrency.limit: required (> 0) for a fixed cap; or set adaptive: true"},
		},
		"concurrency: adaptive bounds": {
			edit: func(m *Model) { m.Spec.Concurrency = &Concurrency{Adaptive: true, MinLimit: 50, MaxLimit: 10} },
			want: []string{"spec.concurrency.minLimit: must be <= maxLimit (10), got 50"},
		},
		"concurrency: start outside the bounds": {
			edit: func(m *Model) { m.Spec.Concurrency = &Concurrency{Adaptive: true, Limit: 2, MinLimit: 4} },
			want: []string{"spec.concurrency.limit: the adaptive cap's start must be within minLimit..maxLimit, got 2"},
		},
		"concurrency: tolerance": {
			edit: func(m *Model) { m.Spec.Concurrency = &Concurrency{Adaptive: true, Tolerance: 0.5} },
			want: []string{"spec.concurrency.tolerance: must be a finite ratio >= 1 (default 1.5), got 0.5"},
		},
		"concurrency: both spellings": {
			edit: func(m *Model) { m.Spec.Fallback.MaxConcurrency = 8; m.Spec.Concurrency = &Concurrency{Limit: 8} },
			want: []string{"spec.fallback.maxConcurrency: is the older spelling of spec.concurrency.limit: set one of them, not both"},
		},
		"fallback backup missing": {
			edit: func(m *Model) { m.Spec.Fallback.Backup = "" },
			want: []string{"spec.fallback.backup: required: name a version"},
		},
		"cache disabled but chained": {
			edit: func(m *Model) { m.Spec.Cache.Enabled = ptr(false) },
			want: []string{"spec.fallback.chain: the \"cache\" step needs spec.cache enabled"},
		},
		"static tensors": {
			edit: func(m *Model) {
				m.Spec.Fallback.Static.Outputs = []StaticTensor{
					{Name: "a", Datatype: "FP33", Shape: []int64{1}},
					{Name: "b", Datatype: "FP32", Shape: []int64{2, 2}, Data: []float64{1, 2, 3}},
					{Name: "b", Datatype: "INT8", Shape: []int64{2}, Data: []float64{1, 300}},
					{Name: "", Datatype: "BYTES", Shape: []int64{1}, Data: []float64{1}},
					{Name: "e", Datatype: "FP32", Shape: []int64{-1}},
					{Name: "f", Datatype: "BOOL", Shape: []int64{1}, Data: []float64{0.5}},
				}
			},
			want: []string{
				"spec.fallback.static.outputs[0].datatype: unknown datatype \"FP33\"",
				"spec.fallback.static.outputs[1].data: shape [2 2] needs 4 elements, got 3",
				"spec.fallback.static.outputs[2].name: duplicate output \"b\"",
				"spec.fallback.static.outputs[2].data[1]: 300 is not a INT8 value",
				"spec.fallback.static.outputs[3].name: required",
				"spec.fallback.static.outputs[3].data: a BYTES tensor carries strings",
				"spec.fallback.static.outputs[3].strings: shape [1] needs 1 elements, got 0",
				"spec.fallback.static.outputs[4].shape:",
				"spec.fallback.static.outputs[5].data[0]: 0.5 is not a BOOL value",
			},
		},
		"static required": {
			edit: func(m *Model) { m.Spec.Fallback.Static = nil },
			want: []string{"spec.fallback.static: required by the \"static\" step"},
		},
		"cache": {
			edit: func(m *Model) { m.Spec.Cache = &Cache{Enabled: ptr(true), TTL: 0, MaxEntries: 0, MaxBytes: -1} },
			want: []string{"spec.cache.ttl: must be a positive duration", "spec.cache.maxEntries: must be >= 1", "spec.cache.maxBytes: must be >= 1"},
		},
		"labels": {
			edit: func(m *Model) { m.Metadata.Labels = map[string]string{"team": "ranking", "bad key": "x"} },
			want: []string{"metadata.labels.bad key: invalid label key"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			m := validModel()
			tc.edit(&m)
			err := m.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("want valid, got %v", err)
				}
				return
			}
			var ve ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("want ValidationError, got %v", err)
			}
			if len(ve) != len(tc.want) {
				t.Errorf("want %d errors, got %d: %v", len(tc.want), len(ve), err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestDecodeErrors(t *testing.T) {
	tests := map[string]struct {
		json string
		want []string
	}{
		"malformed":      {`{"metadata": {"name": "x"}`, []string{"malformed JSON"}},
		"syntax":         {"{\n\"metadata\": {\"name\" \"x\"}}", []string{"malformed JSON at line 2, column"}},
		"trailing":       {`{} {}`, []string{"trailing data"}},
		"not an object":  {`[1]`, []string{"(document): want an object, got a list"}},
		"unknown top":    {`{"metadata": {"name": "x"}, "specs": {}}`, []string{"specs: unknown field (allowed: apiVersion, kind, metadata, spec)"}},
		"unknown nested": {`{"spec": {"traffic": {"wieghts": {"v1": 1}}}}`, []string{"spec.traffic.wieghts: unknown field (allowed: weights, stickyHeader, overrideHeader)"}},
		"case":           {`{"spec": {"Timeout": "1s"}}`, []string{"spec.Timeout: unknown field (did you mean \"timeout\"?)"}},
		"weight type":    {`{"spec": {"traffic": {"weights": {"v1": "80"}}}}`, []string{"spec.traffic.weights.v1: want an integer, got \"80\""}},
		"fractional":     {`{"spec": {"traffic": {"weights": {"v1": 0.5}}}}`, []string{"spec.traffic.weights.v1: want an integer, got 0.5"}},
		"duration":       {`{"spec": {"timeout": 50}}`, []string{"spec.timeout: want a duration string such as \"50ms\", got the number 50"}},
		"bad duration":   {`{"spec": {"timeout": "50 ms"}}`, []string{"spec.timeout: want a duration such as"}},
		"list":           {`{"spec": {"versions": {"name": "v1"}}}`, []string{"spec.versions: want a list, got an object"}},
		"list element":   {`{"spec": {"versions": [{"name": "v1", "endpoint": []}]}}`, []string{"spec.versions[0].endpoint: unknown field"}},
		"bool":           {`{"spec": {"cache": {"enabled": "yes"}}}`, []string{"spec.cache.enabled: want true or false"}},
		"several":        {`{"x": 1, "spec": {"y": 2}}`, []string{"spec.y: unknown field", "x: unknown field"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := DecodeJSON([]byte(tc.json))
			if err == nil {
				t.Fatal("want an error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestDecodeYAMLErrors(t *testing.T) {
	tests := map[string]struct {
		yaml string
		want string
	}{
		"unknown":   {"metadata: {name: x}\nspec:\n  traffic:\n    weight: {v1: 1}\n", "spec.traffic.weight: unknown field"},
		"malformed": {"metadata: [\n", "malformed YAML"},
		"two docs":  {"metadata: {name: a}\n---\nmetadata: {name: b}\n", "want exactly one YAML document, got 2"},
		"type":      {"spec: {timeout: [1]}\n", "spec.timeout: want a duration string"},
		"nan":       {"spec: {retries: {budgetPercent: .nan}}\n", "spec.retries.budgetPercent: NaN and Inf are not allowed"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := DecodeYAML([]byte(tc.yaml))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want error containing %q, got %v", tc.want, err)
			}
		})
	}
}

func TestDecodeYAMLAll(t *testing.T) {
	ms, err := DecodeYAMLAll([]byte("metadata: {name: a}\n---\n---\nmetadata: {name: b}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 2 || ms[0].Metadata.Name != "a" || ms[1].Metadata.Name != "b" {
		t.Fatalf("got %+v", ms)
	}
}

func TestRoundTripJSONAndYAML(t *testing.T) {
	m := validModel()
	if err := m.Validate(); err != nil {
		t.Fatal(err)
	}
	j, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	fromJSON, err := DecodeJSON(j)
	if err != nil {
		t.Fatalf("decode own JSON: %v\n%s", err, j)
	}
	if d := cmp.Diff(m, fromJSON); d != "" {
		t.Errorf("JSON round trip (-want +got):\n%s", d)
	}
	y, err := yaml.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	fromYAML, err := DecodeYAML(y)
	if err != nil {
		t.Fatalf("decode own YAML: %v\n%s", err, y)
	}
	if d := cmp.Diff(m, fromYAML); d != "" {
		t.Errorf("YAML round trip (-want +got):\n%s", d)
	}
	if !strings.Contains(string(y), "timeout: 50ms") || !strings.Contains(string(j), `"timeout":"50ms"`) {
		t.Errorf("durations not written as strings:\n%s\n%s", y, j)
	}
}

func TestClone(t *testing.T) {
	m := validModel()
	c := m.Clone()
	c.Spec.Traffic.Weights["v1"] = 1
	c.Spec.Versions[0].Endpoints[0] = "x:1"
	if m.Spec.Traffic.Weights["v1"] != 80 || m.Spec.Versions[0].Endpoints[0] != "127.0.0.1:8001" {
		t.Fatal("Clone shares memory with the original")
	}
}
