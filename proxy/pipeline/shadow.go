package pipeline

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"time"

	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/switchyard-dev/switchyard/api"
	"github.com/switchyard-dev/switchyard/oip"
	pb "github.com/switchyard-dev/switchyard/oip/inferencepb"
	"github.com/switchyard-dev/switchyard/proxy/upstream"
	"github.com/switchyard-dev/switchyard/shadow"
	"github.com/switchyard-dev/switchyard/shadow/agent"
)

// Shadow mirroring (spec.shadow). The request path does two cheap things
// for a sampled request: the pipeline's capture step copies the request
// and the primary's answer (bytes, no decoding) into a payload after the
// primary answered; its handOff, once the answer is written, offers the
// job to the model's shadow.Mirror (a non-blocking channel send; a full
// queue drops and counts). Decoding, the shadow call, the comparison, the
// metrics and the record file all happen in the mirror's fixed workers.
// With FeaturesConfig.ShadowProcess = ShadowAgent (the default) the
// front-end hands the payload to the shadow agent instead (shadowagent.go,
// package shadow/agent), a low-priority child process whose own features
// run this same code.
//
// The shadow call goes through the proxy's upstream pools (HTTP keep-alive
// pool or gRPC connection of the shadow version's endpoints) with the
// header / metadata x-switchyard-shadow: true, bypassing the version's
// circuit breaker, retries, outlier ejection, the prediction cache and the
// fallback chain: shadow traffic never changes what clients get.
//
// Noise floor (spec.shadow.noiseFloorPercent): that share of the mirrored
// requests is also sent to the primary version a second time (kind
// noise_floor), so disagreement the primary has with itself is measured
// and reported apart (Report.NoiseFloor).

// mirrorState is one model's mirror for one shadow configuration.
type mirrorState struct {
	model, target string
	m             *shadow.Mirror
	sink          *recordSink
	sampler       shadow.Sampler
	noise         float64 // percent of mirrored requests also sent to the primary
	// agent, in agent mode, takes the captured mirrors (m and sink are nil:
	// the agent process runs the mirror); recordPath is its record file.
	agent      *agent.Client
	recordPath string
}

func (ms *mirrorState) sinkPath() string {
	if ms.agent != nil {
		return ms.recordPath
	}
	if ms.sink == nil {
		return ""
	}
	return ms.sink.path
}

// queueLen is the mirror's queue (in agent mode: the mirrors in the
// proxy's hand-off buffer, all models together).
func (ms *mirrorState) queueLen() int {
	if ms.agent != nil {
		return ms.agent.Buffered()
	}
	return ms.m.QueueLen()
}

func shadowSig(model string, sh *api.Shadow) string {
	b, _ := json.Marshal(sh)
	return model + "|" + string(b)
}

// mirrorLocked returns the mirror for the route's shadow configuration,
// starting one if the configuration is new.
func (f *features) mirrorLocked(r *Route, sh *api.Shadow) (*mirrorState, error) {
	if r.Variant(sh.Version) == nil {
		return nil, fmt.Errorf("shadow version %q is not a version of the model", sh.Version)
	}
	sig := shadowSig(r.Name, sh)
	if ms := f.mirrors[sig]; ms != nil {
		return ms, nil
	}
	mode, err := shadow.ParseMode(sh.Compare.Mode)
	if err != nil {
		return nil, err
	}
	sampling := shadow.SampleRandom
	if sh.Sampling == api.SamplingSticky {
		sampling = shadow.SampleSticky
	}
	ms := &mirrorState{model: r.Name, target: sh.Version, noise: sh.NoiseFloorPercent,
		sampler: shadow.Sampler{Percent: sh.Percent, Mode: sampling}}
	if f.agent != nil {
		// The agent builds the mirror from the same configuration
		// (agentModels, sent by applied); the proxy only samples and hands over.
		ms.agent, ms.recordPath = f.agent, agentRecordPath(f.shadowDir, r.Name)
		f.mirrors[sig] = ms
		return ms, nil
	}
	cfg := shadow.MirrorConfig{
		QueueSize: sh.QueueSize,
		Workers:   sh.Workers,
		Timeout:   sh.Timeout.D(),
		Compare: shadow.Config{
			Rule:    shadow.Rule{Mode: mode, K: sh.Compare.K, AbsTol: sh.Compare.AbsTol, RelTol: sh.Compare.RelTol},
			Outputs: sh.Compare.Outputs,
		},
		RecordAgreements: f.cfg.ShadowRecordAgreements,
		RingSize:         f.cfg.ShadowRingSize,
		OnCompared:       f.onCompared,
	}
	if b := sh.Batch; b != nil {
		cfg.Batch = shadow.BatchConfig{MaxRows: b.MaxRows, MaxDelay: b.MaxDelay.D()}
		cfg.BatchCall = f.callShadowBatch
	}
	var sink shadow.RecordSink
	if f.shadowDir != "" {
		s, err := f.acquireSinkLocked(r.Name)
		if err != nil {
			f.log.Error("shadow records not written", "model", r.Name, "error", err)
		} else {
			ms.sink, sink = s, s
		}
	}
	ms.m = shadow.NewMirror(cfg, f.callShadow, sink, f.shm, f.log.With("model", r.Name))
	f.mirrors[sig] = ms
	return ms, nil
}

