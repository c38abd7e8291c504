package oip

import (
	"bytes"
	"math"
	"math/rand/v2"
	"strconv"
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

// TestFlatFloatsMatchesGeneralParser: the flat-array fast path of data
// gives the general parser's bytes wherever it applies, and declines (the
// scanner unmoved) wherever the general parser is needed.
func TestFlatFloatsMatchesGeneralParser(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 5))
	general := func(b []byte, dt Datatype, lenient bool) ([]byte, int, string) {
		s := &scanner{b: b, lenient: lenient}
		p := dataParser{s: s, dt: dt, path: "x", leaf: -1}
		if err := p.array(0); err != nil {
			return nil, 0, err.Error()
		}
		return p.raw, p.count, ""
	}
	var cases []string
	for range 3000 {
		n := 1 + r.IntN(6)
		b := []byte{'['}
		for i := range n {
			if i > 0 {
				b = append(b, ',')
				if r.IntN(4) == 0 {
					b = append(b, ' ')
				}
			}
			switch r.IntN(12) {
			case 0:
				b = append(b, "NaN"...)
			case 1:
				b = append(b, "1e400"...)
			case 2:
				b = append(b, "[1]"...)
			case 3:
				b = append(b, "0.12345678901234567"...)
			default:
				f := math.Float32frombits(r.Uint32())
				if f != f || math.IsInf(float64(f), 0) {
					f = 0.25
				}
				b = strconv.AppendFloat(b, float64(f), "gef"[r.IntN(3)], -1, 32)
			}
		}
		if r.IntN(8) == 0 {
			b = append(b, ',')
		}
		cases = append(cases, string(append(b, ']')))
	}
	cases = append(cases, "[]", "[1,]", "[ 1 , 2 ]", "[1 2]", "[-]", "[1.]", "[1e]", "[-0]", "[01]")
	fast := 0
	for _, c := range cases {
		for _, dt := range []Datatype{FP32, FP64} {
			for _, lenient := range []bool{false, true} {
				wantRaw, wantCount, wantErr := general([]byte(c), dt, lenient)
				for _, want := range []int64{int64(wantCount), int64(wantCount) + 1} {
					s := &scanner{b: []byte(c), lenient: lenient}
					raw, ok := s.flatFloats(nil, dt, want)
					if ok {
						fast++
					}
					switch {
					case !ok && s.i != 0:
						t.Fatalf("%s %s want %d: declined with the scanner moved to %d", c, dt, want, s.i)
					case ok && (wantErr != "" || want != int64(wantCount) || !bytes.Equal(raw, wantRaw) || s.i != len(c)):
						t.Fatalf("%s %s want %d: fast path %x (at %d), general %x count %d err %q", c, dt, want, raw, s.i, wantRaw, wantCount, wantErr)
					}
				}
			}
		}
	}
	if fast < len(cases)/10 {
		t.Fatalf("the fast path took only %d of %d arrays", fast, 4*len(cases))
	}
}
