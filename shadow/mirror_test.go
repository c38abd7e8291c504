package shadow

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/switchyard-dev/switchyard/oip"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// model is a tiny scoring "model" served over HTTP on 127.0.0.1: the body is
// the FP32 input, the answer the FP32 scores.
type model func(x []float32) []float32

func serve(t *testing.T, f model, hold <-chan struct{}) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hold != nil {
			select {
			case <-hold:
			case <-r.Context().Done():
				return
			}
		}
		b, _ := io.ReadAll(r.Body)
		out := f(oip.Values[float32](b))
		w.Write(oip.NewTensor("s", nil, out).Raw)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// httpCall is the CallFunc: a real HTTP round trip to the version's server.
func httpCall(client *http.Client, urls map[string]string) CallFunc {
	return func(ctx context.Context, j *Job) (*oip.InferResponse, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, urls[j.TargetVersion], bytes.NewReader(j.Request.Inputs[0].Raw))
		resp, err := client.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return nil, err
		}
		return &oip.InferResponse{Outputs: []oip.Tensor{{Name: "scores", Datatype: oip.FP32, Shape: []int64{1, int64(len(b) / 4)}, Raw: b}}}, nil
	}
}

func input(x ...float32) *oip.InferRequest {
	return &oip.InferRequest{Inputs: []oip.Tensor{oip.NewTensor("x", []int64{1, int64(len(x))}, x)}}
}

func identity(x []float32) []float32 { return x }

// candidate agrees with identity except when x[0] < 0 (reversed scores) and
// answers NaN when x[0] > 100.
func candidate(x []float32) []float32 {
	out := append([]float32(nil), x...)
	switch {
	case x[0] < 0:
		for i := range out {
			out[i] = -out[i]
		}
	case x[0] > 100:
		out[1] = float32(math.NaN())
	}
	return out
}

