package backend

import (
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"unsafe"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/switchyard-dev/switchyard/inference-backend/onnxpb"
	"github.com/switchyard-dev/switchyard/oip"
)

// tensorSpec is one input or output of a model's signature.
type tensorSpec struct {
	Name      string
	Datatype  oip.Datatype
	Shape     []int64 // -1: dynamic dimension
	RankKnown bool    // false when the model declares no shape at all
	ortType   ort.TensorElementDataType
}

func (t tensorSpec) String() string {
	if !t.RankKnown {
		return fmt.Sprintf("%s %s (any shape)", t.Name, t.Datatype)
	}
	return fmt.Sprintf("%s %s %v", t.Name, t.Datatype, t.Shape)
}

func (t tensorSpec) metadata() oip.TensorMetadata {
	shape := t.Shape
	if shape == nil {
		shape = []int64{}
	}
	return oip.TensorMetadata{Name: t.Name, Datatype: t.Datatype, Shape: shape}
}

// static reports whether every dimension is known, so an output buffer can
// be allocated before the run.
func (t tensorSpec) static() bool {
	if !t.RankKnown || t.Datatype == oip.BYTES {
		return false
	}
	for _, d := range t.Shape {
		if d < 0 {
			return false
		}
	}
	return true
}

// onnxToOIP maps ONNX tensor element types onto OIP datatypes.
var onnxToOIP = map[int32]oip.Datatype{
	onnxpb.Bool: oip.BOOL, onnxpb.Uint8: oip.UINT8, onnxpb.Uint16: oip.UINT16,
	onnxpb.Uint32: oip.UINT32, onnxpb.Uint64: oip.UINT64, onnxpb.Int8: oip.INT8,
	onnxpb.Int16: oip.INT16, onnxpb.Int32: oip.INT32, onnxpb.Int64: oip.INT64,
	onnxpb.Float16: oip.FP16, onnxpb.Float: oip.FP32, onnxpb.Double: oip.FP64,
	onnxpb.String: oip.BYTES,
}

func specsFrom(vis []onnxpb.ValueInfo, kind string) ([]tensorSpec, error) {
	out := make([]tensorSpec, 0, len(vis))
	for _, vi := range vis {
		dt, ok := onnxToOIP[vi.ElemType]
		if !ok {
			if vi.ElemType == 0 {
				return nil, fmt.Errorf("%s %q is not a tensor (sequences, maps and optionals are not served)", kind, vi.Name)
			}
			return nil, fmt.Errorf("%s %q has ONNX element type %d, which the Open Inference Protocol cannot carry", kind, vi.Name, vi.ElemType)
		}
		s := tensorSpec{Name: vi.Name, Datatype: dt, RankKnown: vi.HasShape, ortType: ort.TensorElementDataType(vi.ElemType)}
		if vi.HasShape {
			s.Shape = make([]int64, len(vi.Shape))
			for i, d := range vi.Shape {
				s.Shape[i] = -1
				if d.Known {
					s.Shape[i] = d.Value
				}
			}
		}
		out = append(out, s)
	}
	return out, nil
}

// SessionOptions configure one ONNX Runtime session.
type SessionOptions struct {
	IntraOpThreads int // 0: ONNX Runtime's default
	InterOpThreads int // 0: ONNX Runtime's default
	// NoSpinning turns off busy-waiting of the intra-op threads between
	// work items (session.intra_op.allow_spinning = 0): less CPU burnt when
	// the cores are shared with the server, a little more latency per op.
	NoSpinning bool
	Provider   string // "cpu" (default) or "cuda"
	Logger     *slog.Logger
}

// Session is one loaded ONNX model: an ONNX Runtime session and the model's
// signature read from the model file. Run is safe for concurrent use.
type Session struct {
	path     string
	sess     *ort.DynamicAdvancedSession
	inputs   []tensorSpec
	outputs  []tensorSpec
	inIndex  map[string]int
	outIndex map[string]int
	provider string // the provider actually used

	// preallocMismatch is set once a run with preallocated outputs failed
	// and one without succeeded: the declared output shapes are not the
	// real ones.
	preallocMismatch atomic.Bool
}

