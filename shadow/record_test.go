package shadow

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/oip"
)

func TestRotatingWriter(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "shadow.jsonl")
	w, err := NewRotatingWriter(path, 600, 2)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	const n = 40
	for i := 0; i < n; i++ {
		if err := w.Write(Record{Time: t0.Add(time.Duration(i) * time.Second), RequestID: fmt.Sprint(i), Model: "rec", Kind: KindShadow, Weight: 1}); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Write(Record{}); err == nil {
		t.Error("write after close succeeded")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 3 {
		t.Fatalf("files %v, want shadow.jsonl and 2 rotated", entries)
	}
	for _, e := range entries {
		info, _ := e.Info()
		if info.Size() > 600 {
			t.Errorf("%s is %d bytes > 600", e.Name(), info.Size())
		}
	}
	recs, skipped, err := ReadRecords(path, time.Time{}, time.Time{})
	if err != nil || skipped != 0 {
		t.Fatal(err, skipped)
	}
	if len(recs) == 0 || len(recs) >= n || recs[len(recs)-1].RequestID != fmt.Sprint(n-1) {
		t.Fatalf("read %d records, last %+v", len(recs), recs[len(recs)-1])
	}
	for i := 1; i < len(recs); i++ {
		if !recs[i].Time.After(recs[i-1].Time) {
			t.Fatalf("records out of order at %d", i)
		}
	}
	// window filter, and a corrupt line is skipped, not fatal
	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString("{not json\n")
	f.Close()
	last := recs[len(recs)-1].Time
	got, skipped, err := ReadRecords(path, last, time.Time{})
	if err != nil || skipped != 1 || len(got) != 1 {
		t.Fatalf("window read: %d records, %d skipped, %v", len(got), skipped, err)
	}
	// reopening appends
	w2, err := NewRotatingWriter(path, 1<<20, 2)
	if err != nil {
		t.Fatal(err)
	}
	w2.Write(Record{Time: last.Add(time.Second), RequestID: "after"})
	w2.Close()
	got, _, _ = ReadRecords(path, last, time.Time{})
	if len(got) != 2 || got[1].RequestID != "after" {
		t.Fatalf("after reopen: %+v", got)
	}
}

func TestSummariseOutputs(t *testing.T) {
	r := &oip.InferResponse{Outputs: []oip.Tensor{
		oip.NewTensor("scores", []int64{2, 3}, []float32{0.1, 0.9, 0.5, 0.3, 0.2, 0.1}),
		oip.NewTensor("ids", []int64{3}, []int64{7, 8, 9}),
		oip.NewTensor("x", []int64{1}, []float64{math.NaN()}),
		oip.NewBytesTensor("label", []int64{1}, [][]byte{[]byte("cat")}),
	}}
	s := Summarise(r)
	if len(s) != 4 || len(s[0].Top) != 2 || s[0].Top[0][0] != 1 || s[0].Top[1][0] != 0 {
		t.Fatalf("scores summary %+v", s[0])
	}
	if len(s[1].Head) != 3 || s[1].Head[2] != 9 || s[2].Head[0] != 0 || s[3].Strings[0] != "cat" {
		t.Fatalf("summaries %+v", s)
	}
	req := &oip.InferRequest{Inputs: []oip.Tensor{oip.NewTensor("a", []int64{1}, []float32{1}), oip.NewTensor("b", []int64{1}, []float32{2})}}
	req2 := &oip.InferRequest{Inputs: []oip.Tensor{req.Inputs[1], req.Inputs[0]}}
	if d := InputDigest(req); len(d) != 64 || d != InputDigest(req2) {
		t.Errorf("digest %q vs %q", d, InputDigest(req2))
	}
}
