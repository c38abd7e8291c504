package canary

import (
	"testing"
	"time"
)

func BenchmarkHistogramRecord(b *testing.B) {
	var h Histogram
	d := 3 * time.Millisecond
	b.ReportAllocs()
	for b.Loop() {
		h.Record(d)
		d += 1013
	}
}

func BenchmarkHistogramMerge(b *testing.B) {
	var a, o Histogram
	for i := 0; i < 10000; i++ {
		o.Record(time.Duration(i) * 7 * time.Microsecond)
	}
	b.ReportAllocs()
	for b.Loop() {
		a.Merge(&o)
	}
}

func BenchmarkHistogramQuantile(b *testing.B) {
	var h Histogram
	for i := 0; i < 10000; i++ {
		h.Record(time.Duration(i) * 7 * time.Microsecond)
	}
	b.ReportAllocs()
	for b.Loop() {
		h.Quantile(0.99)
	}
}
