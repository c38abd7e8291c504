package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/switchyard-dev/switchyard/api"
	"github.com/switchyard-dev/switchyard/oip"
	"github.com/switchyard-dev/switchyard/shadow"
	"github.com/switchyard-dev/switchyard/shadow/agent"
)

// The proxy's side of the shadow agent (FeaturesConfig.ShadowProcess =
// ShadowAgent, the default). Mirroring a request costs tens of
// microseconds of CPU (decoding the client's request and the primary's
// answer, the shadow call, the comparison, the record); inside the proxy
// that work runs at the primary path's priority and shows in its tail
// latency. With the agent the proxy only hands the captured bytes over to
// a child process of its own binary at SCHED_IDLE priority, which owns
// everything after the hand-off — its own mirrors (this package's
// in-process mirrors, in a headless Pipeline), upstream pools to the shadow
// versions, comparisons, record files, the ring behind the report — and
// sends comparison counts back for the canary's shadow-disagreement gate.
// The process supervisor, the hand-off buffer, the frame protocol and the
// agent's run loop are package shadow/agent (its doc.go describes the
// protocol); this file is what the proxy puts into it: the captured
// exchange as a wire job, the drop counts, the engine the agent runs.
//
// The agent starts lazily, with the first route that has a shadow policy:
// a proxy without shadow policies starts no child process.

// Where mirrored requests are called and compared (FeaturesConfig.ShadowProcess).
const (
	ShadowAgent  = "agent"  // in a low-priority child process, the shadow agent (the default)
	ShadowInline = "inline" // in the proxy's process (also what the agent itself runs)
)

// EnvShadowAgent is set (to "1") in the shadow agent's environment.
const EnvShadowAgent = agent.EnvVar

// Every binary that links the proxy can serve as its own shadow agent:
// started with EnvShadowAgent=1 (by a proxy's agent.Client), it runs the
// agent here, before main or the tests, and exits.
func init() {
	agent.Main(newAgentEngine)
}

// ensureAgent starts the shadow agent on the first call in agent mode
// (compile calls it for the first route with a shadow policy). Failing
// that, the mirrors run in the proxy (logged); it is not tried again. The
// configuration being applied waits for the start (the agent's first
// answer, given before the agent lowers its priority: a fraction of a
// second even with every core busy, at most 10 s), so its mirrors know
// where they run.
func (f *features) ensureAgent() {
	if !f.agentMode {
		return
	}
	f.agentOnce.Do(func() {
		c, err := agent.Start(agent.Options{
			Command: f.cfg.ShadowAgentCommand,
			Init: agent.Init{
				ShadowDir: f.shadowDir, ShadowRecordMaxBytes: f.cfg.ShadowRecordMaxBytes, ShadowRecordKeep: f.cfg.ShadowRecordKeep,
				ShadowRecordAgreements: f.cfg.ShadowRecordAgreements, ShadowRingSize: f.cfg.ShadowRingSize,
				UpstreamTLS: f.p.cfg.UpstreamTLS, Priority: f.cfg.ShadowAgentPriority,
			},
			Buffer:         f.cfg.ShadowAgentBuffer,
			RestartBackoff: f.cfg.ShadowAgentRestartBackoff,
			Logger:         f.log.With("component", "shadow-agent"),
			Registry:       f.p.cfg.Registry,
			OnDrop:         f.dropHandoff,
			OnCompared:     f.agentCompared,
		})
		if err != nil {
			f.log.Error("shadow agent not started: mirrors run in the proxy", "error", err)
			return
		}
		f.mu.Lock()
		closed := f.closed
		if !closed {
			f.agent = c
		}
		f.mu.Unlock()
		if closed {
			c.Close()
		}
	})
}

// dropHandoff counts a mirror the hand-off dropped.
func (f *features) dropHandoff(k agent.Key, reason string) {
	f.shm.Dropped(k.Model, k.Target, shadow.KindShadow, reason)
	if k.Noise {
		f.shm.Dropped(k.Model, k.Primary, shadow.KindNoiseFloor, reason)
	}
}

// agentCompared feeds the agent's comparison counts to the canary gate.
func (f *features) agentCompared(model, version string, compared, disagreed uint64) {
	for i := uint64(0); i < compared; i++ {
		f.p.RecordShadow(model, version, i < disagreed)
	}
}

