package pbwire

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	pb "github.com/switchyard-dev/switchyard/oip/inferencepb"
)

func sampleRequest() *pb.ModelInferRequest {
	return &pb.ModelInferRequest{
		ModelName: "recommender", ModelVersion: "v2", Id: "req-7",
		Parameters: map[string]*pb.InferParameter{"priority": {ParameterChoice: &pb.InferParameter_Int64Param{Int64Param: 3}}},
		Inputs: []*pb.ModelInferRequest_InferInputTensor{
			{Name: "features", Datatype: "FP32", Shape: []int64{1, 4}, Contents: &pb.InferTensorContents{Fp32Contents: []float32{1, 2, 3, 4}}},
			{Name: "ids", Datatype: "INT64", Shape: []int64{1, 2},
				Parameters: map[string]*pb.InferParameter{"binary_data_size": {ParameterChoice: &pb.InferParameter_Int64Param{Int64Param: 16}}}},
		},
		Outputs:          []*pb.ModelInferRequest_InferRequestedOutputTensor{{Name: "scores"}},
		RawInputContents: [][]byte{make([]byte, 16)},
	}
}

func marshal(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func tag(num protowire.Number, typ protowire.Type) []byte {
	return protowire.AppendTag(nil, num, typ)
}

func str(num protowire.Number, s string) []byte {
	return protowire.AppendString(tag(num, protowire.BytesType), s)
}

func msg(num protowire.Number, parts ...[]byte) []byte {
	return protowire.AppendBytes(tag(num, protowire.BytesType), bytes.Join(parts, nil))
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// TestReadAndSplice: the head read from the bytes, and the spliced
// message decodes to the original with only the model name and version
// changed, unknown fields kept.
func TestReadAndSplice(t *testing.T) {
	base := marshal(t, sampleRequest())
	unknown := cat(protowire.AppendVarint(tag(99, protowire.VarintType), 42), str(50, "kept"))
	cases := []struct {
		name               string
		in                 []byte
		model, version, id string // the head
		toModel, toVersion string
		wantModel, wantVer string
		wantUnknown        []byte
	}{
		{name: "canonical", in: base, model: "recommender", version: "v2", id: "req-7",
			toModel: "recommender-v1", toVersion: "1", wantModel: "recommender-v1", wantVer: "1"},
		{name: "no version upstream", in: base, model: "recommender", version: "v2", id: "req-7",
			toModel: "recommender-v1", wantModel: "recommender-v1"},
		{name: "no name or version sent", in: marshal(t, &pb.ModelInferRequest{Id: "x"}), id: "x",
			toModel: "m", toVersion: "3", wantModel: "m", wantVer: "3"},
		{name: "unknown fields kept", in: cat(base, unknown), model: "recommender", version: "v2", id: "req-7",
			toModel: "b", wantModel: "b", wantUnknown: unknown},
		{name: "fields repeated: the last wins, all replaced", in: cat(str(1, "first"), base, str(2, "v9"), str(1, "last")),
			model: "last", version: "v9", id: "req-7", toModel: "b", toVersion: "2", wantModel: "b", wantVer: "2"},
		{name: "name after the tensors", in: cat(marshal(t, &pb.ModelInferRequest{Inputs: sampleRequest().Inputs}), str(1, "late")),
			model: "late", toModel: "b", wantModel: "b"},
		{name: "known field, other wire type: an unknown field", in: cat(protowire.AppendVarint(tag(1, protowire.VarintType), 5), str(1, "n")),
			model: "n", toModel: "b", wantModel: "b", wantUnknown: protowire.AppendVarint(tag(1, protowire.VarintType), 5)},
		{name: "empty", in: nil, toModel: "b", wantModel: "b"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var h Head
			if err := ReadRequest(tc.in, &h); err != nil {
				t.Fatalf("ReadRequest: %v", err)
			}
			if string(h.Model) != tc.model || string(h.Version) != tc.version || string(h.ID) != tc.id {
				t.Fatalf("head = %q %q %q, want %q %q %q", h.Model, h.Version, h.ID, tc.model, tc.version, tc.id)
			}
			out := AppendRequest([]byte("prefix"), tc.in, &h, tc.toModel, tc.toVersion)
			if !bytes.HasPrefix(out, []byte("prefix")) {
				t.Fatal("dst not appended to")
			}
			out = out[len("prefix"):]
			if n := RequestSize(tc.in, &h, tc.toModel, tc.toVersion); n != len(out) {
				t.Fatalf("RequestSize = %d, spliced %d bytes", n, len(out))
			}
			var want, got pb.ModelInferRequest
			if err := proto.Unmarshal(tc.in, &want); err != nil {
				t.Fatal(err)
			}
			if err := proto.Unmarshal(out, &got); err != nil {
				t.Fatalf("spliced message does not decode: %v", err)
			}
			if got.ModelName != tc.wantModel || got.ModelVersion != tc.wantVer {
				t.Fatalf("spliced name/version = %q %q, want %q %q", got.ModelName, got.ModelVersion, tc.wantModel, tc.wantVer)
			}
			want.ModelName, want.ModelVersion = tc.wantModel, tc.wantVer
			if !proto.Equal(&want, &got) {
				t.Fatalf("spliced message differs beyond name/version:\n got %v\nwant %v", &got, &want)
			}
			if u := got.ProtoReflect().GetUnknown(); !bytes.Equal(u, tc.wantUnknown) {
				t.Fatalf("unknown fields = %x, want %x", u, tc.wantUnknown)
			}
			if err := Check(Request, out); err != nil {
				t.Fatalf("spliced message fails Check: %v", err)
			}
		})
	}
}

// TestMalformed: what proto.Unmarshal refuses is refused, naming the
// field; what it accepts is accepted.
func TestMalformed(t *testing.T) {
	badUTF8 := string([]byte{0xff, 0xfe})
	input := func(parts ...[]byte) []byte { return msg(5, parts...) }
	cases := []struct {
		name string
		in   []byte
		path string // "" with ok
		ok   bool
	}{
		{name: "truncated tag", in: []byte{0x80}, path: ""},
		{name: "field number 0", in: protowire.AppendVarint([]byte{0x00}, 1), path: ""},
		{name: "truncated length", in: cat(str(1, "m"), []byte{0x2a, 0x10, 0x0a}), path: "inputs"},
		{name: "model name not UTF-8", in: str(1, badUTF8), path: "model_name"},
		{name: "id not UTF-8", in: str(3, badUTF8), path: "id"},
		{name: "input name not UTF-8", in: cat(input(str(1, "ok")), input(str(1, badUTF8))), path: "inputs[1].name"},
		{name: "packed shape truncated", in: input(protowire.AppendBytes(tag(3, protowire.BytesType), []byte{0x80})), path: "inputs[0].shape"},
		{name: "packed fp32 length", in: input(msg(5, protowire.AppendBytes(tag(6, protowire.BytesType), []byte{1, 2, 3}))), path: "inputs[0].contents.fp32_contents"},
		{name: "nested message truncated", in: input(msg(5, []byte{0x32, 0x08, 0, 0, 0, 0})), path: "inputs[0].contents.fp32_contents"},
		{name: "parameter key not UTF-8", in: msg(4, str(1, badUTF8)), path: "parameters[0].key"},
		{name: "parameter string not UTF-8", in: msg(4, str(1, "k"), msg(2, str(3, badUTF8))), path: "parameters[0].value.string_param"},
		{name: "unknown field truncated", in: []byte{0xa2, 0x06, 0x05, 0x01}, path: "#100"},
		{name: "end group without start", in: tag(9, protowire.EndGroupType), path: "#9"},
		{name: "raw contents: any bytes", in: protowire.AppendBytes(tag(7, protowire.BytesType), []byte{0xff, 0x00}), ok: true},
		{name: "unknown group", in: cat(tag(40, protowire.StartGroupType), str(1, "x"), tag(40, protowire.EndGroupType)), ok: true},
		{name: "packed fp32 whole", in: input(msg(5, protowire.AppendBytes(tag(6, protowire.BytesType), make([]byte, 8)))), ok: true},
		{name: "unpacked shape", in: input(protowire.AppendVarint(tag(3, protowire.VarintType), 4)), ok: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var h Head
			err := ReadRequest(tc.in, &h)
			cerr := Check(Request, tc.in)
			perr := proto.Unmarshal(tc.in, &pb.ModelInferRequest{})
			if (perr == nil) != tc.ok {
				t.Fatalf("proto.Unmarshal: %v; the case says ok=%v", perr, tc.ok)
			}
			if tc.ok {
				if err != nil || cerr != nil {
					t.Fatalf("refused what proto.Unmarshal takes: %v / %v", err, cerr)
				}
				return
			}
			for _, e := range []error{err, cerr} {
				var we *Error
				if !errors.As(e, &we) {
					t.Fatalf("error %v is not an *Error", e)
				}
				if we.Path != tc.path || we.Message != "ModelInferRequest" {
					t.Fatalf("error %q: path %q, want %q", e, we.Path, tc.path)
				}
				if tc.path != "" && !strings.Contains(e.Error(), "field "+tc.path+":") {
					t.Fatalf("error %q does not name the field", e)
				}
			}
		})
	}
}

