package shadow

import (
	"math"
	"reflect"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/oip"
)

func TestSummary(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	rec := func(sec int, kind string, agree bool, w float64, pl, sl float64, mut func(*Record)) Record {
		r := Record{Time: t0.Add(time.Duration(sec) * time.Second), Kind: kind, Agree: agree, Weight: w,
			Primary: Side{LatencyMS: pl}, Shadow: Side{LatencyMS: sl}}
		ov := 1.0
		if !agree {
			ov = 0.5
		}
		r.Diff = []OutputDiff{{Name: "s", Mode: TopK, Agree: agree, TopKOverlap: ov, MinTopKOverlap: ov, RankAgreement: ov}}
		if mut != nil {
			mut(&r)
		}
		return r
	}
	recs := []Record{
		rec(-10, KindShadow, false, 1, 1, 1, nil), // before the window
		rec(1, KindShadow, true, 10, 2, 3, nil),   // a sampled agreement standing for 10
		rec(2, KindShadow, false, 1, 2, 4, nil),
		rec(3, KindShadow, false, 1, 2, 100, func(r *Record) {
			r.Shadow.Error, r.Diff = "timeout", nil
		}),
		rec(4, KindShadow, false, 1, 2, 5, func(r *Record) {
			r.Shadow.NaN = true
			r.Diff[0].MinTopKOverlap = 0.9
		}),
		rec(5, KindNoiseFloor, true, 1, 2, 2, nil),
		rec(6, KindNoiseFloor, false, 1, 2, 2, nil),
		rec(100, KindShadow, false, 1, 1, 1, nil), // after the window
	}
	rep := Summary(recs, t0, t0.Add(time.Minute), 2)
	s := rep.Shadow
	if s.Records != 4 || s.Compared != 13 || s.Agreed != 10 {
		t.Fatalf("records %d compared %v agreed %v", s.Records, s.Compared, s.Agreed)
	}
	if math.Abs(s.AgreementRate-10.0/13) > 1e-12 {
		t.Errorf("agreement %v", s.AgreementRate)
	}
	if s.ShadowErrors != 1 || math.Abs(s.ShadowErrorRate-1.0/13) > 1e-12 || s.ShadowNaN != 1 {
		t.Errorf("errors %+v", s)
	}
	tk := s.ByMode[TopK]
	if tk.Outputs != 12 || tk.Agreed != 10 || math.Abs(tk.MeanTopKOverlap-(10+0.5+0.5)/12) > 1e-12 {
		t.Errorf("topk %+v", tk)
	}
	// weighted latency: the agreement (weight 10) dominates the median
	if s.ShadowP50MS != 3 || s.ShadowP99MS != 5 || s.PrimaryP50MS != 2 {
		t.Errorf("latency p50 %v p99 %v primary %v (failed shadow calls excluded)", s.ShadowP50MS, s.ShadowP99MS, s.PrimaryP50MS)
	}
	if rep.NoiseFloor.Records != 2 || rep.NoiseFloor.AgreementRate != 0.5 {
		t.Errorf("noise floor %+v", rep.NoiseFloor)
	}
	if len(rep.Worst) != 2 || rep.Worst[0].Shadow.Error != "timeout" || !rep.Worst[1].Shadow.NaN {
		t.Errorf("worst %+v", rep.Worst)
	}
	if empty := Summary(nil, time.Time{}, time.Time{}, 5); empty.Shadow.Compared != 0 || empty.Shadow.AgreementRate != 0 {
		t.Errorf("empty %+v", empty)
	}
}

func TestRing(t *testing.T) {
	r := NewRing(3)
	for i := 0; i < 5; i++ {
		r.Add(Record{RequestID: string(rune('a' + i))})
	}
	got := r.Records()
	if len(got) != 3 || got[0].RequestID != "c" || got[2].RequestID != "e" {
		t.Fatalf("%+v", got)
	}
	r2 := NewRing(3)
	r2.Add(Record{RequestID: "x"})
	if got := r2.Records(); len(got) != 1 || got[0].RequestID != "x" {
		t.Fatalf("%+v", got)
	}
}