func TestMirrorComparesOverRealSockets(t *testing.T) {
	primary := serve(t, identity, nil)
	shadow := serve(t, candidate, nil)
	client := &http.Client{}
	defer client.CloseIdleConnections()
	call := httpCall(client, map[string]string{"v1": primary.URL, "v2": shadow.URL})

	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	path := filepath.Join(t.TempDir(), "shadow.jsonl")
	w, err := NewRotatingWriter(path, 1<<20, 2)
	if err != nil {
		t.Fatal(err)
	}
	mr := NewMirror(MirrorConfig{Workers: 3, QueueSize: 64, Timeout: 5 * time.Second,
		Compare: Config{Rule: Rule{Mode: TopK, K: 3}}, RecordAgreements: 1e-12}, call, w, m, nil)

	t0 := time.Now()
	const n = 40
	wantDisagree, wantNaN := 0, 0
	for i := 0; i < n; i++ {
		x := []float32{1, 0.5, 0.25, 0.125, float32(i) / 100}
		switch i % 8 {
		case 0:
			x[0] = -1
			wantDisagree++
		case 1:
			x[0] = 200
			wantDisagree++
			wantNaN++
		}
		req := input(x...)
		// the primary's answer, as the proxy would have it
		job := &Job{RequestID: fmt.Sprint(i), Model: "rec", PrimaryVersion: "v1", TargetVersion: "v2", Request: req, Time: t0}
		job.TargetVersion = "v1"
		pr, err := call(context.Background(), job)
		if err != nil {
			t.Fatal(err)
		}
		job.TargetVersion = "v2"
		job.Primary = Result{Response: pr, Latency: time.Millisecond}
		if !mr.Enqueue(job) {
			t.Fatalf("job %d dropped with an empty queue", i)
		}
		// noise floor: a second call of the primary
		if i%4 == 0 {
			nf := *job
			nf.Kind, nf.TargetVersion = KindNoiseFloor, "v1"
			mr.Enqueue(&nf)
		}
	}
	if err := mr.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	l := []string{"rec", "v2", KindShadow}
	if got := testutil.ToFloat64(m.compared.WithLabelValues(l...)); got != n {
		t.Fatalf("compared %v, want %d", got, n)
	}
	if got := testutil.ToFloat64(m.agreement.WithLabelValues("rec", "v2", KindShadow, "topk", "disagree")); got != float64(wantDisagree) {
		t.Errorf("disagreements %v, want %d", got, wantDisagree)
	}
	if got := testutil.ToFloat64(m.nan.WithLabelValues("rec", "v2", KindShadow, "shadow")); got != float64(wantNaN) {
		t.Errorf("shadow NaN %v, want %d", got, wantNaN)
	}
	if got := testutil.CollectAndCount(m.latency); got != 4 {
		t.Errorf("latency series %d, want primary and shadow for both kinds", got)
	}

	rep := mr.Ring().Summary(time.Time{}, time.Time{}, 3)
	if rep.Shadow.Compared != n || rep.Shadow.Agreed != float64(n-wantDisagree) || rep.Shadow.ShadowNaN != float64(wantNaN) {
		t.Errorf("ring report %+v", rep.Shadow)
	}
	if rep.NoiseFloor.Compared != n/4 || rep.NoiseFloor.AgreementRate != 1 {
		t.Errorf("noise floor %+v", rep.NoiseFloor)
	}
	if len(rep.Worst) != 3 || !rep.Worst[0].Shadow.NaN {
		t.Errorf("worst %+v", rep.Worst)
	}

	// the file: every disagreement, (practically) no agreement
	recs, _, err := ReadRecords(path, time.Time{}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != wantDisagree {
		t.Fatalf("records written %d, want %d disagreements", len(recs), wantDisagree)
	}
	for _, r := range recs {
		if r.Agree || r.Model != "rec" || r.PrimaryVersion != "v1" || r.ShadowVersion != "v2" || len(r.InputDigest) != 64 ||
			len(r.Primary.Outputs) != 1 || len(r.Shadow.Outputs) != 1 || len(r.Diff) != 1 || r.Diff[0].K != 3 {
			t.Fatalf("record %+v", r)
		}
	}
	if got := testutil.ToFloat64(m.records.WithLabelValues("rec", "written")); got != float64(wantDisagree) {
		t.Errorf("records metric %v", got)
	}
}

func TestMirrorFullQueueDrops(t *testing.T) {
	hold := make(chan struct{})
	shadow := serve(t, identity, hold)
	client := &http.Client{}
	defer client.CloseIdleConnections()
	m := NewMetrics(prometheus.NewRegistry())
	var calls atomic.Int32
	base := httpCall(client, map[string]string{"v2": shadow.URL})
	mr := NewMirror(MirrorConfig{Workers: 1, QueueSize: 2, Timeout: 10 * time.Second}, func(ctx context.Context, j *Job) (*oip.InferResponse, error) {
		calls.Add(1)
		return base(ctx, j)
	}, nil, m, nil)
	accepted, dropped := 0, 0
	for i := 0; i < 10; i++ {
		j := &Job{Model: "rec", TargetVersion: "v2", Request: input(1, 2), Primary: Result{Response: &oip.InferResponse{}}}
		if mr.Enqueue(j) {
			accepted++
		} else {
			dropped++
		}
	}
	if accepted < 2 || accepted > 3 || dropped != 10-accepted {
		t.Fatalf("accepted %d dropped %d", accepted, dropped)
	}
	if got := testutil.ToFloat64(m.dropped.WithLabelValues("rec", "v2", KindShadow, "queue_full")); got != float64(dropped) {
		t.Errorf("dropped metric %v, want %d", got, dropped)
	}
	close(hold)
	if err := mr.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if int(calls.Load()) != accepted {
		t.Errorf("calls %d, want %d", calls.Load(), accepted)
	}
	if mr.Enqueue(&Job{Model: "rec", TargetVersion: "v2"}) {
		t.Error("closed mirror accepted a job")
	}
	if got := testutil.ToFloat64(m.dropped.WithLabelValues("rec", "v2", KindShadow, "closed")); got != 1 {
		t.Errorf("closed drops %v", got)
	}
}

func TestMirrorSlowAndDeadShadow(t *testing.T) {
	hold := make(chan struct{})
	defer close(hold)
	slow := serve(t, identity, hold)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close()
	client := &http.Client{}
	defer client.CloseIdleConnections()
	m := NewMetrics(prometheus.NewRegistry())
	mr := NewMirror(MirrorConfig{Workers: 2, Timeout: 50 * time.Millisecond}, httpCall(client, map[string]string{"slow": slow.URL, "dead": dead}), nil, m, nil)
	ok := Result{Response: &oip.InferResponse{Outputs: []oip.Tensor{oip.NewTensor("scores", []int64{1, 2}, []float32{1, 2})}}}
	mr.Enqueue(&Job{Model: "rec", TargetVersion: "slow", Request: input(1, 2), Primary: ok})
	mr.Enqueue(&Job{Model: "rec", TargetVersion: "dead", Request: input(1, 2), Primary: ok})
	if err := mr.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"slow", "dead"} {
		if got := testutil.ToFloat64(m.errors.WithLabelValues("rec", v, KindShadow, "shadow")); got != 1 {
			t.Errorf("%s: shadow errors %v", v, got)
		}
	}
	var slowRec Record
	for _, r := range mr.Ring().Records() {
		if r.ShadowVersion == "slow" {
			slowRec = r
		}
	}
	if slowRec.Agree || slowRec.Shadow.Error != "shadow call timed out after 50ms" {
		t.Errorf("slow record %+v", slowRec)
	}
}

