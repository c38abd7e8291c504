package shadow

import (
	"errors"
	"fmt"
	"testing"

	"github.com/switchyard-dev/switchyard/oip"
)

// TestCompareNaNErrors: a side whose NaN answer arrived as an error
// (ErrNaNOutput) counts as a NaN answer, not as a failure.
func TestCompareNaNErrors(t *testing.T) {
	good := Result{Response: &oip.InferResponse{Outputs: []oip.Tensor{oip.NewTensor("scores", []int64{1, 3}, []float32{1, 2, 3})}}}
	nanErr := Result{Err: fmt.Errorf("%w: outputs[0] (\"scores\"): element 0 is NaN", ErrNaNOutput)}
	failed := Result{Err: errors.New("connection refused")}
	cfg := Config{}.Defaults()
	for name, tc := range map[string]struct {
		p, s                 Result
		agree, pNaN, sNaN    bool
		pErr, sErr, inReason string
	}{
		"shadow NaN":     {p: good, s: nanErr, sNaN: true, inReason: "shadow output has NaN/Inf"},
		"primary NaN":    {p: nanErr, s: good, pNaN: true, inReason: "primary output has NaN/Inf"},
		"both NaN":       {p: nanErr, s: nanErr, agree: true, pNaN: true, sNaN: true},
		"primary failed": {p: failed, s: nanErr, sNaN: true, pErr: "connection refused", inReason: "primary failed"},
		"shadow failed":  {p: nanErr, s: failed, pNaN: true, sErr: "connection refused", inReason: "shadow failed"},
	} {
		c := Compare(tc.p, tc.s, cfg)
		if c.Agree != tc.agree || c.PrimaryNaN != tc.pNaN || c.ShadowNaN != tc.sNaN || c.PrimaryError != tc.pErr || c.ShadowError != tc.sErr {
			t.Errorf("%s: %+v", name, c)
		}
		if tc.inReason != "" && !contains(c.Reason, tc.inReason) {
			t.Errorf("%s: reason %q, want it to contain %q", name, c.Reason, tc.inReason)
		}
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}