// NewSession loads the model file at path. InitORT must have succeeded.
func NewSession(path string, opts SessionOptions) (*Session, error) {
	if !ort.IsInitialized() {
		return nil, errNotInitialised
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	ins, outs, err := onnxpb.ParseModelIO(data)
	if err != nil {
		return nil, fmt.Errorf("read model %s: %w", path, err)
	}
	s := &Session{path: path, inIndex: map[string]int{}, outIndex: map[string]int{}}
	if s.inputs, err = specsFrom(ins, "input"); err != nil {
		return nil, err
	}
	if s.outputs, err = specsFrom(outs, "output"); err != nil {
		return nil, err
	}
	if len(s.outputs) == 0 {
		return nil, fmt.Errorf("model %s declares no outputs", path)
	}
	if len(s.inputs) == 0 {
		// The binding cannot run a session without inputs.
		return nil, fmt.Errorf("model %s declares no inputs; models without inputs are not served", path)
	}
	inNames := make([]string, len(s.inputs))
	for i, t := range s.inputs {
		inNames[i] = t.Name
		s.inIndex[t.Name] = i
	}
	outNames := make([]string, len(s.outputs))
	for i, t := range s.outputs {
		outNames[i] = t.Name
		s.outIndex[t.Name] = i
	}

	provider := strings.ToLower(opts.Provider)
	if provider == "" {
		provider = "cpu"
	}
	newOptions := func(cuda bool) (*ort.SessionOptions, error) {
		so, err := ort.NewSessionOptions()
		if err != nil {
			return nil, err
		}
		if opts.IntraOpThreads > 0 {
			if err := so.SetIntraOpNumThreads(opts.IntraOpThreads); err != nil {
				so.Destroy()
				return nil, err
			}
		}
		if opts.InterOpThreads > 0 {
			if err := so.SetInterOpNumThreads(opts.InterOpThreads); err != nil {
				so.Destroy()
				return nil, err
			}
		}
		if opts.NoSpinning {
			if err := so.AddSessionConfigEntry("session.intra_op.allow_spinning", "0"); err != nil {
				so.Destroy()
				return nil, err
			}
		}
		if cuda {
			co, err := ort.NewCUDAProviderOptions()
			if err == nil {
				err = so.AppendExecutionProviderCUDA(co)
				co.Destroy()
			}
			if err != nil {
				so.Destroy()
				return nil, err
			}
		}
		return so, nil
	}
	create := func(cuda bool) (*ort.DynamicAdvancedSession, error) {
		so, err := newOptions(cuda)
		if err != nil {
			return nil, err
		}
		defer so.Destroy()
		return ort.NewDynamicAdvancedSession(path, inNames, outNames, so)
	}
	switch provider {
	case "cpu":
		s.sess, err = create(false)
	case "cuda":
		s.sess, err = create(true)
		if err != nil {
			log.Warn("CUDA execution provider unavailable; running this model on CPU",
				"model_file", path, "reason", err.Error())
			s.sess, err = create(false)
			provider = "cpu"
		}
	default:
		return nil, fmt.Errorf("unknown execution provider %q (want cpu or cuda)", opts.Provider)
	}
	if err != nil {
		return nil, fmt.Errorf("create onnx runtime session for %s: %w", path, err)
	}
	s.provider = provider
	return s, nil
}

// Provider is the execution provider the session runs on ("cpu" or "cuda").
func (s *Session) Provider() string { return s.provider }

// Close releases the ONNX Runtime session. No Run may be in progress.
func (s *Session) Close() {
	if s.sess != nil {
		s.sess.Destroy()
		s.sess = nil
	}
}

// Inputs and Outputs describe the model's signature.
func (s *Session) Inputs() []oip.TensorMetadata  { return metas(s.inputs) }
func (s *Session) Outputs() []oip.TensorMetadata { return metas(s.outputs) }

func metas(specs []tensorSpec) []oip.TensorMetadata {
	out := make([]oip.TensorMetadata, len(specs))
	for i, t := range specs {
		out[i] = t.metadata()
	}
	return out
}

func listSpecs(specs []tensorSpec) string {
	parts := make([]string, len(specs))
	for i, t := range specs {
		parts[i] = t.String()
	}
	return strings.Join(parts, ", ")
}

// Infer validates inputs against the model's signature (like a request to
// the server) and runs the model once, in-process. It returns every output
// in signature order.
func (s *Session) Infer(inputs []oip.Tensor) ([]oip.Tensor, error) {
	bound := make([]*oip.Tensor, len(s.inputs))
	if err := s.bindInputs(s.path, inputs, bound); err != nil {
		return nil, err
	}
	return safeRun(s.run, bound)
}

// bindInputs checks request tensors against the signature and stores them in
// dst in signature order. Every error is an *oip.Error InvalidArgument naming
// the input and what was expected.
func (s *Session) bindInputs(model string, in []oip.Tensor, dst []*oip.Tensor) error {
	for i := range dst {
		dst[i] = nil
	}
	for k := range in {
		t := &in[k]
		i, ok := s.inIndex[t.Name]
		if !ok {
			return oip.Errorf(oip.InvalidArgument, "model %q has no input %q (inputs: %s)", model, t.Name, listSpecs(s.inputs))
		}
		if dst[i] != nil {
			return oip.Errorf(oip.InvalidArgument, "input %q given more than once", t.Name)
		}
		spec := &s.inputs[i]
		if t.Datatype != spec.Datatype {
			return oip.Errorf(oip.InvalidArgument, "input %q: datatype %s, model %q expects %s", t.Name, t.Datatype, model, spec.Datatype)
		}
		if spec.RankKnown {
			if len(t.Shape) != len(spec.Shape) {
				return oip.Errorf(oip.InvalidArgument, "input %q: shape %v has rank %d, model %q expects rank %d (shape %v, -1 = any size)",
					t.Name, t.Shape, len(t.Shape), model, len(spec.Shape), spec.Shape)
			}
			for d, want := range spec.Shape {
				if want >= 0 && t.Shape[d] != want {
					return oip.Errorf(oip.InvalidArgument, "input %q: shape %v, model %q expects %v (dimension %d must be %d)",
						t.Name, t.Shape, model, spec.Shape, d, want)
				}
			}
		}
		if err := t.Validate(); err != nil {
			return err
		}
		dst[i] = t
	}
	for i, t := range dst {
		if t == nil {
			return oip.Errorf(oip.InvalidArgument, "missing input %q (model %q expects inputs: %s)", s.inputs[i].Name, model, listSpecs(s.inputs))
		}
	}
	return nil
}

// run executes the model on inputs already bound in signature order and
// returns every output in signature order.
func (s *Session) run(inputs []*oip.Tensor) ([]oip.Tensor, error) {
	vals := make([]ort.Value, len(inputs)+len(s.outputs))
	ins, outs := vals[:len(inputs)], vals[len(inputs):]
	defer func() {
		for _, v := range vals {
			if v != nil {
				v.Destroy()
			}
		}
	}()
	for i, t := range inputs {
		v, err := newValue(t.Datatype, s.inputs[i].ortType, t.Shape, t.Raw)
		if err != nil {
			return nil, oip.Errorf(oip.InvalidArgument, "input %q: %v", t.Name, err)
		}
		ins[i] = v
	}
	// Outputs whose shape the model fixes are allocated here, in Go memory
	// that becomes the response's data without a copy. Rank-0 outputs must
	// be: the binding cannot convert an ONNX-Runtime-allocated scalar.
	prealloc := false
	noStatic := s.preallocMismatch.Load()
	for i := range s.outputs {
		spec := &s.outputs[i]
		if !spec.static() || (noStatic && len(spec.Shape) > 0) {
			continue
		}
		if v, err := newOutputValue(spec); err == nil {
			outs[i] = v
			prealloc = true
		}
	}
	err := s.sess.Run(ins, outs)
	if err != nil && prealloc {
		// A model may declare an output shape it does not produce; let ONNX
		// Runtime allocate and try again.
		for i, v := range outs {
			if v != nil {
				v.Destroy()
				outs[i] = nil
			}
		}
		err = s.sess.Run(ins, outs)
		if err == nil {
			// Stop preallocating outputs the model's declared shapes
			// cannot predict (rank-0 ones still must be).
			s.preallocMismatch.Store(true)
		}
	}
	if err != nil {
		return nil, oip.Errorf(oip.Internal, "onnx runtime: %v", err)
	}
	result := make([]oip.Tensor, len(outs))
	for i, v := range outs {
		t, err := fromValue(v, s.outputs[i].Datatype)
		if err != nil {
			return nil, oip.Errorf(oip.Internal, "output %q: %v", s.outputs[i].Name, err)
		}
		t.Name = s.outputs[i].Name
		result[i] = t
	}
	return result, nil
}

// newValue wraps request data in an ONNX Runtime value. Non-empty tensors
// of rank >= 1 point at raw without copying; raw must stay untouched until
// the value is destroyed.
func newValue(dt oip.Datatype, ot ort.TensorElementDataType, shape []int64, raw []byte) (ort.Value, error) {
	if dt == oip.BYTES {
		if len(shape) == 0 {
			return nil, fmt.Errorf("rank-0 BYTES tensors are not supported by the onnx runtime binding; send shape [1]")
		}
		t := oip.Tensor{Datatype: dt, Shape: shape, Raw: raw}
		elems, err := t.BytesElements()
		if err != nil {
			return nil, err
		}
		st, err := ort.NewStringTensor(ort.Shape(shape))
		if err != nil {
			return nil, err
		}
		strs := make([]string, len(elems))
		for i, e := range elems {
			if strings.IndexByte(string(e), 0) >= 0 {
				st.Destroy()
				return nil, fmt.Errorf("BYTES element %d contains a NUL byte, which ONNX string tensors cannot hold", i)
			}
			strs[i] = string(e)
		}
		if err := st.SetContents(strs); err != nil {
			st.Destroy()
			return nil, err
		}
		return st, nil
	}
	n, _ := oip.NumElements(shape)
	if len(shape) == 0 {
		return newScalar(dt, raw)
	}
	if n == 0 {
		return newEmpty(dt, shape)
	}
	return ort.NewCustomDataTensor(ort.Shape(shape), raw, ot)
}

func newScalar(dt oip.Datatype, raw []byte) (ort.Value, error) {
	switch dt {
	case oip.BOOL:
		return ort.NewScalar(raw[0] != 0)
	case oip.UINT8:
		return ort.NewScalar(raw[0])
	case oip.INT8:
		return ort.NewScalar(int8(raw[0]))
	case oip.UINT16:
		return ort.NewScalar(oip.Values[uint16](raw)[0])
	case oip.INT16:
		return ort.NewScalar(oip.Values[int16](raw)[0])
	case oip.UINT32:
		return ort.NewScalar(oip.Values[uint32](raw)[0])
	case oip.INT32:
		return ort.NewScalar(oip.Values[int32](raw)[0])
	case oip.UINT64:
		return ort.NewScalar(oip.Values[uint64](raw)[0])
	case oip.INT64:
		return ort.NewScalar(oip.Values[int64](raw)[0])
	case oip.FP32:
		return ort.NewScalar(oip.Values[float32](raw)[0])
	case oip.FP64:
		return ort.NewScalar(oip.Values[float64](raw)[0])
	}
	return nil, fmt.Errorf("rank-0 %s tensors are not supported by the onnx runtime binding", dt)
}

func newEmpty(dt oip.Datatype, shape []int64) (ort.Value, error) {
	s := ort.Shape(shape)
	switch dt {
	case oip.BOOL:
		return ort.NewTensor[bool](s, nil)
	case oip.UINT8:
		return ort.NewTensor[uint8](s, nil)
	case oip.INT8:
		return ort.NewTensor[int8](s, nil)
	case oip.UINT16:
		return ort.NewTensor[uint16](s, nil)
	case oip.INT16:
		return ort.NewTensor[int16](s, nil)
	case oip.UINT32:
		return ort.NewTensor[uint32](s, nil)
	case oip.INT32:
		return ort.NewTensor[int32](s, nil)
	case oip.UINT64:
		return ort.NewTensor[uint64](s, nil)
	case oip.INT64:
		return ort.NewTensor[int64](s, nil)
	case oip.FP32:
		return ort.NewTensor[float32](s, nil)
	case oip.FP64:
		return ort.NewTensor[float64](s, nil)
	}
	return nil, fmt.Errorf("empty %s tensors (shape %v) are not supported by the onnx runtime binding", dt, shape)
}

// newOutputValue allocates an output of a static shape.
func newOutputValue(spec *tensorSpec) (ort.Value, error) {
	if len(spec.Shape) == 0 {
		switch spec.Datatype {
		case oip.BOOL:
			return ort.NewEmptyScalar[bool]()
		case oip.UINT8:
			return ort.NewEmptyScalar[uint8]()
		case oip.INT8:
			return ort.NewEmptyScalar[int8]()
		case oip.UINT16:
			return ort.NewEmptyScalar[uint16]()
		case oip.INT16:
			return ort.NewEmptyScalar[int16]()
		case oip.UINT32:
			return ort.NewEmptyScalar[uint32]()
		case oip.INT32:
			return ort.NewEmptyScalar[int32]()
		case oip.UINT64:
			return ort.NewEmptyScalar[uint64]()
		case oip.INT64:
			return ort.NewEmptyScalar[int64]()
		case oip.FP32:
			return ort.NewEmptyScalar[float32]()
		case oip.FP64:
			return ort.NewEmptyScalar[float64]()
		}
		return nil, fmt.Errorf("no scalar %s", spec.Datatype)
	}
	n, err := oip.NumElements(spec.Shape)
	if err != nil || n == 0 {
		return nil, fmt.Errorf("cannot preallocate shape %v", spec.Shape)
	}
	return ort.NewCustomDataTensor(ort.Shape(spec.Shape), make([]byte, n*int64(spec.Datatype.Size())), spec.ortType)
}

// fromValue converts an output value to a canonical tensor. The tensor's
// data is the Go memory behind the value (no copy) where there is some.
func fromValue(v ort.Value, dt oip.Datatype) (oip.Tensor, error) {
	if v == nil {
		return oip.Tensor{}, fmt.Errorf("onnx runtime returned no value")
	}
	t := oip.Tensor{Datatype: dt, Shape: []int64(v.GetShape())}
	if t.Shape == nil {
		t.Shape = []int64{}
	}
	switch x := v.(type) {
	case *ort.CustomDataTensor:
		t.Raw = x.GetData()
	case *ort.StringTensor:
		strs, err := x.GetContents()
		if err != nil {
			return t, err
		}
		var raw []byte
		for _, s := range strs {
			raw = oip.AppendBytesElement(raw, []byte(s))
		}
		t.Raw = raw
	case *ort.Tensor[bool]:
		t.Datatype, t.Raw = typedBytes(x.GetData())
	case *ort.Tensor[uint8]:
		t.Datatype, t.Raw = typedBytes(x.GetData())
	case *ort.Tensor[int8]:
		t.Datatype, t.Raw = typedBytes(x.GetData())
	case *ort.Tensor[uint16]:
		t.Datatype, t.Raw = typedBytes(x.GetData())
	case *ort.Tensor[int16]:
		t.Datatype, t.Raw = typedBytes(x.GetData())
	case *ort.Tensor[uint32]:
		t.Datatype, t.Raw = typedBytes(x.GetData())
	case *ort.Tensor[int32]:
		t.Datatype, t.Raw = typedBytes(x.GetData())
	case *ort.Tensor[uint64]:
		t.Datatype, t.Raw = typedBytes(x.GetData())
	case *ort.Tensor[int64]:
		t.Datatype, t.Raw = typedBytes(x.GetData())
	case *ort.Tensor[float32]:
		t.Datatype, t.Raw = typedBytes(x.GetData())
	case *ort.Tensor[float64]:
		t.Datatype, t.Raw = typedBytes(x.GetData())
	case *ort.Scalar[bool]:
		t.Datatype, t.Raw = typedBytes([]bool{x.GetData()})
	case *ort.Scalar[uint8]:
		t.Datatype, t.Raw = typedBytes([]uint8{x.GetData()})
	case *ort.Scalar[int8]:
		t.Datatype, t.Raw = typedBytes([]int8{x.GetData()})
	case *ort.Scalar[uint16]:
		t.Datatype, t.Raw = typedBytes([]uint16{x.GetData()})
	case *ort.Scalar[int16]:
		t.Datatype, t.Raw = typedBytes([]int16{x.GetData()})
	case *ort.Scalar[uint32]:
		t.Datatype, t.Raw = typedBytes([]uint32{x.GetData()})
	case *ort.Scalar[int32]:
		t.Datatype, t.Raw = typedBytes([]int32{x.GetData()})
	case *ort.Scalar[uint64]:
		t.Datatype, t.Raw = typedBytes([]uint64{x.GetData()})
	case *ort.Scalar[int64]:
		t.Datatype, t.Raw = typedBytes([]int64{x.GetData()})
	case *ort.Scalar[float32]:
		t.Datatype, t.Raw = typedBytes([]float32{x.GetData()})
	case *ort.Scalar[float64]:
		t.Datatype, t.Raw = typedBytes([]float64{x.GetData()})
	default:
		return t, fmt.Errorf("onnx runtime returned a %T, which this backend cannot encode", v)
	}
	return t, nil
}

// bytesOf views a Go-allocated slice of fixed-width numbers as its
// little-endian bytes (every supported platform is little-endian).
func bytesOf[T oip.Number](data []T) []byte {
	if len(data) == 0 {
		return []byte{}
	}
	var zero T
	return unsafe.Slice((*byte)(unsafe.Pointer(&data[0])), len(data)*int(unsafe.Sizeof(zero)))
}

// typedBytes is bytesOf plus the OIP datatype of T (the type ONNX Runtime
// actually produced).
func typedBytes[T oip.Number](data []T) (oip.Datatype, []byte) {
	return oip.NewTensor[T]("", nil, nil).Datatype, bytesOf(data)
}
