package controlplane_test

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/api"
	"github.com/switchyard-dev/switchyard/controlplane"
	"github.com/switchyard-dev/switchyard/controlplane/cptest"
)

// BenchmarkWeightChangeToAck measures the time from an API weight change
// (PUT /v1/models/{name}/weights over HTTP, fsynced to the bbolt file) until
// all 100 ADS clients in this process have ACKed the new version. Reports
// p50/p99/max in ms.
//
//	go test ./controlplane -run '^$' -bench WeightChangeToAck -benchtime 200x
func BenchmarkWeightChangeToAck(b *testing.B) {
	const clients = 100
	cp := cptest.Start(b, controlplane.Config{AllowAnonymousXDS: true}, nil)
	cptest.Call(b, cp, "PUT", "/v1/models/rec", cptest.EditorToken, cptest.Doc("rec", 50, 50))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	for i := 0; i < clients; i++ {
		cptest.DialADS(b, cp.XDSAddr(), fmt.Sprintf("proxy-%03d", i), nil)
	}
	if err := cp.Tracker().WaitConnected(ctx, clients); err != nil {
		b.Fatal(err)
	}
	if res := cp.WaitApplied(ctx, 1); len(res.Acked) != clients {
		b.Fatalf("initial config: %+v", res)
	}
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		r := cptest.Call(b, cp, "PUT", "/v1/models/rec/weights", cptest.EditorToken, api.WeightsRequest{Weights: map[string]int{"v1": 1 + i%100, "v2": 50}})
		if r.Code != http.StatusOK {
			b.Fatalf("PUT weights: %d %s", r.Code, r.Body)
		}
		var mr api.ModelResponse
		r.Decode(b, &mr)
		wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
		res := cp.WaitApplied(wctx, mr.Revision)
		wcancel()
		if len(res.Acked) != clients {
			b.Fatalf("revision %d: %d of %d ACKed", mr.Revision, len(res.Acked), clients)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) float64 {
		return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.5), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(pct(1), "max-ms")
	b.ReportMetric(0, "ns/op")
}
