package shadow

import (
	"fmt"
	"reflect"

	"github.com/switchyard-dev/switchyard/oip"
)

// Batched shadow calls. A shadow's answer is compared, never returned, so
// its latency is nobody's wait: a worker may join several mirrored requests
// into one call of the shadow version, along dimension 0 (the rows), and
// split the answer back. One call instead of N saves the proxy N-1 round
// trips (the write and read system calls and the wake-ups are most of a
// mirror's cost) and gives the shadow backend one run of N rows. The
// functions here are pure: requests in, one request out; one answer in,
// answers out.

// Joinable reports whether b can join a call with a: the same inputs (names,
// datatypes, non-batch dimensions, in the same order), at least one row
// each, the same request parameters and the same requested outputs.
func Joinable(a, b *oip.InferRequest) bool {
	if len(a.Inputs) == 0 || len(a.Inputs) != len(b.Inputs) {
		return false
	}
	for i := range a.Inputs {
		x, y := &a.Inputs[i], &b.Inputs[i]
		if x.Name != y.Name || x.Datatype != y.Datatype || len(x.Shape) == 0 || len(x.Shape) != len(y.Shape) {
			return false
		}
		if x.Shape[0] < 1 || y.Shape[0] < 1 || x.Shape[0] != a.Inputs[0].Shape[0] || y.Shape[0] != b.Inputs[0].Shape[0] {
			return false // every input of a request has the same row count
		}
		for d := 1; d < len(x.Shape); d++ {
			if x.Shape[d] != y.Shape[d] {
				return false
			}
		}
		if !reflect.DeepEqual(x.Parameters, y.Parameters) {
			return false
		}
	}
	return reflect.DeepEqual(a.Parameters, b.Parameters) && reflect.DeepEqual(a.Outputs, b.Outputs)
}

// Rows is the batch dimension of a request (its first input's dimension 0).
func Rows(r *oip.InferRequest) int64 {
	if len(r.Inputs) == 0 || len(r.Inputs[0].Shape) == 0 {
		return 0
	}
	return r.Inputs[0].Shape[0]
}

// JoinRequests concatenates the inputs of joinable requests along dimension
// 0 into one request (the first request's ID, parameters and requested
// outputs). The requests are not modified.
func JoinRequests(reqs []*oip.InferRequest) (*oip.InferRequest, error) {
	if len(reqs) == 0 {
		return nil, fmt.Errorf("join: no requests")
	}
	first := reqs[0]
	var rows int64
	for i, r := range reqs {
		if !Joinable(first, r) {
			return nil, fmt.Errorf("join: request %d does not match the first (inputs, shapes, parameters or outputs differ)", i)
		}
		rows += Rows(r)
	}
	out := &oip.InferRequest{ID: first.ID, Parameters: first.Parameters, Outputs: first.Outputs,
		Inputs: make([]oip.Tensor, len(first.Inputs))}
	for i := range first.Inputs {
		size := 0
		for _, r := range reqs {
			size += len(r.Inputs[i].Raw)
		}
		raw := make([]byte, 0, size)
		for _, r := range reqs {
			raw = append(raw, r.Inputs[i].Raw...)
		}
		in := &first.Inputs[i]
		out.Inputs[i] = oip.Tensor{Name: in.Name, Datatype: in.Datatype, Parameters: in.Parameters,
			Shape: append([]int64{rows}, in.Shape[1:]...), Raw: raw}
	}
	return out, nil
}

// SplitResponse cuts the answer to a joined request back into one answer
// per request, rows[i] rows each, in order. Every output must keep the
// batch dimension (shape[0] = the sum of rows) and have fixed-size
// elements; otherwise the answer cannot be split and the caller calls the
// requests one by one.
func SplitResponse(resp *oip.InferResponse, rows []int64) ([]*oip.InferResponse, error) {
	var total int64
	for _, n := range rows {
		total += n
	}
	for i := range resp.Outputs {
		o := &resp.Outputs[i]
		if o.Datatype == oip.BYTES || o.Datatype.Size() == 0 {
			return nil, fmt.Errorf("split: output %q has variable-size elements (%s)", o.Name, o.Datatype)
		}
		if len(o.Shape) == 0 || o.Shape[0] != total {
			return nil, fmt.Errorf("split: output %q has shape %v, not %d rows first", o.Name, o.Shape, total)
		}
		if int64(len(o.Raw))%max(total, 1) != 0 {
			return nil, fmt.Errorf("split: output %q holds %d bytes, not a multiple of %d rows", o.Name, len(o.Raw), total)
		}
	}
	out := make([]*oip.InferResponse, len(rows))
	var off int64
	for k, n := range rows {
		r := &oip.InferResponse{ModelName: resp.ModelName, ModelVersion: resp.ModelVersion, ID: resp.ID,
			Parameters: resp.Parameters, Outputs: make([]oip.Tensor, len(resp.Outputs))}
		for i := range resp.Outputs {
			o := &resp.Outputs[i]
			rowBytes := int64(len(o.Raw)) / max(total, 1)
			lo, hi := off*rowBytes, (off+n)*rowBytes
			r.Outputs[i] = oip.Tensor{Name: o.Name, Datatype: o.Datatype, Parameters: o.Parameters,
				Shape: append([]int64{n}, o.Shape[1:]...), Raw: o.Raw[lo:hi:hi]}
		}
		out[k] = r
		off += n
	}
	return out, nil
}