// agentModels are the live models that shadow, as the agent needs them.
func agentModels(routes map[string]*Route) []api.Model {
	out := []api.Model{}
	for _, r := range routes {
		if rf := r.policies; rf == nil || rf.mirror == nil {
			continue
		}
		m := r.Model.Clone()
		m.Spec.Cache, m.Spec.Fallback, m.Spec.Canary = nil, nil, nil
		out = append(out, m)
	}
	return out
}

// offerAgent hands a captured mirror to the agent.
func (pl *shadowPayload) offerAgent(c *agent.Client) {
	ms := pl.pending.ms
	c.Offer(agent.Key{Model: ms.model, Primary: pl.primary.Name, Target: pl.target.Name, Noise: pl.pending.noise}, pl)
	pl.releaseBufs()
}

var _ agent.Exchange = (*shadowPayload)(nil)

// WireJob implements agent.Exchange: the captured request and the
// primary's outcome as bytes (protobuf marshalled into s for gRPC, a
// decoded REST answer encoded back).
func (pl *shadowPayload) WireJob(j *agent.Job, s *agent.Scratch) {
	j.Start, j.Latency = pl.start, pl.latency
	if pl.pbReq != nil {
		s.Req, _ = proto.MarshalOptions{}.MarshalAppend(s.Req[:0], pl.pbReq)
		j.GRPC, j.Request = true, s.Req
	} else if pl.bodyBuf != nil {
		j.Request, j.RequestHeaderLen = *pl.bodyBuf, pl.headerLen
	}
	switch {
	case pl.primaryErr != nil:
		j.PrimaryErr = pl.primaryErr.Error()
		if j.PrimaryErr == "" {
			j.PrimaryErr = "error"
		}
		j.PrimaryCode = int(oip.CodeOf(pl.primaryErr))
		j.PrimaryNaN = errors.Is(pl.primaryErr, shadow.ErrNaNOutput)
	case pl.respPB != nil:
		s.Resp, _ = proto.MarshalOptions{}.MarshalAppend(s.Resp[:0], pl.respPB)
		j.RespProto, j.Response, j.RespStatus = true, s.Resp, 200
	case pl.resp != nil:
		var err error
		var hl int
		s.Resp, hl, err = oip.AppendInferResponse(s.Resp[:0], pl.resp, nil)
		if err != nil {
			j.PrimaryErr, j.PrimaryCode = "primary answer: "+err.Error(), int(oip.Internal)
		} else {
			j.Response, j.RespStatus, j.RespHeaderLen = s.Resp, 200, hl
		}
	case pl.respBuf != nil:
		j.Response, j.RespStatus, j.RespHeaderLen = *pl.respBuf, pl.respStatus, pl.respHeaderLen
	}
}

// agentEngine is what the agent process runs: a headless Pipeline (no
// listeners, no xDS) whose features run the mirrors in process, fed by
// the proxy's frames.
type agentEngine struct {
	p   *Pipeline
	f   *features
	reg *prometheus.Registry
}

var _ agent.Engine = (*agentEngine)(nil)

// newAgentEngine is the agent's agent.NewEngine.
func newAgentEngine(in agent.Init, log *slog.Logger, onCompared func(model, version string, disagreed bool)) (agent.Engine, error) {
	reg := prometheus.NewRegistry()
	p, err := New(Config{Registry: reg, Logger: log, LeanGRPC: true, UpstreamTLS: in.UpstreamTLS, Features: FeaturesConfig{
		ShadowDir: in.ShadowDir, ShadowRecordMaxBytes: in.ShadowRecordMaxBytes, ShadowRecordKeep: in.ShadowRecordKeep,
		ShadowRecordAgreements: in.ShadowRecordAgreements, ShadowRingSize: in.ShadowRingSize,
		ShadowProcess: ShadowInline, // the agent's mirrors are in process (no agent of its own)
	}})
	if err != nil {
		return nil, err
	}
	p.features.onShadow = onCompared // comparisons go back to the proxy
	return &agentEngine{p: p, f: p.features, reg: reg}, nil
}

func (e *agentEngine) Apply(models []api.Model, version string) error {
	return e.p.Apply(models, version, "agent")
}