// onCompared feeds the canary's shadow-disagreement gate (the proxy's
// stats recorder, when it has one).
func (f *features) onCompared(j *shadow.Job, c *shadow.Comparison) {
	if j.Kind != shadow.KindShadow {
		return
	}
	if f.onShadow != nil { // the shadow agent: sent back to the proxy
		f.onShadow(j.Model, j.TargetVersion, !c.Agree)
		return
	}
	if rec, ok := any(f.p).(interface {
		RecordShadow(model, version string, disagreed bool)
	}); ok {
		rec.RecordShadow(j.Model, j.TargetVersion, !c.Agree)
	}
}

// recordSink is a model's record file, shared by the mirrors of that model
// (an old one draining while a new one starts) and closed with the last.
type recordSink struct {
	path string
	w    *shadow.RotatingWriter
	refs int

	mu        sync.Mutex
	lastFlush time.Time
}

// recordFlushEvery bounds how long a written record may sit in the file's
// buffer (flushed by the next write after it, by reports, and on close).
const recordFlushEvery = 200 * time.Millisecond

func (s *recordSink) Write(r shadow.Record) error {
	err := s.w.Write(r)
	s.mu.Lock()
	now := time.Now()
	flush := now.Sub(s.lastFlush) >= recordFlushEvery
	if flush {
		s.lastFlush = now
	}
	s.mu.Unlock()
	if flush {
		err = errors.Join(err, s.w.Flush())
	}
	return err
}

func (f *features) acquireSinkLocked(model string) (*recordSink, error) {
	if s := f.sinks[model]; s != nil {
		s.refs++
		return s, nil
	}
	path := filepath.Join(f.shadowDir, model+".jsonl")
	w, err := shadow.NewRotatingWriter(path, f.cfg.ShadowRecordMaxBytes, f.cfg.ShadowRecordKeep)
	if err != nil {
		return nil, err
	}
	s := &recordSink{path: path, w: w, refs: 1}
	f.sinks[model] = s
	return s, nil
}

func (f *features) releaseSinkLocked(s *recordSink) error {
	s.refs--
	if s.refs > 0 {
		return s.w.Flush()
	}
	for m, x := range f.sinks {
		if x == s {
			delete(f.sinks, m)
		}
	}
	return s.w.Close()
}