// TestRingDeferredRecords: a record added with its parts deferred reads back
// equal to one built eagerly by NewRecord, digest and summaries included.
func TestRingDeferredRecords(t *testing.T) {
	req := &oip.InferRequest{ID: "r", Inputs: []oip.Tensor{oip.NewTensor("x", []int64{1, 3}, []float32{1, 2, 3})}}
	p := &oip.InferResponse{Outputs: []oip.Tensor{oip.NewTensor("s", []int64{1, 4}, []float32{0.1, 0.9, 0.5, 0.2})}}
	s := &oip.InferResponse{Outputs: []oip.Tensor{oip.NewTensor("s", []int64{1, 4}, []float32{0.9, 0.1, 0.5, 0.2})}}
	j := &Job{Kind: KindShadow, Model: "m", PrimaryVersion: "v1", TargetVersion: "v2", Request: req, Primary: Result{Response: p}}
	sr := Result{Response: s}
	c := Compare(j.Primary, sr, Config{Rule: Rule{Mode: TopK, K: 2}}.Defaults())
	want := NewRecord(j, &c, sr, 1)
	if want.InputDigest == "" || len(want.Primary.Outputs) != 1 || len(want.Shadow.Outputs) != 1 {
		t.Fatalf("eager record lacks parts: %+v", want)
	}
	r := NewRing(2)
	r.AddDeferred(newRecordHead(j, &c, sr, 1), req, p, s)
	for range 2 { // filled once, then read as stored
		got := r.Records()
		if len(got) != 1 || !reflect.DeepEqual(got[0], want) {
			t.Fatalf("deferred record\n%+v\nwant\n%+v", got, want)
		}
	}
}

// A NaN answer is counted as such and never ranked: the topk means are
// over the ranked outputs only, and a record's summary of a NaN output
// holds its head, not a top-k order (issue 19).
func TestNaNIsCountedNotRanked(t *testing.T) {
	nan := float32(math.NaN())
	p := &oip.InferResponse{Outputs: []oip.Tensor{oip.NewTensor("s", []int64{1, 4}, []float32{4, 3, 2, 1})}}
	sGood := &oip.InferResponse{Outputs: []oip.Tensor{oip.NewTensor("s", []int64{1, 4}, []float32{4, 3, 2, 1})}}
	sNaN := &oip.InferResponse{Outputs: []oip.Tensor{oip.NewTensor("s", []int64{1, 4}, []float32{nan, 3, 2, 1})}}
	cfg := Config{Rule: Rule{Mode: TopK, K: 2}}.Defaults()
	good := Compare(Result{Response: p}, Result{Response: sGood}, cfg)
	bad := Compare(Result{Response: p}, Result{Response: sNaN}, cfg)
	if bad.Reason != `shadow output has NaN/Inf: output "s"` || !bad.ShadowNaN {
		t.Fatalf("NaN comparison: %+v", bad)
	}
	recs := []Record{
		{Agree: good.Agree, Diff: good.Outputs},
		{Agree: bad.Agree, Shadow: Side{NaN: bad.ShadowNaN, Outputs: Summarise(sNaN)}, Diff: bad.Outputs},
	}
	f := figures(recs)
	tk := f.ByMode[TopK]
	if f.ShadowNaN != 1 || f.Compared != 2 || f.Agreed != 1 || tk.Outputs != 1 || tk.MeanTopKOverlap != 1 {
		t.Fatalf("figures %+v, topk %+v", f, tk)
	}
	if sum := recs[1].Shadow.Outputs[0]; len(sum.Top) != 0 || len(sum.Head) != 4 || sum.Head[0] != 0 {
		t.Fatalf("summary of a NaN output: %+v", sum)
	}
}
