package statspb

import (
	"bytes"
	"flag"
	"os"
	"testing"

	"google.golang.org/protobuf/proto"
)

var writeWireFixture = flag.Bool("write-wire-fixture", false, "write testdata/report.binpb with this code")

// wireReport sets every field of every message.
func wireReport() *Report {
	return &Report{Proxy: "proxy-a", BootId: "boot-1", Seq: 42, AtUnixNano: 1_700_000_000_000_000_001,
		Entries: []*VariantStats{{
			Model: "recommender", Version: "v2", Requests: 1000,
			Errors:    map[string]uint64{"status_5xx": 3, "timeout": 1},
			Fallbacks: 4, NanOutputs: 2, ShadowCompared: 100, ShadowDisagreed: 7,
			Latency: &Histogram{BucketIndex: []uint32{3, 200}, BucketCount: []uint64{990, 10}, Total: 1000, SumNs: 123456789, MaxNs: 9876543, NumBuckets: 512},
		}}}
}

// TestWireFormatUnchanged: a report encodes to the bytes an earlier release
// wrote, and those bytes decode to the same report (field numbers, types
// and the proto package stay what proxies and control planes of the
// previous release speak during a rolling upgrade).
func TestWireFormatUnchanged(t *testing.T) {
	got, err := proto.MarshalOptions{Deterministic: true}.Marshal(wireReport())
	if err != nil {
		t.Fatal(err)
	}
	if *writeWireFixture {
		if err := os.WriteFile("testdata/report.binpb", got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile("testdata/report.binpb")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("report encodes to %x, the previous release to %x", got, want)
	}
	var back Report
	if err := proto.Unmarshal(want, &back); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(&back, wireReport()) {
		t.Errorf("old bytes decode to %v", &back)
	}
	if n := Stats_Stream_FullMethodName; n != "/switchyard.stats.v1.Stats/Stream" {
		t.Errorf("method %q", n)
	}
	if n := string((&Report{}).ProtoReflect().Descriptor().FullName()); n != "switchyard.stats.v1.Report" {
		t.Errorf("message %q", n)
	}
}
