package backend_test

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/switchyard-dev/switchyard/inference-backend/backendtest"
	"github.com/switchyard-dev/switchyard/inference-backend/onnxpb"
	"github.com/switchyard-dev/switchyard/oip"
	"github.com/switchyard-dev/switchyard/oip/client"
)

// conformanceModels are ONNX's own backend test cases (Debian's
// libonnx-testdata): node tests across every OIP datatype ONNX uses (bool,
// 8..64-bit ints signed and unsigned, fp16, fp32, fp64, strings), ranks 0 to
// 6, multiple inputs and outputs, data-dependent output shapes, and
// PyTorch-converted and PyTorch-operator models.
var conformanceModels = []string{
	"node/test_abs", "node/test_add_bcast", "node/test_add_uint8", "node/test_and4d",
	"node/test_argmax_keepdims_random", "node/test_argmin_no_keepdims_example",
	"node/test_basic_convinteger", "node/test_bitshift_left_uint32",
	"node/test_cast_DOUBLE_to_FLOAT16", "node/test_cast_FLOAT16_to_FLOAT",
	"node/test_cast_STRING_to_FLOAT",
	"node/test_clip", "node/test_concat_3d_axis_0", "node/test_conv_with_strides_padding",
	"node/test_cumsum_1d", "node/test_div_uint8", "node/test_einsum_batch_matmul",
	"node/test_equal", "node/test_expand_dim_changed", "node/test_gather_0",
	"node/test_gemm_default_single_elem_vector_bias", "node/test_isinf", "node/test_isnan",
	"node/test_loop11", "node/test_matmul_4d", "node/test_matmulinteger",
	"node/test_max_int8", "node/test_max_uint64", "node/test_min_int32",
	"node/test_mod_mixed_sign_int16", "node/test_mod_uint16", "node/test_neg",
	"node/test_nonzero_example", "node/test_not_2d", "node/test_onehot_with_axis",
	"node/test_pow_types_int64_int64", "node/test_range_float_type_positive_delta",
	"node/test_reduce_sum_keepdims_random", "node/test_relu", "node/test_reshape_reordered_all_dims",
	"node/test_shape_example", "node/test_size_example", "node/test_softmax_axis_1",
	"node/test_sqrt", "node/test_strnormalizer_nostopwords_nochangecase",
	"node/test_top_k", "node/test_transpose_all_permutations_0", "node/test_where_example",
	"pytorch-converted/test_Conv2d", "pytorch-converted/test_Conv3d",
	"pytorch-converted/test_ConvTranspose2d", "pytorch-converted/test_Embedding",
	"pytorch-converted/test_MaxPool2d", "pytorch-converted/test_Softmax",
	"pytorch-converted/test_log_softmax_dim3",
	"pytorch-operator/test_operator_chunk", "pytorch-operator/test_operator_index",
	"pytorch-operator/test_operator_pad", "pytorch-operator/test_operator_permute2",
	"pytorch-operator/test_operator_reduced_mean_keepdim",
	"simple/test_expand_shape_model1", "simple/test_sequence_model1",
	"simple/test_strnorm_model_nostopwords_nochangecase",
}

// testdataRoot is where libonnx-testdata lives (`make setup` installs it);
// $SWITCHYARD_ONNX_TESTDATA overrides.
func testdataRoot(t *testing.T) string {
	root := os.Getenv("SWITCHYARD_ONNX_TESTDATA")
	if root == "" {
		root = "/usr/share/libonnx-testdata/data"
	}
	if _, err := os.Stat(filepath.Join(root, "node")); err != nil {
		t.Fatalf("ONNX test data not found at %s (run `make setup`, which installs Debian's libonnx-testdata, or set SWITCHYARD_ONNX_TESTDATA): %v", root, err)
	}
	return root
}

// backendName turns "node/test_abs" into a model name, "node-abs".
func backendName(path string) string {
	dir, name := filepath.Split(path)
	return strings.TrimSuffix(dir, "/") + "-" + strings.TrimPrefix(name, "test_")
}

type testCase struct {
	inputs  []*onnxpb.Tensor
	outputs []*onnxpb.Tensor
}

func readCases(t *testing.T, dir string) []testCase {
	t.Helper()
	sets, _ := filepath.Glob(filepath.Join(dir, "test_data_set_*"))
	if len(sets) == 0 {
		t.Fatalf("%s has no test_data_set_*", dir)
	}
	var cases []testCase
	for _, set := range sets {
		var c testCase
		for _, kind := range []string{"input", "output"} {
			for i := 0; ; i++ {
				b, err := os.ReadFile(filepath.Join(set, fmt.Sprintf("%s_%d.pb", kind, i)))
				if err != nil {
					break
				}
				tp, err := onnxpb.ParseTensor(b)
				if err != nil {
					t.Fatalf("%s %s_%d.pb: %v", set, kind, i, err)
				}
				if kind == "input" {
					c.inputs = append(c.inputs, tp)
				} else {
					c.outputs = append(c.outputs, tp)
				}
			}
		}
		cases = append(cases, c)
	}
	return cases
}

var onnxDatatypes = map[int32]oip.Datatype{
	onnxpb.Bool: oip.BOOL, onnxpb.Uint8: oip.UINT8, onnxpb.Uint16: oip.UINT16,
	onnxpb.Uint32: oip.UINT32, onnxpb.Uint64: oip.UINT64, onnxpb.Int8: oip.INT8,
	onnxpb.Int16: oip.INT16, onnxpb.Int32: oip.INT32, onnxpb.Int64: oip.INT64,
	onnxpb.Float16: oip.FP16, onnxpb.Float: oip.FP32, onnxpb.Double: oip.FP64,
	onnxpb.String: oip.BYTES,
}