func (e *agentEngine) Gatherer() prometheus.Gatherer { return e.reg }

func (e *agentEngine) Close() error { return e.p.Close() }

// Mirror turns a job frame into a mirror of the agent's live route.
func (e *agentEngine) Mirror(j *agent.Job) {
	r := e.p.Route(j.Model)
	var ms *mirrorState
	if r != nil {
		if rf := r.policies; rf != nil {
			ms = rf.mirror
		}
	}
	var pv, tv *Variant
	if ms != nil && ms.target == j.TargetVersion {
		pv, tv = r.Variant(j.PrimaryVersion), r.Variant(j.TargetVersion)
	}
	if pv == nil || tv == nil {
		// Not (or no longer) the agent's configuration: the proxy's newer
		// configuration has not arrived yet, or this job is from an older one.
		e.f.shm.Dropped(j.Model, j.TargetVersion, shadow.KindShadow, "config")
		return
	}
	pl := &shadowPayload{target: tv, primary: pv, start: j.Start, latency: j.Latency}
	if j.GRPC {
		pl.pbBuf = copyShadowBuf(j.Request)
	} else {
		pl.bodyBuf, pl.headerLen = copyShadowBuf(j.Request), j.RequestHeaderLen
	}
	switch {
	case j.PrimaryErr != "":
		pl.primaryErr = &wirePrimaryError{msg: j.PrimaryErr, nan: j.PrimaryNaN, code: oip.Errorf(oip.Code(j.PrimaryCode), "%s", j.PrimaryErr)}
	case j.RespProto:
		pl.respPBBuf = copyShadowBuf(j.Response)
	default:
		pl.respBuf, pl.respStatus, pl.respHeaderLen = copyShadowBuf(j.Response), j.RespStatus, j.RespHeaderLen
	}
	pl.pending = shadowPending{ms: ms, pl: pl, noise: j.Noise}
	pl.pending.enqueue()
}

func (e *agentEngine) Status(model string) ([]byte, error) {
	ms, err := e.f.liveMirror(model)
	if err != nil {
		return nil, err
	}
	return json.Marshal(ShadowStatus{Version: ms.target, QueueLen: ms.queueLen(), RecordFile: ms.sinkPath()})
}

func (e *agentEngine) Report(model string, window time.Duration) ([]byte, error) {
	rep, err := e.f.ShadowReport(model, window)
	if err != nil {
		return nil, err
	}
	return json.Marshal(rep)
}

func (e *agentEngine) Records(model string, window time.Duration) ([]byte, error) {
	recs, err := e.f.shadowRecords(model, window)
	if err != nil {
		return nil, err
	}
	return json.Marshal(recs)
}

// wirePrimaryError is the primary's error as the proxy saw it: the same
// message, oip code and NaN marking.
type wirePrimaryError struct {
	msg  string
	nan  bool
	code *oip.Error
}

func (e *wirePrimaryError) Error() string        { return e.msg }
func (e *wirePrimaryError) Unwrap() error        { return e.code }
func (e *wirePrimaryError) Is(target error) bool { return e.nan && target == shadow.ErrNaNOutput }

// agentRecordPath is where the agent writes a model's records (for the
// proxy's /fallback status).
func agentRecordPath(dir, model string) string {
	if dir == "" {
		return ""
	}
	return filepath.Join(dir, model+".jsonl")
}

// agentQueryTimeout bounds the proxy's questions to the agent.
const agentQueryTimeout = 10 * time.Second

// agentReport is ShadowReport from the shadow agent.
func (f *features) agentReport(ms *mirrorState, model string, window time.Duration) (ShadowReportResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), agentQueryTimeout)
	defer cancel()
	b, err := ms.agent.Report(ctx, model, window)
	if err != nil {
		return ShadowReportResponse{}, err
	}
	var rep ShadowReportResponse
	if err := json.Unmarshal(b, &rep); err != nil {
		return ShadowReportResponse{}, fmt.Errorf("shadow agent report: %w", err)
	}
	return rep, nil
}

// agentRecords is /shadow/records from the shadow agent (its JSON as is).
func (f *features) agentRecords(ms *mirrorState, model string, window time.Duration) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), agentQueryTimeout)
	defer cancel()
	return ms.agent.Records(ctx, model, window)
}
