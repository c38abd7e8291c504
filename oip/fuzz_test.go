package oip

import (
	"testing"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// FuzzDecodeInferRequest checks the REST request decoder never panics, that
// whatever it accepts is a valid request, and that an accepted request
// survives an encode/decode round trip unchanged. `go test` runs the seeds
// only; `go test -fuzz FuzzDecodeInferRequest ./oip/` explores.
func FuzzDecodeInferRequest(f *testing.F) {
	for _, seed := range []string{
		`{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[1.5,-2e-3]}]}`,
		`{"id":"a","parameters":{"k":1,"b":true},"inputs":[{"name":"x","shape":[2,1],"datatype":"INT8","data":[[1],[-128]]}],"outputs":[{"name":"y"}]}`,
		`{"inputs":[{"name":"s","shape":[2],"datatype":"BYTES","data":["a\"b","\u00e9"]},{"name":"b","shape":[1],"datatype":"BOOL","data":[true]}]}`,
		`{"inputs":[{"data":[[1,2],[3,4]],"datatype":"UINT64","shape":[2,2],"name":"u"}]}`,
		`{"inputs":[{"name":"h","shape":[],"datatype":"FP16","data":[0.5]}]}`,
		`{"inputs":[{"name":"x","shape":[0],"datatype":"FP64","data":[]}]}`,
		`{"inputs":[`,
		`[]`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := DecodeInferRequest(body, 0)
		if err != nil {
			if CodeOf(err) != InvalidArgument {
				t.Fatalf("error code %v for %q: %v", CodeOf(err), body, err)
			}
			return
		}
		for i := range req.Inputs {
			if err := req.Inputs[i].Validate(); err != nil {
				t.Fatalf("accepted an invalid tensor from %q: %v", body, err)
			}
		}
		if !utf8.Valid(body) {
			return // names with invalid UTF-8 are not preserved by JSON encoding
		}
		out, hl, err := AppendInferRequest(nil, req, true)
		if err != nil {
			t.Fatalf("re-encoding %q: %v", body, err)
		}
		again, err := DecodeInferRequest(out, hl)
		if err != nil {
			t.Fatalf("decoding re-encoded %q: %v", out, err)
		}
		if diff := cmp.Diff(req.Inputs, again.Inputs, cmpopts.EquateEmpty()); diff != "" {
			t.Fatalf("round trip of %q changed inputs:\n%s", body, diff)
		}
	})
}
