package backend

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/switchyard-dev/switchyard/inference-backend/demomodels"
	"github.com/switchyard-dev/switchyard/oip"
)

func TestParseModelConfig(t *testing.T) {
	def := DefaultModelConfig()
	with := func(f func(*ModelConfig)) ModelConfig {
		c := DefaultModelConfig()
		f(&c)
		return c
	}
	cases := map[string]struct {
		yaml    string
		want    ModelConfig
		wantErr string
	}{
		"empty":   {yaml: "", want: def},
		"comment": {yaml: "# nothing\n", want: def},
		"batching": {
			yaml: "max_batch_size: 32\ndynamic_batching:\n  max_queue_delay: 500us\n  preferred_batch_sizes: [8, 16]\n",
			want: with(func(c *ModelConfig) {
				c.MaxBatchSize = 32
				c.DynamicBatching = &DynamicBatching{MaxQueueDelay: 500 * time.Microsecond, PreferredBatchSizes: []int{8, 16}}
			}),
		},
		"all fields": {
			yaml: "warmup: 0\nintra_op_threads: 4\ninter_op_threads: 2\nversions: {specific: [3, 1]}\nexecution_provider: cuda\n",
			want: with(func(c *ModelConfig) {
				c.Warmup, c.IntraOpThreads, c.InterOpThreads = 0, 4, 2
				c.Versions = VersionPolicy{Specific: []int64{3, 1}}
				c.ExecutionProvider = "cuda"
			}),
		},
		"instances": {
			yaml: "max_batch_size: 16\ninstance_count: 2\nallow_spinning: false\ndynamic_batching: {}\n",
			want: with(func(c *ModelConfig) {
				c.MaxBatchSize, c.InstanceCount, c.AllowSpinning = 16, 2, new(false)
				c.DynamicBatching = &DynamicBatching{}
			}),
		},
		"instances without batching": {yaml: "max_batch_size: 16\ninstance_count: 2\n", wantErr: "instance_count: 2 needs dynamic_batching"},
		"zero instances":             {yaml: "instance_count: 0\n", wantErr: "instance_count: 0 is not in 1..64"},
		"spinning not a bool":        {yaml: "allow_spinning: sometimes\n", wantErr: "sometimes"},
		"all versions":               {yaml: "versions: {all: true}\n", want: with(func(c *ModelConfig) { c.Versions = VersionPolicy{All: true} })},
		"latest 2":                   {yaml: "versions: {latest: 2}\n", want: with(func(c *ModelConfig) { c.Versions = VersionPolicy{Latest: 2} })},
		"unknown field":              {yaml: "max_batch: 4\n", wantErr: "max_batch"},
		"unknown nested field":       {yaml: "max_batch_size: 4\ndynamic_batching: {delay: 1ms}\n", wantErr: "delay"},
		"negative batch":             {yaml: "max_batch_size: -1\n", wantErr: "max_batch_size"},
		"batching without max":       {yaml: "dynamic_batching: {}\n", wantErr: "dynamic_batching: needs max_batch_size"},
		"bad delay":                  {yaml: "max_batch_size: 4\ndynamic_batching: {max_queue_delay: soon}\n", wantErr: "soon"},
		"preferred too big":          {yaml: "max_batch_size: 4\ndynamic_batching: {preferred_batch_sizes: [8]}\n", wantErr: "preferred_batch_sizes[0]"},
		"warmup too many":            {yaml: "warmup: 5000\n", wantErr: "warmup"},
		"two policies":               {yaml: "versions: {latest: 1, all: true}\n", wantErr: "versions: set only one"},
		"version zero":               {yaml: "versions: {specific: [0]}\n", wantErr: "versions.specific[0]"},
		"version twice":              {yaml: "versions: {specific: [2, 2]}\n", wantErr: "versions.specific[1]"},
		"provider":                   {yaml: "execution_provider: tpu\n", wantErr: "execution_provider"},
		"not yaml":                   {yaml: "max_batch_size: [\n", wantErr: "yaml"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			got, err := ParseModelConfig([]byte(c.yaml))
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("error %v, want one mentioning %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(c.want, got); d != "" {
				t.Fatalf("config (-want +got):\n%s", d)
			}
		})
	}
}