func toOIP(t *testing.T, tp *onnxpb.Tensor, name string) oip.Tensor {
	dt, ok := onnxDatatypes[tp.DataType]
	if !ok {
		t.Fatalf("tensor %q: ONNX type %d", tp.Name, tp.DataType)
	}
	shape := tp.Dims
	if shape == nil {
		shape = []int64{}
	}
	if dt == oip.BYTES {
		return oip.NewBytesTensor(name, shape, tp.Strings)
	}
	return oip.Tensor{Name: name, Datatype: dt, Shape: shape, Raw: tp.Raw}
}

// TestConformance serves ONNX test models from the backend and checks every
// test data set over REST (JSON numbers), REST (binary tensor data) and gRPC
// against the expected outputs.
func TestConformance(t *testing.T) {
	root := testdataRoot(t)
	repo := t.TempDir()
	for _, m := range conformanceModels {
		dir := filepath.Join(repo, backendName(m), "1")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join(root, m, "model.onnx"), filepath.Join(dir, "model.onnx")); err != nil {
			t.Fatal(err)
		}
	}
	be := backendtest.Start(t, backendtest.Options{Repository: repo})
	ctx := context.Background()

	clients := map[string]client.Client{
		"rest-json":   client.NewHTTP("http://"+be.HTTPAddr, client.HTTPOptions{}),
		"rest-binary": client.NewHTTP("http://"+be.HTTPAddr, client.HTTPOptions{Binary: true}),
	}
	gc, err := client.DialGRPC(be.GRPCAddr)
	if err != nil {
		t.Fatal(err)
	}
	clients["grpc"] = gc
	t.Cleanup(func() {
		for _, c := range clients {
			c.Close()
		}
	})

	index, err := clients["grpc"].RepositoryIndex(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(index) != len(conformanceModels) {
		t.Fatalf("%d of %d models ready: %+v", len(index), len(conformanceModels), index)
	}

	for _, m := range conformanceModels {
		name := backendName(m)
		t.Run(name, func(t *testing.T) {
			md, err := clients["rest-json"].ModelMetadata(ctx, name, "")
			if err != nil {
				t.Fatal(err)
			}
			for ci, c := range readCases(t, filepath.Join(root, m)) {
				if len(c.inputs) != len(md.Inputs) || len(c.outputs) != len(md.Outputs) {
					t.Fatalf("test data has %d inputs/%d outputs, metadata %d/%d", len(c.inputs), len(c.outputs), len(md.Inputs), len(md.Outputs))
				}
				req := &oip.InferRequest{ModelName: name, ID: fmt.Sprintf("case-%d", ci)}
				for i, in := range c.inputs {
					req.Inputs = append(req.Inputs, toOIP(t, in, md.Inputs[i].Name))
				}
				nonFinite := false
				for i := range req.Inputs {
					nonFinite = nonFinite || req.Inputs[i].HasNaNOrInf()
				}
				for _, o := range c.outputs {
					w := toOIP(t, o, "")
					nonFinite = nonFinite || w.HasNaNOrInf()
				}
				for transport, cl := range clients {
					if nonFinite && transport == "rest-json" {
						continue // JSON numbers cannot carry NaN or infinities
					}
					resp, err := cl.Infer(ctx, req)
					if err != nil {
						t.Fatalf("case %d over %s: %v", ci, transport, err)
					}
					if resp.ModelName != name || resp.ModelVersion != "1" || resp.ID != req.ID {
						t.Errorf("case %d over %s: response names %q version %q id %q", ci, transport, resp.ModelName, resp.ModelVersion, resp.ID)
					}
					if len(resp.Outputs) != len(c.outputs) {
						t.Fatalf("case %d over %s: %d outputs, want %d", ci, transport, len(resp.Outputs), len(c.outputs))
					}
					for i, want := range c.outputs {
						w := toOIP(t, want, md.Outputs[i].Name)
						if err := compareTensors(&w, &resp.Outputs[i]); err != nil {
							t.Errorf("case %d over %s: output %q: %v", ci, transport, md.Outputs[i].Name, err)
						}
					}
				}
			}
		})
	}
}

// compareTensors checks datatype, shape and values: exact for integers,
// booleans and strings; within atol 1e-5 + rtol 1e-3 for floats (NaN
// matches NaN, infinities match exactly).
func compareTensors(want, got *oip.Tensor) error {
	if got.Name != want.Name {
		return fmt.Errorf("name %q, want %q", got.Name, want.Name)
	}
	if got.Datatype != want.Datatype {
		return fmt.Errorf("datatype %s, want %s", got.Datatype, want.Datatype)
	}
	if fmt.Sprint(got.Shape) != fmt.Sprint(want.Shape) {
		return fmt.Errorf("shape %v, want %v", got.Shape, want.Shape)
	}
	if want.Datatype == oip.BYTES || !want.Datatype.IsFloat() {
		if string(got.Raw) != string(want.Raw) {
			return fmt.Errorf("data differs: got %q, want %q", clip(got.Raw), clip(want.Raw))
		}
		return nil
	}
	a, _ := want.Float64s()
	g, err := got.Float64s()
	if err != nil || len(a) != len(g) {
		return fmt.Errorf("data: %d values, want %d (%v)", len(g), len(a), err)
	}
	for i := range a {
		switch {
		case math.IsNaN(a[i]) && math.IsNaN(g[i]):
		case a[i] == g[i]:
		case math.Abs(a[i]-g[i]) <= 1e-5+1e-3*math.Abs(a[i]):
		default:
			return fmt.Errorf("element %d: got %v, want %v", i, g[i], a[i])
		}
	}
	return nil
}

func clip(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}
