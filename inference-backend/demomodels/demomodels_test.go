package demomodels

import (
	"bytes"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/switchyard-dev/switchyard/inference-backend/onnxpb"
)

func TestModelsAreDeterministic(t *testing.T) {
	for _, name := range Names {
		a, err := Model(name)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := Model(name)
		if !bytes.Equal(a, b) {
			t.Errorf("%s: two generations differ", name)
		}
		ins, outs, err := onnxpb.ParseModelIO(a)
		if err != nil {
			t.Fatal(err)
		}
		if len(ins) != 1 || ins[0].Name != InputName || ins[0].ElemType != onnxpb.Float || len(ins[0].Shape) != 2 ||
			ins[0].Shape[0].Known || ins[0].Shape[1].Value != Features {
			t.Errorf("%s: inputs %+v", name, ins)
		}
		if len(outs) != 1 || outs[0].Name != OutputName || outs[0].Shape[1].Value != Items {
			t.Errorf("%s: outputs %+v", name, outs)
		}
	}
	if _, err := Model("nope"); err == nil {
		t.Error("unknown demo model: no error")
	}
}

func topK(scores []float32, k int) map[int]bool {
	idx := make([]int, len(scores))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return scores[idx[a]] > scores[idx[b]] })
	out := map[int]bool{}
	for _, i := range idx[:k] {
		out[i] = true
	}
	return out
}

// agreement measures, over rows, the mean top-10 overlap of two models and
// the share of rows whose top-10 sets are identical.
func agreement(a, b *MLP, rows [][]float32) (meanOverlap, identical float64) {
	for _, r := range rows {
		ta, tb := topK(a.Eval(r), 10), topK(b.Eval(r), 10)
		n := 0
		for i := range ta {
			if tb[i] {
				n++
			}
		}
		meanOverlap += float64(n) / 10
		if n == 10 {
			identical++
		}
	}
	return meanOverlap / float64(len(rows)), identical / float64(len(rows))
}

// TestV1V2MostlyAgree: v2's top-10 items mostly but not always match v1's;
// lite's rankings are a different model's.
func TestV1V2MostlyAgree(t *testing.T) {
	rows := RandomFeatures(1, 1000)
	v1, _ := Weights(V1)
	v2, _ := Weights(V2)
	lite, _ := Weights(Lite)
	overlap, identical := agreement(v1, v2, rows)
	t.Logf("v1 vs v2: mean top-10 overlap %.3f, identical top-10 in %.1f%% of rows", overlap, 100*identical)
	if overlap < 0.8 || overlap > 0.99 {
		t.Errorf("v1/v2 mean top-10 overlap %.3f, want mostly (0.8..0.99)", overlap)
	}
	if identical < 0.05 || identical > 0.95 {
		t.Errorf("v1/v2 identical top-10 in %.3f of rows, want some but not all", identical)
	}
	lo, _ := agreement(v1, lite, rows)
	t.Logf("v1 vs lite: mean top-10 overlap %.3f", lo)
	if lo > overlap {
		t.Errorf("lite agrees with v1 (%.3f) more than v2 does (%.3f)", lo, overlap)
	}
}

func TestNaNRuleShare(t *testing.T) {
	rows := RandomFeatures(3, 4000)
	n := 0
	for _, r := range rows {
		if NaNRule(r) {
			n++
		}
	}
	share := float64(n) / float64(len(rows))
	if share < 0.09 || share > 0.16 {
		t.Errorf("NaN rule hits %.3f of uniform rows, want about 1/8", share)
	}
}

func TestWriteRepository(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "keep.txt"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	custom := filepath.Join(dir, V1, "config.yaml")
	os.MkdirAll(filepath.Dir(custom), 0o755)
	os.WriteFile(custom, []byte("warmup: 3\n"), 0o644)
	if err := WriteRepository(dir); err != nil {
		t.Fatal(err)
	}
	for _, name := range Names {
		b, err := os.ReadFile(filepath.Join(dir, name, "1", "model.onnx"))
		want, _ := Model(name)
		if err != nil || !bytes.Equal(b, want) {
			t.Errorf("%s: model.onnx not written (%v)", name, err)
		}
	}
	if b, _ := os.ReadFile(custom); string(b) != "warmup: 3\n" {
		t.Errorf("existing config.yaml overwritten: %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, V2, "config.yaml")); string(b) != ConfigYAML {
		t.Errorf("config.yaml = %q", b)
	}
	if _, err := os.Stat(filepath.Join(dir, "keep.txt")); err != nil {
		t.Error("other files removed")
	}
}