func writeVersions(t *testing.T, repo, name string, versions ...string) {
	t.Helper()
	b, _ := demomodels.Model(demomodels.Lite)
	for _, v := range versions {
		dir := filepath.Join(repo, name, v)
		os.MkdirAll(dir, 0o755)
		if err := os.WriteFile(filepath.Join(dir, "model.onnx"), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestReadModelVersionPolicy(t *testing.T) {
	repo := t.TempDir()
	writeVersions(t, repo, "m", "1", "2", "10")
	os.MkdirAll(filepath.Join(repo, "m", "3"), 0o755)         // no model.onnx: ignored
	os.MkdirAll(filepath.Join(repo, "m", "latest"), 0o755)    // not a version: ignored
	os.MkdirAll(filepath.Join(repo, "m", "007"), 0o755)       // not canonical: ignored
	os.MkdirAll(filepath.Join(repo, "empty", "notes"), 0o755) // no versions
	cases := map[string]struct {
		config  string
		want    []int64
		wantErr string
	}{
		"default latest 1": {"", []int64{10}, ""},
		"latest 2":         {"versions: {latest: 2}", []int64{2, 10}, ""},
		"latest more":      {"versions: {latest: 9}", []int64{1, 2, 10}, ""},
		"all":              {"versions: {all: true}", []int64{1, 2, 10}, ""},
		"specific":         {"versions: {specific: [10, 1]}", []int64{1, 10}, ""},
		"specific missing": {"versions: {specific: [3]}", nil, "versions.specific names version 3"},
		"bad config":       {"warmup: -1", nil, "config.yaml: warmup"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			os.WriteFile(filepath.Join(repo, "m", "config.yaml"), []byte(c.config), 0o644)
			src, err := readModel(repo, "m", nil)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("error %v, want one mentioning %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(c.want, src.Versions); d != "" {
				t.Fatalf("versions (-want +got):\n%s", d)
			}
		})
	}
	if _, err := readModel(repo, "empty", nil); err == nil || !strings.Contains(err.Error(), "no version folders") {
		t.Errorf("model without versions: %v", err)
	}
	for _, bad := range []string{"", "..", "a/b", "nope"} {
		if _, err := readModel(repo, bad, nil); err == nil {
			t.Errorf("readModel(%q): no error", bad)
		}
	}
}

// TestCUDAFallback asks for the CUDA execution provider on a machine whose
// ONNX Runtime has none: the model loads on CPU, says so in the log, and
// serves correct answers.
func TestCUDAFallback(t *testing.T) {
	if os.Getenv("SWITCHYARD_TEST_CUDA") != "" {
		t.Skip("SWITCHYARD_TEST_CUDA is set: this machine has CUDA (TestCUDAExecutionProvider runs instead)")
	}
	repo := t.TempDir()
	if err := demomodels.WriteRepository(repo); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	metrics := NewMetrics(nil)
	b, err := New(Options{ModelRepository: repo, ExecutionProvider: "cuda", Metrics: metrics, Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if failed := b.LoadAll(context.Background()); len(failed) > 0 {
		t.Fatalf("failed to load: %v", failed)
	}
	if !strings.Contains(logs.String(), "CUDA execution provider unavailable; running this model on CPU") {
		t.Fatalf("no fallback warning in logs:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), `"provider":"cpu"`) {
		t.Fatalf("loaded model does not report provider cpu:\n%s", logs.String())
	}
	if got := testutil.ToFloat64(metrics.Provider.WithLabelValues(demomodels.V1, "1", "cuda", "cpu")); got != 1 {
		t.Errorf("switchyard_backend_model_execution_provider{requested=cuda,provider=cpu} = %v, want 1", got)
	}
	if n := testutil.CollectAndCount(metrics.Provider); n != len(demomodels.Names) {
		t.Errorf("execution provider series: %d, want one per demo model (%d)", n, len(demomodels.Names))
	}
	row := demomodels.RandomFeatures(2, 1)[0]
	resp, err := b.Infer(context.Background(), &oip.InferRequest{ModelName: demomodels.V1,
		Inputs: []oip.Tensor{oip.NewTensor("features", []int64{1, 32}, row)}})
	if err != nil {
		t.Fatal(err)
	}
	m, _ := demomodels.Weights(demomodels.V1)
	want := m.Eval(row)
	got := oip.Values[float32](resp.Outputs[0].Raw)
	for i := range want {
		if d := got[i] - want[i]; d > 1e-4 || d < -1e-4 {
			t.Fatalf("item %d: %v, want %v", i, got[i], want[i])
		}
	}
}

func TestFindORTLibrary(t *testing.T) {
	if _, err := FindORTLibrary("/nonexistent/libonnxruntime.so.1"); err == nil || !strings.Contains(err.Error(), "/nonexistent/libonnxruntime.so.1") {
		t.Errorf("explicit missing path: %v", err)
	}
	t.Setenv(EnvORTLibrary, "")
	p, err := FindORTLibrary("") // walks up from the package folder to the repository root
	if err != nil || !filepath.IsAbs(p) || !strings.HasSuffix(p, ortRelPath) {
		t.Errorf("walk up: %q %v", p, err)
	}
}
