package backend

import (
	"math"
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"

	"github.com/switchyard-dev/switchyard/inference-backend/demomodels"
	"github.com/switchyard-dev/switchyard/oip"
)

func TestMain(m *testing.M) {
	if _, err := InitORT(""); err != nil {
		println("onnx runtime:", err.Error())
		os.Exit(1)
	}
	// Idle keep-alive connections of http.DefaultClient (http.Post in
	// tests) are the only goroutines allowed to outlive the tests.
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"))
}

func writeDemo(t testing.TB, name string) string {
	t.Helper()
	b, err := demomodels.Model(name)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "model.onnx")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestSessionDemoModelsMatchGo(t *testing.T) {
	rows := demomodels.RandomFeatures(7, 5)
	// v3's NaN rule around its threshold: below it NaN, at it finite.
	rows[0][0] = -0.9
	rows[1][0] = demomodels.NaNThreshold
	rows[2][0] = math.Nextafter32(demomodels.NaNThreshold, -1)
	rows[3][0] = 0.5
	for _, name := range demomodels.Names {
		t.Run(name, func(t *testing.T) {
			s, err := NewSession(writeDemo(t, name), SessionOptions{IntraOpThreads: 1})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			flat := make([]float32, 0, len(rows)*demomodels.Features)
			for _, r := range rows {
				flat = append(flat, r...)
			}
			in := oip.NewTensor("features", []int64{int64(len(rows)), demomodels.Features}, flat)
			var bound [1]*oip.Tensor
			if err := s.bindInputs(name, []oip.Tensor{in}, bound[:]); err != nil {
				t.Fatal(err)
			}
			out, err := s.run(bound[:])
			if err != nil {
				t.Fatal(err)
			}
			if len(out) != 1 || out[0].Name != "scores" || out[0].Datatype != oip.FP32 {
				t.Fatalf("outputs %+v", out)
			}
			if got := out[0].Shape; len(got) != 2 || got[0] != int64(len(rows)) || got[1] != demomodels.Items {
				t.Fatalf("shape %v", got)
			}
			scores := oip.Values[float32](out[0].Raw)
			m, _ := demomodels.Weights(name)
			for i, r := range rows {
				want := m.Eval(r)
				nan := name == demomodels.V3 && demomodels.NaNRule(r)
				for k := range want {
					got := scores[i*demomodels.Items+k]
					if nan {
						if !math.IsNaN(float64(got)) {
							t.Fatalf("row %d item %d: got %v, want NaN", i, k, got)
						}
						continue
					}
					if math.Abs(float64(got-want[k])) > 1e-4 {
						t.Fatalf("row %d item %d: got %v, want %v", i, k, got, want[k])
					}
				}
			}
		})
	}
}
