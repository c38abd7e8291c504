package shadow

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/oip"
)

func resp(ts ...oip.Tensor) Result { return Result{Response: &oip.InferResponse{Outputs: ts}} }

func scores(name string, rows int, v ...float32) oip.Tensor {
	return oip.NewTensor(name, []int64{int64(rows), int64(len(v) / rows)}, v)
}

func TestTopK(t *testing.T) {
	v := []float64{0.1, 0.9, 0.5, 0.9, math.NaN(), 0.7}
	got := topK(nil, v, 4)
	want := []int{1, 3, 5, 2}
	if !equalInts(got, want) {
		t.Fatalf("topK = %v, want %v", got, want)
	}
	if got := topK(nil, v, 6); got[5] != 4 {
		t.Errorf("NaN must rank last: %v", got)
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestCompareModes(t *testing.T) {
	cfg := func(r Rule) Config { return Config{Rule: r}.Defaults() }
	nan := float32(math.NaN())
	inf := float32(math.Inf(1))
	cases := []struct {
		name   string
		p, s   Result
		cfg    Config
		agree  bool
		reason string
		check  func(t *testing.T, d OutputDiff)
	}{
		{name: "numeric within tolerance", p: resp(scores("y", 1, 1, 2, 3)), s: resp(scores("y", 1, 1.0005, 2, 3)), cfg: cfg(Rule{}), agree: true,
			check: func(t *testing.T, d OutputDiff) {
				if math.Abs(d.MaxAbsDiff-0.0005) > 1e-6 || math.Abs(d.MaxRelDiff-0.0005) > 1e-6 {
					t.Errorf("figures %+v", d)
				}
			}},
		{name: "numeric over tolerance", p: resp(scores("y", 1, 1, 2, 3)), s: resp(scores("y", 1, 1, 2.1, 3)), cfg: cfg(Rule{}), agree: false, reason: `output "y": element 1`},
		{name: "numeric loose tolerance", p: resp(scores("y", 1, 1, 2, 3)), s: resp(scores("y", 1, 1, 2.1, 3)), cfg: cfg(Rule{RelTol: 0.1}), agree: true},
		{name: "topk same order", p: resp(scores("s", 1, 0.1, 0.9, 0.5, 0.7)), s: resp(scores("s", 1, 0.2, 0.8, 0.4, 0.6)), cfg: cfg(Rule{Mode: TopK, K: 3}), agree: true,
			check: func(t *testing.T, d OutputDiff) {
				if d.TopKOverlap != 1 || d.RankAgreement != 1 || d.K != 3 || d.Rows != 1 {
					t.Errorf("figures %+v", d)
				}
			}},
		{name: "topk same set other order", p: resp(scores("s", 1, 0.1, 0.9, 0.5, 0.7)), s: resp(scores("s", 1, 0.1, 0.5, 0.9, 0.7)), cfg: cfg(Rule{Mode: TopK, K: 3}), agree: true,
			check: func(t *testing.T, d OutputDiff) {
				// top3 primary [1 3 2], shadow [2 3 1]: same set, one position equal
				if d.TopKOverlap != 1 || math.Abs(d.RankAgreement-1.0/3) > 1e-12 {
					t.Errorf("figures %+v", d)
				}
			}},
		{name: "topk partial overlap", p: resp(scores("s", 2, 4, 3, 2, 1, 4, 3, 2, 1)), s: resp(scores("s", 2, 4, 3, 2, 1, 1, 2, 3, 4)), cfg: cfg(Rule{Mode: TopK, K: 2}), agree: false, reason: "top-2 overlap 0.00 in row 1",
			check: func(t *testing.T, d OutputDiff) {
				if d.Rows != 2 || d.TopKOverlap != 0.5 || d.MinTopKOverlap != 0 || d.RankAgreement != 0.5 {
					t.Errorf("figures %+v", d)
				}
			}},
		{name: "argmax agree", p: resp(scores("c", 2, 0.1, 0.9, 0.8, 0.2)), s: resp(scores("c", 2, 0.3, 0.7, 0.6, 0.4)), cfg: cfg(Rule{Mode: Argmax}), agree: true,
			check: func(t *testing.T, d OutputDiff) {
				if d.ArgmaxAgreement != 1 || d.Rows != 2 {
					t.Errorf("figures %+v", d)
				}
			}},
		{name: "argmax one row differs", p: resp(scores("c", 2, 0.1, 0.9, 0.8, 0.2)), s: resp(scores("c", 2, 0.3, 0.7, 0.4, 0.6)), cfg: cfg(Rule{Mode: Argmax}), agree: false, reason: "labels differ in 1 of 2 rows",
			check: func(t *testing.T, d OutputDiff) {
				if d.ArgmaxAgreement != 0.5 {
					t.Errorf("figures %+v", d)
				}
			}},
		{name: "exact ints", p: resp(oip.NewTensor("i", []int64{3}, []int64{1, 2, 3})), s: resp(oip.NewTensor("i", []int64{3}, []int64{1, 5, 3})), cfg: cfg(Rule{Mode: Exact}), agree: false, reason: "1 of 3 elements differ"},
		{name: "bytes compared exactly whatever the mode", p: resp(oip.NewBytesTensor("b", []int64{2}, [][]byte{[]byte("a"), []byte("b")})),
			s: resp(oip.NewBytesTensor("b", []int64{2}, [][]byte{[]byte("a"), []byte("b")})), cfg: cfg(Rule{Mode: TopK}), agree: true,
			check: func(t *testing.T, d OutputDiff) {
				if d.Mode != Exact || d.Elements != 2 {
					t.Errorf("figures %+v", d)
				}
			}},
		{name: "exact datatype differs", p: resp(oip.NewTensor("i", []int64{1}, []int64{1})), s: resp(oip.NewTensor("i", []int64{1}, []int32{1})), cfg: cfg(Rule{Mode: Exact}), agree: false, reason: "datatype INT64 vs INT32"},
		{name: "shape differs", p: resp(scores("y", 1, 1, 2)), s: resp(scores("y", 1, 1, 2, 3)), cfg: cfg(Rule{}), agree: false, reason: "shape [1 2] vs [1 3]"},
		{name: "missing in shadow", p: resp(scores("y", 1, 1)), s: resp(scores("z", 1, 1)), cfg: cfg(Rule{}), agree: false, reason: "missing in shadow"},
		{name: "shadow NaN", p: resp(scores("y", 1, 1, 2)), s: resp(scores("y", 1, 1, nan)), cfg: cfg(Rule{}), agree: false, reason: `shadow output has NaN/Inf: output "y"`,
			check: func(t *testing.T, d OutputDiff) {
				if !d.NaN || !strings.HasPrefix(d.Reason, "element 1") {
					t.Errorf("numeric output diff %+v", d)
				}
			}},
		// NaN is never ranked: a NaN that moves other items in or out of
		// the top k reads as NaN, not as a low overlap.
		{name: "shadow NaN that changes the top k", p: resp(scores("s", 1, 5, 4, 3, 2, 1)), s: resp(scores("s", 1, nan, 4, 3, 2, 1)), cfg: cfg(Rule{Mode: TopK, K: 2}), agree: false, reason: `shadow output has NaN/Inf: output "s"`,
			check: func(t *testing.T, d OutputDiff) {
				if !d.NaN || d.Reason != "shadow output has NaN/Inf" || d.TopKOverlap != 0 || d.Rows != 0 || d.K != 2 {
					t.Errorf("topk output diff %+v", d)
				}
			}},
		{name: "primary Inf with argmax", p: resp(scores("c", 1, 0.1, inf)), s: resp(scores("c", 1, 0.1, 0.9)), cfg: cfg(Rule{Mode: Argmax}), agree: false, reason: `primary output has NaN/Inf: output "c"`,
			check: func(t *testing.T, d OutputDiff) {
				if !d.NaN || d.Reason != "primary output has NaN/Inf" || d.ArgmaxAgreement != 0 {
					t.Errorf("argmax output diff %+v", d)
				}
			}},
		{name: "both NaN alike with topk agree", p: resp(scores("s", 1, nan, 2, 1)), s: resp(scores("s", 1, nan, 2, 1)), cfg: cfg(Rule{Mode: TopK, K: 2}), agree: true},
		{name: "both NaN at different places with topk", p: resp(scores("s", 1, nan, 2, 1)), s: resp(scores("s", 1, 3, nan, 1)), cfg: cfg(Rule{Mode: TopK, K: 2}), agree: false, reason: "both outputs have NaN/Inf, at different places"},
		{name: "shadow NaN with topk still disagrees", p: resp(scores("s", 1, 3, 2, 1)), s: resp(scores("s", 1, 3, 2, nan)), cfg: cfg(Rule{Mode: TopK, K: 2}), agree: false, reason: "shadow output has NaN/Inf"},
		{name: "both NaN same place", p: resp(scores("y", 1, 1, nan)), s: resp(scores("y", 1, 1, nan)), cfg: cfg(Rule{}), agree: true},
		{name: "shadow error", p: resp(scores("y", 1, 1)), s: Result{Err: errors.New("connection refused")}, cfg: cfg(Rule{}), agree: false, reason: "shadow failed: connection refused"},
		{name: "primary error", p: Result{Err: errors.New("timeout")}, s: resp(scores("y", 1, 1)), cfg: cfg(Rule{}), agree: false, reason: "primary failed"},
		{name: "both error", p: Result{Err: errors.New("a")}, s: Result{Err: errors.New("b")}, cfg: cfg(Rule{}), agree: true},
		{name: "restricted outputs", p: resp(scores("y", 1, 1), scores("z", 1, 1)), s: resp(scores("y", 1, 1), scores("z", 1, 9)), cfg: Config{Outputs: []string{"y"}}.Defaults(), agree: true},
		{name: "per output rule", p: resp(scores("y", 1, 1, 5), scores("z", 1, 1, 5)), s: resp(scores("y", 1, 2, 5), scores("z", 1, 2, 5)),
			cfg: Config{PerOutput: map[string]Rule{"y": {Mode: Argmax}}}.Defaults(), agree: false, reason: `output "z"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := Compare(c.p, c.s, c.cfg)
			if got.Agree != c.agree {
				t.Fatalf("agree = %v (reason %q), want %v", got.Agree, got.Reason, c.agree)
			}
			if !strings.Contains(got.Reason, c.reason) {
				t.Errorf("reason %q, want it to contain %q", got.Reason, c.reason)
			}
			if c.agree && got.Reason != "" {
				t.Errorf("agreeing comparison has reason %q", got.Reason)
			}
			if c.check != nil {
				c.check(t, got.Outputs[0])
			}
		})
	}
}

func TestCompareFlagsAndLatency(t *testing.T) {
	nan := float32(math.NaN())
	p := resp(scores("y", 1, nan))
	p.Latency = 3 * time.Millisecond
	s := Result{Err: errors.New("boom"), Latency: 10 * time.Millisecond}
	c := Compare(p, s, Config{}.Defaults())
	if !c.PrimaryNaN || c.ShadowNaN || c.ShadowError != "boom" || c.LatencyDiff != 7*time.Millisecond {
		t.Fatalf("%+v", c)
	}
}

func TestConfigValidate(t *testing.T) {
	if err := (Config{Rule: Rule{Mode: "fuzzy"}}).Validate(); err == nil || !strings.Contains(err.Error(), "compare.mode") {
		t.Errorf("bad mode: %v", err)
	}
	if err := (Config{PerOutput: map[string]Rule{"y": {MinOverlap: 2}}}).Validate(); err == nil || !strings.Contains(err.Error(), `perOutput["y"]`) {
		t.Errorf("bad overlap: %v", err)
	}
	if err := (Config{}).Defaults().Validate(); err != nil {
		t.Error(err)
	}
}
