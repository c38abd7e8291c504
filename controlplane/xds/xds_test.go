package xds_test

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/switchyard-dev/switchyard/api"
	"github.com/switchyard-dev/switchyard/controlplane"
	"github.com/switchyard-dev/switchyard/controlplane/cptest"
	"github.com/switchyard-dev/switchyard/routing/xdsconv"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestXDSOverSocket drives a real ADS client: it receives the resources,
// then a weight change, NACKs a bad version (recorded and shown on
// /v1/proxies, without a resend loop), and ACKs a rollback.
func TestXDSOverSocket(t *testing.T) {
	cp := cptest.Start(t, controlplane.Config{AllowAnonymousXDS: true}, nil)
	ctx := cptest.WaitCtx(t)
	cptest.Call(t, cp, "PUT", "/v1/models/rec", cptest.EditorToken, cptest.Doc("rec", 80, 20))

	rejectVersion := make(chan string, 1)
	var rejectMu sync.Mutex
	rejecting := ""
	client := cptest.DialADS(t, cp.XDSAddr(), "proxy-1", func(typ string, resp *discoveryv3.DiscoveryResponse) error {
		rejectMu.Lock()
		defer rejectMu.Unlock()
		select {
		case v := <-rejectVersion:
			rejecting = v
		default:
		}
		if typ == resource.ClusterType && resp.GetVersionInfo() == rejecting {
			return errors.New("cluster rec_v2: test rejects this version")
		}
		return nil
	})
	other := cptest.DialADS(t, cp.XDSAddr(), "proxy-2", nil)

	v, models, err := client.WaitFor(ctx, func(v string, ms []api.Model) bool { return len(ms) == 1 })
	if err != nil {
		t.Fatal(err)
	}
	if v != "1" || models[0].Spec.Traffic.Weights["v1"] != 80 || models[0].Spec.Versions[1].Endpoints[0] != "127.0.0.1:8002" {
		t.Fatalf("first config: version %s %+v", v, models)
	}

	// A weight change reaches the proxy.
	r := cptest.Call(t, cp, "PUT", "/v1/models/rec/weights", cptest.EditorToken, api.WeightsRequest{Weights: map[string]int{"v1": 20, "v2": 80}})
	var wr api.ModelResponse
	r.Decode(t, &wr)
	if _, _, err := client.WaitFor(ctx, func(v string, ms []api.Model) bool {
		return len(ms) == 1 && ms[0].Spec.Traffic.Weights["v2"] == 80
	}); err != nil {
		t.Fatal(err)
	}
	acked, total := cp.Tracker().WaitForAck(ctx, fmt.Sprint(wr.Revision))
	if len(acked) != 2 || len(total) != 2 {
		t.Fatalf("WaitForAck %d: acked %v of %v", wr.Revision, acked, total)
	}

	// The next version is NACKed by proxy-1.
	rejectVersion <- fmt.Sprint(wr.Revision + 1)
	r = cptest.Call(t, cp, "PUT", "/v1/models/rec/weights", cptest.EditorToken, api.WeightsRequest{Weights: map[string]int{"v1": 1, "v2": 99}})
	var bad api.ModelResponse
	r.Decode(t, &bad)
	res := cp.WaitApplied(ctx, bad.Revision)
	if fmt.Sprint(res.Nacked) != "[proxy-1]" || fmt.Sprint(res.Acked) != "[proxy-2]" || res.Total != 2 {
		t.Fatalf("after NACK: %+v", res)
	}
	var px struct {
		SnapshotVersion string
		Proxies         []api.ProxyStatus
	}
	cptest.Call(t, cp, "GET", "/v1/proxies", cptest.ViewerToken, nil).Decode(t, &px)
	if len(px.Proxies) != 2 || px.SnapshotVersion != fmt.Sprint(bad.Revision) {
		t.Fatalf("proxies %+v", px)
	}
	p1 := px.Proxies[0]
	if p1.Node != "proxy-1" || p1.NackedVersion != fmt.Sprint(bad.Revision) || !strings.Contains(p1.NackReason, "test rejects this version") ||
		p1.Types[resource.ClusterType].AckedVersion != fmt.Sprint(wr.Revision) || p1.AckedVersion != fmt.Sprint(wr.Revision) {
		t.Fatalf("proxy-1 status %+v", p1)
	}
	if px.Proxies[1].AckedVersion != fmt.Sprint(bad.Revision) {
		t.Fatalf("proxy-2 status %+v", px.Proxies[1])
	}
	clustersAfterNack := client.Count(resource.ClusterType)

	// Rollback, waiting for ACKs: both proxies apply it.
	r = cptest.Call(t, cp, "POST", "/v1/models/rec/rollback", cptest.OperatorToken, api.RollbackRequest{WaitForAck: api.Duration(10 * time.Second)})
	var rb api.ModelResponse
	r.Decode(t, &rb)
	if r.Code != 200 || rb.Proxies == nil || fmt.Sprint(rb.Proxies.Acked) != "[proxy-1 proxy-2]" || rb.Model.Spec.Traffic.Weights["v2"] != 80 {
		t.Fatalf("rollback: %d %s", r.Code, r.Body)
	}
	if _, _, err := client.WaitFor(ctx, func(v string, ms []api.Model) bool { return v == fmt.Sprint(rb.Revision) }); err != nil {
		t.Fatal(err)
	}
	// No resend loop after the NACK: one more cluster response (the
	// rollback) since then.
	if n := client.Count(resource.ClusterType); n != clustersAfterNack+1 {
		t.Fatalf("cluster responses after NACK: %d, want %d", n, clustersAfterNack+1)
	}
	var px2 struct{ Proxies []api.ProxyStatus }
	cptest.Call(t, cp, "GET", "/v1/proxies", cptest.ViewerToken, nil).Decode(t, &px2)
	if px2.Proxies[0].NackedVersion != "" {
		t.Fatalf("NACK not cleared by a later ACK: %+v", px2.Proxies[0])
	}

	// A deleted model disappears from the proxy's config.
	cptest.Call(t, cp, "DELETE", "/v1/models/rec", cptest.OperatorToken, nil)
	if _, _, err := client.WaitFor(ctx, func(v string, ms []api.Model) bool { return len(ms) == 0 }); err != nil {
		t.Fatal(err)
	}
	other.Close()
	for tr := cp.Tracker(); ; {
		ch := tr.Changed()
		if tr.Connected() == 1 {
			break
		}
		select {
		case <-ch:
		case <-ctx.Done():
			t.Fatalf("proxy-2's stream still counted: %+v", tr.Proxies())
		}
	}
	if _, total := cp.Tracker().WaitForAck(ctx, "0"); fmt.Sprint(total) != "[proxy-1]" {
		t.Fatalf("after proxy-2 left: %v", total)
	}
}

// BenchmarkTranslate100Models measures the pure translation of 100 models
// with 3 versions each into a consistent snapshot.
func BenchmarkTranslate100Models(b *testing.B) {
	models := make([]api.Model, 100)
	for i := range models {
		m := cptest.Doc(fmt.Sprintf("model-%03d", i), 80, 20)
		m.Spec.Versions = append(m.Spec.Versions, api.Version{Name: "v3", Endpoints: []string{"127.0.0.1:8003", "127.0.0.1:8004"}})
		if err := api.Normalize(&m); err != nil {
			b.Fatal(err)
		}
		models[i] = m
	}
	var opts xdsconv.Options
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := opts.Snapshot(models, "1"); err != nil {
			b.Fatal(err)
		}
	}
}
