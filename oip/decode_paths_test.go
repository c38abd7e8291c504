package oip

import (
	"strings"
	"testing"
)

// TestDecodeFieldPathsAndEscapes: the decoder's no-copy fast paths (plain
// keys and datatypes read in place, field paths joined only for an error)
// give the same results and errors as the general paths: escaped keys and
// datatypes decode as their plain forms, and each wrong field is named.
func TestDecodeFieldPathsAndEscapes(t *testing.T) {
	plain := `{"inputs":[{"name":"x","datatype":"FP32","shape":[1,2],"data":[1,2]}]}`
	escaped := `{"inp\u0075ts":[{"n\u0061me":"x","datatype":"FP\u00332","sh\u0061pe":[1,2],"data":[1,2]}]}`
	for _, body := range []string{plain, escaped} {
		req, err := DecodeInferRequest([]byte(body), 0)
		if err != nil {
			t.Fatalf("%s: %v", body, err)
		}
		in := req.Inputs[0]
		if in.Name != "x" || in.Datatype != FP32 || len(in.Shape) != 2 || in.Shape[1] != 2 || len(in.Raw) != 8 {
			t.Fatalf("%s: decoded %+v", body, in)
		}
	}
	for _, tc := range []struct{ body, want string }{
		{`{"inputs":[{"name":"x","datatype":7,"shape":[1],"data":[1]}]}`, `inputs[0] ("x").datatype: must be a string`},
		{`{"inputs":[{"name":"x","datatype":"FP31","shape":[1],"data":[1]}]}`, `inputs[0] ("x").datatype: unknown datatype "FP31"`},
		{`{"inputs":[{"name":"x","datatype":"fp32","shape":[1],"data":[1]}]}`, `inputs[0] ("x").datatype: unknown datatype "fp32"`},
		{`{"inputs":[{"name":1,"datatype":"FP32","shape":[1],"data":[1]}]}`, `inputs[0].name: must be a string`},
		{`{"inputs":[{"name":"x","datatype":"FP32","shape":1,"data":[1]}]}`, `inputs[0] ("x").shape: must be an array`},
		{`{"inputs":[{"name":"x","datatype":"FP32","shape":[-1],"data":[1]}]}`, `inputs[0] ("x").shape[0]: -1; dimensions must be >= 0`},
	} {
		_, err := DecodeInferRequest([]byte(tc.body), 0)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want it to contain %q", tc.body, err, tc.want)
		}
	}
	// The same for an answer (the lenient decoder).
	resp, err := DecodeInferResponse([]byte(`{"model_name":"m","outputs":[{"name":"s","datatype":"FP\u00332","shape":[1,2],"data":[NaN,-Infinity]}]}`), 0)
	if err != nil || resp.Outputs[0].Datatype != FP32 || !resp.Outputs[0].HasNaNOrInf() {
		t.Fatalf("response: %+v, %v", resp, err)
	}
}