func TestMirrorCloseDeadline(t *testing.T) {
	hold := make(chan struct{})
	defer close(hold)
	slow := serve(t, identity, hold)
	client := &http.Client{}
	defer client.CloseIdleConnections()
	m := NewMetrics(prometheus.NewRegistry())
	mr := NewMirror(MirrorConfig{Workers: 1, Timeout: time.Minute}, httpCall(client, map[string]string{"v2": slow.URL}), nil, m, nil)
	for i := 0; i < 3; i++ {
		mr.Enqueue(&Job{Model: "rec", TargetVersion: "v2", Request: input(1), Primary: Result{Response: &oip.InferResponse{}}})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := mr.Close(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close = %v, want deadline exceeded", err)
	}
	// the in-flight call was cancelled and compared as a failure; the rest dropped
	dropped := testutil.ToFloat64(m.dropped.WithLabelValues("rec", "v2", KindShadow, "closed"))
	compared := testutil.ToFloat64(m.compared.WithLabelValues("rec", "v2", KindShadow))
	if dropped+compared != 3 || compared > 1 {
		t.Errorf("dropped on close %v, compared %v; want the 3 jobs accounted, at most 1 compared", dropped, compared)
	}
}

// rowServer serves f row by row over [rows, width] FP32 bodies and counts
// its calls; with maxRows > 0 it refuses bodies of more rows with a 400.
func rowServer(t *testing.T, f model, width, maxRows int, calls *atomic.Int64) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		b, _ := io.ReadAll(r.Body)
		x := oip.Values[float32](b)
		if maxRows > 0 && len(x)/width > maxRows {
			http.Error(w, "batch too large", http.StatusBadRequest)
			return
		}
		var out []float32
		for i := 0; i+width <= len(x); i += width {
			out = append(out, f(x[i:i+width])...)
		}
		w.Write(oip.NewTensor("s", nil, out).Raw)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// rowCall is the single CallFunc and batchCall the BatchCallFunc for a
// rowServer: real HTTP round trips, the batch joined and split with
// JoinRequests / SplitResponse.
func rowCall(client *http.Client, url string, width int) (CallFunc, BatchCallFunc) {
	post := func(ctx context.Context, r *oip.InferRequest) (*oip.InferResponse, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(r.Inputs[0].Raw))
		resp, err := client.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode == http.StatusBadRequest {
			return nil, oip.Errorf(oip.InvalidArgument, "%s", b)
		}
		return &oip.InferResponse{Outputs: []oip.Tensor{{Name: "scores", Datatype: oip.FP32,
			Shape: []int64{int64(len(b) / 4 / width), int64(width)}, Raw: b}}}, nil
	}
	one := func(ctx context.Context, j *Job) (*oip.InferResponse, error) { return post(ctx, j.Request) }
	batch := func(ctx context.Context, jobs []*Job) ([]*oip.InferResponse, error) {
		reqs, rows := make([]*oip.InferRequest, len(jobs)), make([]int64, len(jobs))
		for i, j := range jobs {
			reqs[i], rows[i] = j.Request, Rows(j.Request)
		}
		joined, err := JoinRequests(reqs)
		if err != nil {
			return nil, err
		}
		resp, err := post(ctx, joined)
		if err != nil {
			return nil, err
		}
		return SplitResponse(resp, rows)
	}
	return one, batch
}