// capture is the pipeline's step 3: for a sampled request, a copy of the
// request and of the primary's own outcome (err is the primary's error),
// handed to the mirror once the answer is written (Pipeline.HandOff).
func (rf *routePolicies) capture(x *Exchange, v *Variant, res *Result, err error) {
	ms := rf.mirror
	if !ms.sampler.Sample(x.StickyKey, rand.Float64()) {
		return
	}
	tv := rf.route.Variant(ms.target)
	if tv == nil || tv == v {
		return // the request was routed to the shadow version itself
	}
	// A request the primary turned down as bad is not the model's answer:
	// not mirrored.
	if err != nil {
		if c := oip.CodeOf(err); c == oip.InvalidArgument || c == oip.NotFound || c == oip.TooLarge {
			return
		}
	} else if res.PB == nil && res.Status >= 400 && res.Status < 500 {
		return
	}
	pl := &shadowPayload{target: tv, primary: v, start: x.Start, latency: time.Since(x.Start), primaryErr: err}
	if x.PBReq != nil {
		pl.pbReq = x.PBReq // not reused by the gRPC front-end
	} else {
		// The exchange's buffer is pooled: copied into a pooled buffer of
		// the mirror's own, given back once the worker decoded it.
		pl.bodyBuf = copyShadowBuf(x.Body)
		pl.headerLen = x.HeaderLen
	}
	if err == nil {
		switch {
		case res.PB != nil:
			pl.respPB = res.PB
		case res.parsed != nil && len(res.Body) == 0:
			pl.resp = res.parsed // a decoded answer (not aliasing pooled bytes)
		default:
			pl.respBuf = copyShadowBuf(res.Body)
			pl.respStatus, pl.respHeaderLen = res.Status, res.HeaderLen
		}
	}
	pl.pending = shadowPending{ms: ms, pl: pl, noise: ms.noise > 0 && rand.Float64()*100 < ms.noise}
	x.captured = &pl.pending
}

// shadowPending is a captured job waiting for the answer to be written.
type shadowPending struct {
	ms    *mirrorState
	pl    *shadowPayload
	noise bool
}

func (p *shadowPending) enqueue() {
	pl := p.pl
	if a := p.ms.agent; a != nil {
		pl.offerAgent(a)
		return
	}
	pl.job = shadow.Job{Kind: shadow.KindShadow, Model: p.ms.model, PrimaryVersion: pl.primary.Name,
		TargetVersion: pl.target.Name, Time: pl.start, Payload: pl}
	queued := p.ms.m.Enqueue(&pl.job)
	if p.noise {
		queued = p.ms.m.Enqueue(&shadow.Job{Kind: shadow.KindNoiseFloor, Model: p.ms.model, PrimaryVersion: pl.primary.Name,
			TargetVersion: pl.primary.Name, Time: pl.start, Payload: pl}) || queued
	}
	if !queued {
		pl.releaseBufs() // dropped: no worker will decode them
	}
}

// shadowPayload is a mirrored request as the proxy got it, and the
// primary's outcome, decoded once (in a worker) when first prepared. It
// also holds the pending capture and the shadow job (one allocation per
// mirror).
// The copied bytes live in pooled buffers that go back to the pool once
// decoded: what the worker, the records and the ring keep (the decoded
// request and answers) never aliases them.
type shadowPayload struct {
	target, primary *Variant
	start           time.Time
	latency         time.Duration

	bodyBuf   *[]byte // REST request (nil for gRPC)
	headerLen int
	pbReq     *pb.ModelInferRequest
	pbBuf     *[]byte // in the agent: the gRPC request, marshalled

	primaryErr    error
	respPB        *pb.ModelInferResponse
	resp          *oip.InferResponse
	respBuf       *[]byte // the primary's REST answer when not yet decoded
	respPBBuf     *[]byte // in the agent: the primary's gRPC answer, marshalled
	respStatus    int
	respHeaderLen int

	pending shadowPending
	job     shadow.Job // the shadow job (a noise-floor job is allocated apart)

	once    sync.Once
	req     *oip.InferRequest
	reqErr  error
	respErr error
}

var _ shadow.Preparer = (*shadowPayload)(nil)

// Prepare implements shadow.Preparer: decoding happens in the worker.
func (pl *shadowPayload) Prepare(j *shadow.Job) error {
	pl.once.Do(pl.decode)
	if pl.reqErr != nil {
		return pl.reqErr
	}
	j.Request, j.RequestID = pl.req, pl.req.ID
	j.Primary = shadow.Result{Response: pl.resp, Err: pl.respErr, Latency: pl.latency}
	return nil
}

