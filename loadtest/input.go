package loadtest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"

	"github.com/switchyard-dev/switchyard/oip"
	"github.com/switchyard-dev/switchyard/oip/client"
)

// MaxInputLine bounds one line of an input file.
const MaxInputLine = 64 << 20

// ReadRequests reads OIP v2 REST inference requests, one JSON object per
// line (JSONL); blank lines and lines starting with # are skipped. An
// invalid line is an error naming its line number.
func ReadRequests(r io.Reader) ([]*oip.InferRequest, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), MaxInputLine)
	var out []*oip.InferRequest
	line := 0
	for sc.Scan() {
		line++
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 || b[0] == '#' {
			continue
		}
		req, err := oip.DecodeInferRequest(b, 0)
		if err != nil {
			return nil, fmt.Errorf("line %d: %v", line, err)
		}
		if len(req.Inputs) == 0 {
			return nil, fmt.Errorf("line %d: request has no inputs", line)
		}
		out = append(out, req)
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("line %d: longer than %d bytes", line+1, MaxInputLine)
		}
		return nil, fmt.Errorf("line %d: %v", line+1, err)
	}
	if len(out) == 0 {
		return nil, errors.New("no requests in the input (want one OIP v2 JSON request per line)")
	}
	return out, nil
}

// Generate builds n requests from a model's metadata: every input gets
// random values of its datatype from a PCG seeded with seed (so runs are
// reproducible); dynamic dimensions (-1) become 1.
func Generate(md *oip.ModelMetadata, n int, seed uint64) ([]*oip.InferRequest, error) {
	if len(md.Inputs) == 0 {
		return nil, fmt.Errorf("model %q declares no inputs; give requests with --input", md.Name)
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	out := make([]*oip.InferRequest, 0, n)
	for range max(n, 1) {
		req := &oip.InferRequest{}
		for _, in := range md.Inputs {
			t, err := randomTensor(rng, in)
			if err != nil {
				return nil, fmt.Errorf("model %q input %q: %w", md.Name, in.Name, err)
			}
			req.Inputs = append(req.Inputs, t)
		}
		out = append(out, req)
	}
	return out, nil
}

func randomTensor(rng *rand.Rand, in oip.TensorMetadata) (oip.Tensor, error) {
	shape := make([]int64, len(in.Shape))
	n := int64(1)
	for i, d := range in.Shape {
		if d < 0 {
			d = 1
		}
		shape[i] = d
		n *= d
	}
	if n > 16<<20 {
		return oip.Tensor{}, fmt.Errorf("shape %v has %d elements, too many to generate", shape, n)
	}
	switch in.Datatype {
	case oip.BOOL:
		return oip.NewTensor(in.Name, shape, fill(n, func() bool { return rng.IntN(2) == 1 })), nil
	case oip.UINT8:
		return oip.NewTensor(in.Name, shape, fill(n, func() uint8 { return uint8(rng.IntN(256)) })), nil
	case oip.UINT16:
		return oip.NewTensor(in.Name, shape, fill(n, func() uint16 { return uint16(rng.IntN(1000)) })), nil
	case oip.UINT32:
		return oip.NewTensor(in.Name, shape, fill(n, func() uint32 { return uint32(rng.IntN(1000)) })), nil
	case oip.UINT64:
		return oip.NewTensor(in.Name, shape, fill(n, func() uint64 { return uint64(rng.IntN(1000)) })), nil
	case oip.INT8:
		return oip.NewTensor(in.Name, shape, fill(n, func() int8 { return int8(rng.IntN(100)) })), nil
	case oip.INT16:
		return oip.NewTensor(in.Name, shape, fill(n, func() int16 { return int16(rng.IntN(1000)) })), nil
	case oip.INT32:
		return oip.NewTensor(in.Name, shape, fill(n, func() int32 { return int32(rng.IntN(1000)) })), nil
	case oip.INT64:
		return oip.NewTensor(in.Name, shape, fill(n, func() int64 { return int64(rng.IntN(1000)) })), nil
	case oip.FP16:
		t := oip.NewTensor(in.Name, shape, fill(n, func() uint16 { return oip.Float32ToHalf(rng.Float32()) }))
		t.Datatype = oip.FP16
		return t, nil
	case oip.FP32:
		return oip.NewTensor(in.Name, shape, fill(n, func() float32 { return rng.Float32() })), nil
	case oip.FP64:
		return oip.NewTensor(in.Name, shape, fill(n, func() float64 { return rng.Float64() })), nil
	case oip.BYTES:
		elems := make([][]byte, n)
		for i := range elems {
			b := make([]byte, 8)
			for j := range b {
				b[j] = byte('a' + rng.IntN(26))
			}
			elems[i] = b
		}
		return oip.NewBytesTensor(in.Name, shape, elems), nil
	}
	return oip.Tensor{}, fmt.Errorf("datatype %q cannot be generated", in.Datatype)
}

func fill[T any](n int64, f func() T) []T {
	out := make([]T, n)
	for i := range out {
		out[i] = f()
	}
	return out
}

// FetchMetadata reads a model's metadata from the target (REST GET
// /v2/models/{m} or gRPC ModelMetadata). A missing model is an *oip.Error
// with code NotFound.
func FetchMetadata(ctx context.Context, t Target, addr string, hc *http.Client) (*oip.ModelMetadata, error) {
	var c client.Client
	if t.Protocol == "grpc" {
		cc, err := DialGRPC(addr)
		if err != nil {
			return nil, err
		}
		defer cc.Close()
		c = client.NewGRPC(cc)
	} else {
		c = client.NewHTTP("http://"+addr, client.HTTPOptions{Client: hc})
	}
	md, err := c.ModelMetadata(ctx, t.Model, t.Version)
	if err != nil {
		return nil, fmt.Errorf("model metadata of %q from %s: %w", t.Model, addr, err)
	}
	return md, nil
}