// TestMirrorBatchesCalls: with Batch set, queued mirrors are joined into
// calls of at most MaxRows rows, and every pair is compared exactly as
// single calls compare it (the same disagreements and NaN counts); a
// target that refuses joined requests gets single calls from then on.
func TestMirrorBatchesCalls(t *testing.T) {
	const width, n, maxRows = 5, 24, 8
	for _, refuse := range []bool{false, true} {
		t.Run(fmt.Sprintf("target refuses batches=%v", refuse), func(t *testing.T) {
			var calls atomic.Int64
			limit := 0
			if refuse {
				limit = 1
			}
			srv := rowServer(t, candidate, width, limit, &calls)
			client := &http.Client{}
			defer client.CloseIdleConnections()
			one, batch := rowCall(client, srv.URL, width)
			m := NewMetrics(prometheus.NewRegistry())
			mr := NewMirror(MirrorConfig{Workers: 1, QueueSize: 64, Timeout: 5 * time.Second,
				Compare:   Config{Rule: Rule{Mode: TopK, K: 3}},
				Batch:     BatchConfig{MaxRows: maxRows, MaxDelay: 2 * time.Second},
				BatchCall: batch}, one, nil, m, nil)
			wantDisagree := 0
			for i := range n {
				x := []float32{1, 0.5, 0.25, 0.125, float32(i) / 100}
				if i%3 == 0 {
					x[0] = -1 // candidate reverses the scores
					wantDisagree++
				}
				primary := &oip.InferResponse{Outputs: []oip.Tensor{oip.NewTensor("scores", []int64{1, width}, identity(x))}}
				if !mr.Enqueue(&Job{RequestID: fmt.Sprint(i), Model: "rec", PrimaryVersion: "v1", TargetVersion: "v2",
					Request: input(x...), Primary: Result{Response: primary}}) {
					t.Fatal("dropped")
				}
			}
			if err := mr.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
			if got := testutil.ToFloat64(m.compared.WithLabelValues("rec", "v2", KindShadow)); got != n {
				t.Fatalf("compared %v, want %d", got, n)
			}
			disagree := testutil.ToFloat64(m.agreement.WithLabelValues("rec", "v2", KindShadow, string(TopK), "disagree"))
			errs := testutil.ToFloat64(m.errors.WithLabelValues("rec", "v2", KindShadow, "shadow"))
			if disagree != float64(wantDisagree) || errs != 0 {
				t.Errorf("disagreements %v (want %d), shadow errors %v (want 0)", disagree, wantDisagree, errs)
			}
			if want := int64(n / maxRows); !refuse && calls.Load() != want {
				t.Errorf("%d calls for %d mirrors of one row, want %d (batches of %d)", calls.Load(), n, want, maxRows)
			}
			if want := int64(1 + n); refuse && calls.Load() != want {
				t.Errorf("%d calls, want %d: one refused batch, then one call per mirror", calls.Load(), want)
			}
		})
	}
}

// holdPrepare is a job payload whose Prepare waits until the channel is
// closed.
type holdPrepare chan struct{}

func (h holdPrepare) Prepare(*Job) error { <-h; return nil }

// A job that did not fit the last batch (another kind or target: carried
// to the worker's next round) is called even while the other worker holds
// the queue waiting for a next job; it used to wait behind that worker
// until more mirrors came, so the last pairs of a burst were never
// compared.
func TestMirrorCarriedJobIsCalled(t *testing.T) {
	arrived, hold := make(chan struct{}, 1), make(chan struct{})
	v2 := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-hold
		b, _ := io.ReadAll(r.Body)
		w.Write(b)
	}))
	defer v2.Close()
	v1 := serve(t, identity, nil)
	client := &http.Client{}
	defer client.CloseIdleConnections()
	call := httpCall(client, map[string]string{"v2": v2.URL, "v1": v1.URL})
	batchCall := func(ctx context.Context, jobs []*Job) ([]*oip.InferResponse, error) {
		out := make([]*oip.InferResponse, len(jobs))
		for i, j := range jobs {
			r, err := call(ctx, j)
			if err != nil {
				return nil, err
			}
			out[i] = r
		}
		return out, nil
	}
	m := NewMetrics(prometheus.NewRegistry())
	mr := NewMirror(MirrorConfig{Workers: 2, QueueSize: 8, Timeout: time.Minute, Compare: Config{Rule: Rule{Mode: TopK, K: 2}},
		Batch: BatchConfig{MaxRows: 8}, BatchCall: batchCall}, call, nil, m, nil)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := mr.Close(ctx); err != nil {
			t.Error(err)
		}
	})
	x := []float32{1, 0.5, 0.25}
	primary := Result{Response: &oip.InferResponse{Outputs: []oip.Tensor{oip.NewTensor("scores", []int64{1, 3}, x)}}}
	// The first job is prepared once the second is queued: the worker that
	// took it finds the second, of another kind and target, and carries it.
	queued := make(holdPrepare)
	mr.Enqueue(&Job{Model: "rec", PrimaryVersion: "v1", TargetVersion: "v2", Request: input(x...), Primary: primary, Payload: queued})
	mr.Enqueue(&Job{Kind: KindNoiseFloor, Model: "rec", PrimaryVersion: "v1", TargetVersion: "v1", Request: input(x...), Primary: primary})
	close(queued)
	// The carrying worker calls the first job (held at v2); the other one
	// takes the queue and waits there for a next job.
	<-arrived
	deadline := time.Now().Add(10 * time.Second)
	for mr.collecting.TryLock() {
		mr.collecting.Unlock()
		if time.Now().After(deadline) {
			t.Fatal("the second worker did not take the queue")
		}
		time.Sleep(time.Millisecond)
	}
	close(hold)
	compared := func(version, kind string) float64 {
		return testutil.ToFloat64(m.compared.WithLabelValues("rec", version, kind))
	}
	for compared("v2", KindShadow) != 1 || compared("v1", KindNoiseFloor) != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("compared: %v shadow, %v noise floor; want 1 and 1 (the carried job waits)", compared("v2", KindShadow), compared("v1", KindNoiseFloor))
		}
		time.Sleep(time.Millisecond)
	}
}