func (pl *shadowPayload) decode() {
	defer pl.releaseBufs()
	if pl.pbBuf != nil {
		req := &pb.ModelInferRequest{}
		if err := proto.Unmarshal(*pl.pbBuf, req); err != nil {
			pl.reqErr = fmt.Errorf("decode mirrored gRPC request: %w", err)
			return
		}
		pl.pbReq = req
	}
	if pl.respPBBuf != nil && pl.primaryErr == nil {
		resp := &pb.ModelInferResponse{}
		if err := proto.Unmarshal(*pl.respPBBuf, resp); err != nil {
			pl.respErr = fmt.Errorf("decode the primary's gRPC answer: %w", err)
		} else {
			pl.respPB = resp
		}
	}
	if pl.pbReq != nil {
		pl.req, pl.reqErr = oip.InferRequestFromProto(pl.pbReq)
	} else {
		pl.req, pl.reqErr = oip.DecodeInferRequest(*pl.bodyBuf, pl.headerLen)
	}
	if pl.reqErr != nil {
		pl.reqErr = fmt.Errorf("decode mirrored request: %w", pl.reqErr)
		return
	}
	switch {
	case pl.primaryErr != nil:
		pl.respErr = pl.primaryErr
	case pl.respErr != nil:
	case pl.resp != nil:
	case pl.respPB != nil:
		pl.resp, pl.respErr = oip.InferResponseFromProto(pl.respPB)
	case pl.respStatus == 200:
		pl.resp, pl.respErr = oip.DecodeInferResponse(*pl.respBuf, pl.respHeaderLen)
	default:
		pl.respErr = restError(pl.respStatus, *pl.respBuf)
	}
}

// releaseBufs gives the copied bytes back to the pool.
func (pl *shadowPayload) releaseBufs() {
	putShadowBuf(pl.bodyBuf)
	putShadowBuf(pl.respBuf)
	putShadowBuf(pl.pbBuf)
	putShadowBuf(pl.respPBBuf)
	pl.bodyBuf, pl.respBuf, pl.pbBuf, pl.respPBBuf = nil, nil, nil, nil
}

// restError turns a REST error answer into an error; a backend's 5xx that
// names NaN/Inf (JSON cannot carry them) wraps shadow.ErrNaNOutput.
func restError(status int, body []byte) error {
	var e struct {
		Error string `json:"error"`
	}
	msg := string(body)
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		msg = e.Error
	}
	if status >= 500 && bytes.Contains(body, nanMessageBytes) {
		return fmt.Errorf("%w: %s", shadow.ErrNaNOutput, msg)
	}
	return fmt.Errorf("status %d: %s", status, msg)
}

// nanMessageBytes is how an OIP backend names a NaN/Inf output it could not
// write as JSON.
var nanMessageBytes = []byte("NaN")

// shadowHeader marks mirrored REST calls.
var shadowHeader = []string{"X-Switchyard-Shadow: true"}

// shadowBufs holds the mirror's byte buffers: the copies of mirrored
// requests and primary answers, the shadow calls' request bodies and
// answers. Nothing decoded from them aliases them (oip's decoders copy).
var shadowBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// maxPooledShadowBuf bounds the buffers kept in shadowBufs, so one huge
// request does not stay in memory.
const maxPooledShadowBuf = 1 << 20

// copyShadowBuf copies b into a pooled buffer.
func copyShadowBuf(b []byte) *[]byte {
	bp := shadowBufs.Get().(*[]byte)
	*bp = append((*bp)[:0], b...)
	return bp
}

func putShadowBuf(bp *[]byte) {
	if bp == nil || cap(*bp) > maxPooledShadowBuf {
		return
	}
	*bp = (*bp)[:0]
	shadowBufs.Put(bp)
}

// binaryOutputParams are the request parameters of a shadow call whose
// request has none: every output in binary. Read only.
var binaryOutputParams = map[string]any{oip.ParamBinaryDataOutput: true}

// callShadow is the mirror's CallFunc: one call of the job's target
// version through the proxy's upstream pools, marked as shadow traffic.
func (f *features) callShadow(ctx context.Context, j *shadow.Job) (*oip.InferResponse, error) {
	pl := j.Payload.(*shadowPayload)
	return f.callTarget(ctx, pl.targetOf(j), j.Request, pl.pbReq)
}

// callShadowBatch is the mirror's BatchCallFunc: the jobs' requests joined
// along the rows, one call, the answer split back. An answer that cannot
// be split is an InvalidArgument error (the mirror then calls one by one).
func (f *features) callShadowBatch(ctx context.Context, jobs []*shadow.Job) ([]*oip.InferResponse, error) {
	reqs, rows := make([]*oip.InferRequest, len(jobs)), make([]int64, len(jobs))
	for i, j := range jobs {
		reqs[i], rows[i] = j.Request, shadow.Rows(j.Request)
	}
	joined, err := shadow.JoinRequests(reqs)
	if err != nil {
		return nil, oip.Errorf(oip.InvalidArgument, "%v", err)
	}
	resp, err := f.callTarget(ctx, jobs[0].Payload.(*shadowPayload).targetOf(jobs[0]), joined, nil)
	if err != nil {
		return nil, err
	}
	parts, err := shadow.SplitResponse(resp, rows)
	if err != nil {
		return nil, oip.Errorf(oip.InvalidArgument, "%v", err)
	}
	return parts, nil
}