// TestAgreesWithUnmarshal: random corruptions of real messages are
// accepted by Check exactly when proto.Unmarshal accepts them
// (deterministic seed, bounded).
func TestAgreesWithUnmarshal(t *testing.T) {
	resp := &pb.ModelInferResponse{ModelName: "m", ModelVersion: "1", Id: "i",
		Outputs: []*pb.ModelInferResponse_InferOutputTensor{{Name: "scores", Datatype: "FP32", Shape: []int64{1, 2},
			Contents: &pb.InferTensorContents{Fp32Contents: []float32{0.5, 1}, BytesContents: [][]byte{{1}}}}},
		RawOutputContents: [][]byte{{1, 2, 3, 4}}}
	for _, tc := range []struct {
		s   *Schema
		b   []byte
		new func() proto.Message
	}{
		{Request, marshal(t, sampleRequest()), func() proto.Message { return &pb.ModelInferRequest{} }},
		{Response, marshal(t, resp), func() proto.Message { return &pb.ModelInferResponse{} }},
	} {
		rng := rand.New(rand.NewPCG(1, 2))
		for i := 0; i < 3000; i++ {
			b := bytes.Clone(tc.b)
			switch rng.IntN(3) {
			case 0:
				b[rng.IntN(len(b))] = byte(rng.Uint32())
			case 1:
				b = b[:rng.IntN(len(b))]
			default:
				j := rng.IntN(len(b))
				b[j] ^= 0x80
				b[rng.IntN(len(b))] = []byte{0xff, 0xc0, 0x80, 0x07}[rng.IntN(4)]
			}
			perr := proto.Unmarshal(b, tc.new())
			cerr := Check(tc.s, b)
			if (perr == nil) != (cerr == nil) {
				t.Fatalf("%x: proto.Unmarshal %v, Check %v", b, perr, cerr)
			}
			if tc.s == Request {
				var h Head
				if rerr := ReadRequest(b, &h); (rerr == nil) != (perr == nil) {
					t.Fatalf("%x: proto.Unmarshal %v, ReadRequest %v", b, perr, rerr)
				}
			}
		}
	}
}

// BenchmarkRoute: what the proxy's gRPC pass-through does with a request
// (read the head, splice the model in) against what decoding it did
// (proto.Unmarshal, set the name, proto.Marshal).
//
//	go test -run '^$' -bench Route -benchmem ./oip/pbwire/
func BenchmarkRoute(b *testing.B) {
	m := sampleRequest()
	m.Inputs = m.Inputs[:1]
	m.RawInputContents = nil
	in, _ := proto.Marshal(m)
	b.Run("wire", func(b *testing.B) {
		b.ReportAllocs()
		var h Head
		buf := make([]byte, 0, 1024)
		for i := 0; i < b.N; i++ {
			if err := ReadRequest(in, &h); err != nil {
				b.Fatal(err)
			}
			buf = AppendRequest(buf[:0], in, &h, "recommender-v1", "")
		}
	})
	b.Run("decode", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			var r pb.ModelInferRequest
			if err := proto.Unmarshal(in, &r); err != nil {
				b.Fatal(err)
			}
			r.ModelName, r.ModelVersion = "recommender-v1", ""
			if _, err := proto.Marshal(&r); err != nil {
				b.Fatal(err)
			}
		}
	})
}
