// Package demomodels generates Switchyard's demo models: small, deterministic
// ONNX recommenders built in Go (no downloads), and a model repository that
// serves them.
//
// Every model maps user features `features` FP32 [N,32] (N dynamic) to item
// scores `scores` FP32 [N,100]:
//
//   - recommender-v1: an MLP, Gemm(32→64) → Relu → Gemm(64→100), weights from
//     a fixed seed.
//   - recommender-v2: v1's weights plus a small seeded perturbation, so v1
//     and v2 rank items similarly: their top-10 sets mostly but not always
//     agree (see TopKAgreement in the tests for the measured rates).
//   - recommender-v3: v1 exactly, except the NaN rule: every score of a row
//     whose features[i,0] is below -0.75 is NaN (the graph adds
//     0*Sqrt(features[:,0:1] + 0.75), which is 0 when features[i,0] >= -0.75
//     and NaN below). Other rows equal v1's scores. For features uniform in
//     [-1, 1) that is one row in eight.
//   - recommender-lite: a smaller MLP, Gemm(32→16) → Relu → Gemm(16→100), its
//     own seed; a cheap backup whose rankings differ from v1's.
//
// Each is served as its own backend model name with version 1, with a
// config.yaml that enables dynamic batching.
package demomodels

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"

	"github.com/switchyard-dev/switchyard/inference-backend/onnxpb"
)

// Shapes of the demo models.
const (
	Features = 32  // input width
	Items    = 100 // output width
	Hidden   = 64  // hidden width of v1/v2/v3
	LiteHid  = 16  // hidden width of lite
)

// Input and output tensor names.
const (
	InputName  = "features"
	OutputName = "scores"
)

// Model names.
const (
	V1   = "recommender-v1"
	V2   = "recommender-v2"
	V3   = "recommender-v3"
	Lite = "recommender-lite"
)

// Names lists the demo models in a fixed order.
var Names = []string{V1, V2, V3, Lite}

// NaNThreshold is recommender-v3's NaN threshold on features[0].
const NaNThreshold = -0.75

// NaNRule reports whether recommender-v3 returns NaN scores for this
// feature row: exactly when features[0] < -0.75 (NaNThreshold).
func NaNRule(features []float32) bool { return features[0] < NaNThreshold }

// ConfigYAML is the config.yaml written next to each demo model.
const ConfigYAML = `# Demo model: dynamic batching on, one warm-up request.
max_batch_size: 64
dynamic_batching:
  max_queue_delay: 200us
warmup: 1
`

// MLP holds the weights of a two-layer perceptron: scores =
// relu(x·W1 + B1)·W2 + B2, W1 is [in,hidden] and W2 [hidden,out], row-major.
type MLP struct {
	In, Hidden, Out int
	W1, B1, W2, B2  []float32
}

// Eval computes the MLP in Go for one feature row (float32 arithmetic, the
// same order as a plain matrix product; results agree with ONNX Runtime to
// within rounding, not bit for bit).
func (m *MLP) Eval(x []float32) []float32 {
	h := make([]float32, m.Hidden)
	for j := 0; j < m.Hidden; j++ {
		s := m.B1[j]
		for i := 0; i < m.In; i++ {
			s += x[i] * m.W1[i*m.Hidden+j]
		}
		if s < 0 {
			s = 0
		}
		h[j] = s
	}
	out := make([]float32, m.Out)
	for k := 0; k < m.Out; k++ {
		s := m.B2[k]
		for j := 0; j < m.Hidden; j++ {
			s += h[j] * m.W2[j*m.Out+k]
		}
		out[k] = s
	}
	return out
}

// Weights returns the weights of a named demo model (v3 has v1's).
func Weights(name string) (*MLP, error) {
	switch name {
	case V1, V3:
		return newMLP(Hidden, 1), nil
	case V2:
		m := newMLP(Hidden, 1)
		r := rng(2)
		perturb(m.W1, &r, 0.06)
		perturb(m.W2, &r, 0.06)
		return m, nil
	case Lite:
		return newMLP(LiteHid, 4), nil
	}
	return nil, fmt.Errorf("unknown demo model %q", name)
}

func newMLP(hidden int, seed uint64) *MLP {
	r := rng(seed)
	m := &MLP{In: Features, Hidden: hidden, Out: Items}
	a1 := float32(math.Sqrt(6 / float64(Features+hidden)))
	a2 := float32(math.Sqrt(6 / float64(hidden+Items)))
	m.W1 = uniform(&r, Features*hidden, a1)
	m.B1 = uniform(&r, hidden, 0.1)
	m.W2 = uniform(&r, hidden*Items, a2)
	m.B2 = uniform(&r, Items, 0.05)
	return m
}