// targetOf is the version a job calls: the shadow, or the primary again
// for a noise-floor job.
func (pl *shadowPayload) targetOf(j *shadow.Job) *Variant {
	if j.Kind == shadow.KindNoiseFloor {
		return pl.primary
	}
	return pl.target
}

// callTarget calls tv once with req, marked as shadow traffic. pbReq, if
// set, is the gRPC request as received (forwarded as is to a gRPC target).
func (f *features) callTarget(ctx context.Context, tv *Variant, r *oip.InferRequest, pbReq *pb.ModelInferRequest) (*oip.InferResponse, error) {
	e := upstream.PickP2C(tv.Endpoints, rand.Uint64(), time.Now().UnixNano(), nil)
	e.Begin()
	defer e.End()
	if e.HTTP != nil {
		deadline, _ := ctx.Deadline()
		// The mirrored request goes out in the binary tensor form and asks
		// for binary outputs: the same tensors as the client sent, without
		// formatting and parsing a hundred floats as text on either side.
		bin := *r // shallow copy: r is shared, read-only
		if len(r.Parameters) == 0 {
			bin.Parameters = binaryOutputParams
		} else {
			bin = *r.WithBinaryOutput()
		}
		bp := shadowBufs.Get().(*[]byte)
		defer putShadowBuf(bp)
		body, hl, err := oip.AppendInferRequest((*bp)[:0], &bin, true)
		if err != nil {
			return nil, err
		}
		*bp = body
		req := upstream.Request{Path: tv.inferPath, ContentType: "application/json", Body: body, Extra: shadowHeader}
		if hl < len(body) {
			req.ContentType, req.HeaderLen = "application/octet-stream", hl
		}
		// The answer is read into a pooled buffer: decoding copies the
		// tensors out (the ring's records keep them, not the buffer).
		rp := shadowBufs.Get().(*[]byte)
		defer putShadowBuf(rp)
		resp := upstream.Response{Body: (*rp)[:0]}
		err = e.HTTP.Do(deadline, &req, &resp)
		*rp = resp.Body
		if err != nil {
			return nil, err
		}
		if resp.Status != 200 {
			return nil, restError(resp.Status, resp.Body)
		}
		return oip.DecodeInferResponse(resp.Body, resp.HeaderLen)
	}
	var req *pb.ModelInferRequest
	if pbReq != nil {
		o := pbReq // shared, read-only: a new message with the same parts
		req = &pb.ModelInferRequest{Id: o.Id, Parameters: o.Parameters, Inputs: o.Inputs, Outputs: o.Outputs, RawInputContents: o.RawInputContents}
	} else {
		req = oip.InferRequestToProto(r)
	}
	req.ModelName, req.ModelVersion = tv.BackendModel, tv.BackendVersion
	resp, err := e.GRPC.ModelInfer(metadata.AppendToOutgoingContext(ctx, HeaderShadow, "true"), req)
	if err != nil {
		return nil, oip.ErrorFromGRPC(err)
	}
	return oip.InferResponseFromProto(resp)
}

// shadowRecords is the ring's records of a model's mirror in the window
// before now (every compared pair, weight 1).
func (f *features) shadowRecords(model string, window time.Duration) (ShadowRecordsResponse, error) {
	ms, err := f.liveMirror(model)
	if err != nil {
		return ShadowRecordsResponse{}, err
	}
	now := time.Now()
	from := now.Add(-window)
	recs := ms.m.Ring().Records()
	out := recs[:0]
	for _, rec := range recs {
		if !rec.Time.Before(from) && rec.Time.Before(now) {
			out = append(out, rec)
		}
	}
	return ShadowRecordsResponse{Model: model, ShadowVersion: ms.target, From: from, To: now, Records: out}, nil
}
