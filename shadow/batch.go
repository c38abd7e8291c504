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
		if !paramsEqual(x.Parameters, y.Parameters) {
			return false
		}
	}
	if !paramsEqual(a.Parameters, b.Parameters) {
		return false
	}
	if a.Outputs == nil && b.Outputs == nil {
		return true
	}
	return reflect.DeepEqual(a.Outputs, b.Outputs)
}

// paramsEqual is reflect.DeepEqual(a, b) without reflection for the common
// case of two nil maps.
func paramsEqual(a, b map[string]any) bool {
	if a == nil && b == nil {
		return true
	}
	return reflect.DeepEqual(a, b)
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
	for i, r := range reqs {
		if !Joinable(first, r) {
			return nil, fmt.Errorf("join: request %d does not match the first (inputs, shapes, parameters or outputs differ)", i)
		}
	}
	out := &oip.InferRequest{ID: first.ID, Parameters: first.Parameters, Outputs: first.Outputs,
		Inputs: make([]oip.Tensor, len(first.Inputs))}
	parts := make([]*oip.Tensor, len(reqs))
	for i := range first.Inputs {
		for k, r := range reqs {
			parts[k] = &r.Inputs[i]
		}
		out.Inputs[i] = oip.JoinRows(parts)
	}
	return out, nil
}

// SplitResponse cuts the answer to a joined request back into one answer
// per request, rows[i] rows each, in order. Every output must keep the
// batch dimension (shape[0] = the sum of rows) and have fixed-size
// elements; otherwise the answer cannot be split and the caller calls the
// requests one by one.
func SplitResponse(resp *oip.InferResponse, rows []int64) ([]*oip.InferResponse, error) {
	out := make([]*oip.InferResponse, len(rows))
	for k := range out {
		out[k] = &oip.InferResponse{ModelName: resp.ModelName, ModelVersion: resp.ModelVersion, ID: resp.ID,
			Parameters: resp.Parameters, Outputs: make([]oip.Tensor, len(resp.Outputs))}
	}
	for i := range resp.Outputs {
		pieces, err := oip.SplitRows(&resp.Outputs[i], rows)
		if err != nil {
			return nil, fmt.Errorf("split: %w", err)
		}
		for k := range pieces {
			out[k].Outputs[i] = pieces[k]
		}
	}
	return out, nil
}