// perturb adds uniform noise of ±scale times each weight's typical size.
func perturb(w []float32, r *rng, scale float32) {
	var mean float64
	for _, v := range w {
		mean += math.Abs(float64(v))
	}
	mean /= float64(len(w))
	for i := range w {
		w[i] += (2*r.float() - 1) * scale * float32(mean)
	}
}

// rng is splitmix64: tiny, deterministic across Go versions and platforms.
type rng uint64

func (r *rng) next() uint64 {
	*r += 0x9e3779b97f4a7c15
	z := uint64(*r)
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// float is uniform in [0,1).
func (r *rng) float() float32 { return float32(r.next()>>40) / (1 << 24) }

func uniform(r *rng, n int, a float32) []float32 {
	out := make([]float32, n)
	for i := range out {
		out[i] = (2*r.float() - 1) * a
	}
	return out
}

// RandomFeatures returns n deterministic feature rows (uniform in [-1,1)) for
// a seed: handy for tests and load generators.
func RandomFeatures(seed uint64, n int) [][]float32 {
	r := rng(seed ^ 0x5eed)
	rows := make([][]float32, n)
	for i := range rows {
		rows[i] = uniform(&r, Features, 1)
	}
	return rows
}

// NewMLP returns a seeded 32→hidden→100 MLP with the demo models' weight
// scales; benchmarks use it for heavier models of the same signature.
func NewMLP(hidden int, seed uint64) *MLP { return newMLP(hidden, seed) }

// Model returns the ONNX ModelProto bytes of a named demo model.
func Model(name string) ([]byte, error) {
	m, err := Weights(name)
	if err != nil {
		return nil, err
	}
	return MLPModel(name, m, name == V3), nil
}

// MLPModel builds the ONNX model of an MLP with the demo signature
// (features FP32 [N,32] → scores FP32 [N,100]); withNaNRule adds v3's NaN
// rule.
func MLPModel(name string, m *MLP, withNaNRule bool) []byte {
	g := onnxpb.Graph{
		Name: name,
		Inputs: []onnxpb.ValueInfo{{Name: InputName, ElemType: onnxpb.Float, HasShape: true,
			Shape: []onnxpb.Dim{{Param: "N"}, {Value: Features, Known: true}}}},
		Outputs: []onnxpb.ValueInfo{{Name: OutputName, ElemType: onnxpb.Float, HasShape: true,
			Shape: []onnxpb.Dim{{Param: "N"}, {Value: Items, Known: true}}}},
		Initializers: []onnxpb.Tensor{
			floatTensor("W1", []int64{int64(m.In), int64(m.Hidden)}, m.W1),
			floatTensor("B1", []int64{int64(m.Hidden)}, m.B1),
			floatTensor("W2", []int64{int64(m.Hidden), int64(m.Out)}, m.W2),
			floatTensor("B2", []int64{int64(m.Out)}, m.B2),
		},
		Nodes: []onnxpb.Node{
			{Name: "gemm1", OpType: "Gemm", Inputs: []string{InputName, "W1", "B1"}, Outputs: []string{"h"}},
			{Name: "relu", OpType: "Relu", Inputs: []string{"h"}, Outputs: []string{"hr"}},
		},
	}
	if withNaNRule {
		// scores = mlp + 0 * Sqrt(features[:, 0:1] + 0.75): NaN exactly
		// where features[i,0] < -0.75 (the float32 sum of two numbers within
		// a factor of two is exact, so its sign is the comparison's).
		g.Initializers = append(g.Initializers,
			int64Tensor("starts", []int64{0}), int64Tensor("ends", []int64{1}),
			int64Tensor("axes", []int64{1}), floatTensor("zero", nil, []float32{0}),
			floatTensor("offset", nil, []float32{-NaNThreshold}))
		g.Nodes = append(g.Nodes,
			onnxpb.Node{Name: "gemm2", OpType: "Gemm", Inputs: []string{"hr", "W2", "B2"}, Outputs: []string{"mlp"}},
			onnxpb.Node{Name: "first", OpType: "Slice", Inputs: []string{InputName, "starts", "ends", "axes"}, Outputs: []string{"f0raw"}},
			onnxpb.Node{Name: "shift", OpType: "Add", Inputs: []string{"f0raw", "offset"}, Outputs: []string{"f0"}},
			onnxpb.Node{Name: "sqrt", OpType: "Sqrt", Inputs: []string{"f0"}, Outputs: []string{"s0"}},
			onnxpb.Node{Name: "mask", OpType: "Mul", Inputs: []string{"s0", "zero"}, Outputs: []string{"z0"}},
			onnxpb.Node{Name: "nan", OpType: "Add", Inputs: []string{"mlp", "z0"}, Outputs: []string{OutputName}},
		)
	} else {
		g.Nodes = append(g.Nodes,
			onnxpb.Node{Name: "gemm2", OpType: "Gemm", Inputs: []string{"hr", "W2", "B2"}, Outputs: []string{OutputName}})
	}
	model := onnxpb.Model{
		IRVersion:       8,
		Opset:           13,
		ProducerName:    "switchyard-demomodels",
		ProducerVersion: "1",
		DocString:       "Switchyard demo recommender " + name,
		Graph:           g,
	}
	return model.Marshal()
}

func floatTensor(name string, dims []int64, v []float32) onnxpb.Tensor {
	raw := make([]byte, 0, 4*len(v))
	for _, f := range v {
		raw = binary.LittleEndian.AppendUint32(raw, math.Float32bits(f))
	}
	return onnxpb.Tensor{Name: name, DataType: onnxpb.Float, Dims: dims, Raw: raw}
}

func int64Tensor(name string, v []int64) onnxpb.Tensor {
	raw := make([]byte, 0, 8*len(v))
	for _, x := range v {
		raw = binary.LittleEndian.AppendUint64(raw, uint64(x))
	}
	return onnxpb.Tensor{Name: name, DataType: onnxpb.Int64, Dims: []int64{int64(len(v))}, Raw: raw}
}

// WriteRepository writes every demo model into dir as a model repository:
// dir/<name>/1/model.onnx and dir/<name>/config.yaml. Model files are
// overwritten, a config.yaml only written where none exists; other contents
// of dir are left alone.
func WriteRepository(dir string) error {
	for _, name := range Names {
		if err := WriteModel(dir, name, "1"); err != nil {
			return err
		}
	}
	return nil
}

// WriteModel writes one demo model as dir/<name>/<version>/model.onnx and its
// config.yaml (if none exists yet).
func WriteModel(dir, name, version string) error {
	b, err := Model(name)
	if err != nil {
		return err
	}
	vdir := filepath.Join(dir, name, version)
	if err := os.MkdirAll(vdir, 0o755); err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(vdir, "model.onnx"), b); err != nil {
		return err
	}
	cfg := filepath.Join(dir, name, "config.yaml")
	if _, err := os.Stat(cfg); os.IsNotExist(err) {
		return writeFileAtomic(cfg, []byte(ConfigYAML))
	}
	return nil
}

func writeFileAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// DeepModel builds a ranking-style MLP with the demo signature (features FP32
// [N,32] → scores FP32 [N,100]) and the given hidden widths: Gemm → Relu per
// hidden layer, then Gemm to the 100 scores; weights from seed. Benchmarks
// use it as a model whose weights, not the protocol, dominate a request: at
// batch 1 every row streams all weights from memory, a joined batch streams
// them once (the case dynamic batching exists for).
func DeepModel(name string, hidden []int, seed uint64) []byte {
	r := rng(seed)
	widths := append(append([]int{Features}, hidden...), Items)
	g := onnxpb.Graph{
		Name: name,
		Inputs: []onnxpb.ValueInfo{{Name: InputName, ElemType: onnxpb.Float, HasShape: true,
			Shape: []onnxpb.Dim{{Param: "N"}, {Value: Features, Known: true}}}},
		Outputs: []onnxpb.ValueInfo{{Name: OutputName, ElemType: onnxpb.Float, HasShape: true,
			Shape: []onnxpb.Dim{{Param: "N"}, {Value: Items, Known: true}}}},
	}
	prev := InputName
	for l := 0; l+1 < len(widths); l++ {
		in, out := widths[l], widths[l+1]
		a := float32(math.Sqrt(6 / float64(in+out)))
		w, b := fmt.Sprintf("W%d", l), fmt.Sprintf("B%d", l)
		g.Initializers = append(g.Initializers,
			floatTensor(w, []int64{int64(in), int64(out)}, uniform(&r, in*out, a)),
			floatTensor(b, []int64{int64(out)}, uniform(&r, out, 0.05)))
		last := l+2 == len(widths)
		h := fmt.Sprintf("h%d", l)
		if last {
			h = OutputName
		}
		g.Nodes = append(g.Nodes, onnxpb.Node{Name: "gemm" + fmt.Sprint(l), OpType: "Gemm", Inputs: []string{prev, w, b}, Outputs: []string{h}})
		prev = h
		if !last {
			g.Nodes = append(g.Nodes, onnxpb.Node{Name: "relu" + fmt.Sprint(l), OpType: "Relu", Inputs: []string{h}, Outputs: []string{h + "r"}})
			prev = h + "r"
		}
	}
	model := onnxpb.Model{IRVersion: 8, Opset: 13, ProducerName: "switchyard-demomodels", ProducerVersion: "1",
		DocString: "Switchyard benchmark ranker " + name, Graph: g}
	return model.Marshal()
}
