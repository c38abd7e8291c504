package pipeline

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/switchyard-dev/switchyard/api"
	"github.com/switchyard-dev/switchyard/fallback"
	"github.com/switchyard-dev/switchyard/oip"
)

// Fallbacks (spec.fallback), steps 2 and 4 of the pipeline (pipeline.go).
// The primary call takes the chosen version's concurrency slot
// (spec.fallback.maxConcurrency), then its circuit breaker, calls the
// version, and judges the outcome into a fallback.Trigger: timeout (latency budget), connect_error, upstream_5xx,
// unavailable (503 / UNAVAILABLE), internal (gRPC INTERNAL), nan_output
// (NaN/Inf in a floating-point output; a REST JSON answer cannot carry
// them, so a backend's 5xx naming NaN counts too), breaker_open, overload.
// A trigger counts against the breaker (except breaker_open and overload)
// and walks the model's chain in its order:
//
//	cache   the last good answer for the same input (the LastGood store,
//	        filled by every good answer of the version the request was
//	        routed to; needs spec.cache)
//	backup  spec.fallback.backup, called through the ordinary upstream
//	        call (its own limiter, breaker and retries) with its own budget
//	        spec.fallback.backupTimeout
//	static  spec.fallback.static, the desired state's fixed answer
//	empty   200 with empty outputs (named like the static answer, or like the
//	        model's last good answer)
//
// The answer carries x-switchyard-fallback (step) and
// x-switchyard-fallback-reason (trigger), also as gRPC metadata. When every
// step fails the client gets 503 / UNAVAILABLE naming each step and why.

// fallbackPolicy is a route's compiled spec.fallback.
type fallbackPolicy struct {
	chain         []fallback.Step
	backup        *Variant
	backupTimeout time.Duration
	static        *fallback.Static
	// like holds the output names/types/shapes of a good answer, for the
	// empty step when no static answer is configured.
	like atomic.Pointer[[]oip.Tensor]
}

func (p *fallbackPolicy) hasStep(s fallback.Step) bool {
	for _, c := range p.chain {
		if c == s {
			return true
		}
	}
	return false
}

func (f *features) policyLocked(r *Route, spec *api.Fallback) (*fallbackPolicy, error) {
	chain, err := fallback.ParseChain(spec.Chain)
	if err != nil {
		return nil, err
	}
	pol := &fallbackPolicy{chain: chain, backupTimeout: spec.BackupTimeout.D()}
	if spec.Backup != "" {
		if pol.backup = r.Variant(spec.Backup); pol.backup == nil {
			return nil, fmt.Errorf("fallback.backup %q is not a version of the model", spec.Backup)
		}
	}
	if pol.backupTimeout <= 0 {
		pol.backupTimeout = r.Timeout
	}
	if spec.Static != nil && len(spec.Static.Outputs) > 0 {
		if pol.static, err = fallback.NewStatic(spec.Static.Outputs); err != nil {
			return nil, err
		}
	}
	return pol, nil
}

// fallBack walks the route's chain for an exchange whose primary outcome
// (res.Trigger) falls; primaryErr is the primary's error. It returns the
// error the client gets (nil when a step answered).
func (p *Pipeline) fallBack(ctx context.Context, rf *routePolicies, x *Exchange, v *Variant, res *Result, k reqKey, primaryErr error) error {
	pol := rf.fb
	trig, err := res.Trigger, primaryErr
	r := rf.route
	if _, perr := x.Request(); perr != nil {
		// Not a well-formed inference request at all (malformed JSON, a
		// tensor that contradicts its own shape): the request's fault
		// whoever is asked, so no link is tried. (A well-formed request
		// a backup rejects — another schema, a smaller batch — moves the
		// chain on.)
		res.Variant, res.Trigger = v, fallback.Rejected
		return perr
	}
	m := rf.f.fbm
	m.Trigger(r.Name, v.Name, trig)
	avail := fallback.Availability{
		LastGood: rf.lastGood != nil && k.ok && rf.lastGood.Contains(k.key),
		Backup:   pol.backup != nil && pol.backup != v,
		Static:   pol.static != nil,
	}
	var gone error // the client went away during the chain (or the drain cut it): stop
	goneTrig := fallback.Cancelled
	step, werr := fallback.Walk(pol.chain, avail, trig, func(s fallback.Step) error {
		if gone != nil {
			return errors.New("skipped: the client went away")
		}
		if ctx.Err() != nil {
			gone = oip.Errorf(oip.Canceled, "model %q: the client cancelled the request", r.Name)
			return gone
		}
		switch s {
		case fallback.StepCache:
			e, ok := rf.lastGood.Get(k.key)
			if !ok {
				return errors.New("the last good answer expired")
			}
			return rf.fill(x, v, res, e, k)
		case fallback.StepBackup:
			err := p.backup(ctx, pol, x, res)
			if res.Trigger.Fault() == fallback.FaultClient {
				gone, goneTrig = err, res.Trigger
			}
			return err
		case fallback.StepStatic:
			resp, err := pol.static.Response(r.Name, requestID(x), requestRows(x))
			if err != nil {
				return err
			}
			res.SetResponse(nil, resp)
			return nil
		case fallback.StepEmpty:
			var like []oip.Tensor
			if pol.static != nil {
				like = pol.static.Outputs()
			} else if lp := pol.like.Load(); lp != nil {
				like = *lp
			}
			res.SetResponse(nil, fallback.EmptyResponse(r.Name, requestID(x), like, requestRows(x)))
			return nil
		}
		return fmt.Errorf("unknown step %v", s)
	})
	if gone != nil {
		res.Variant, res.Trigger = v, goneTrig
		return gone
	}
	if werr != nil {
		m.Fallback(r.Name, "failed", trig)
		res.Variant, res.Trigger = v, trig
		var ex *fallback.ExhaustedError
		if errors.As(werr, &ex) {
			e := ex.OIP()
			e.Msg = fmt.Sprintf("model %q version %q: %s", r.Name, v.Name, e.Msg)
			if err != nil {
				e.Msg += " (primary: " + err.Error() + ")"
			}
			return e
		}
		return oip.Errorf(oip.Unavailable, "model %q: %v", r.Name, werr)
	}
	res.Fallback, res.FallbackReason, res.Trigger = step.String(), trig.String(), trig
	m.Fallback(r.Name, step.String(), trig)
	return nil
}

// primary calls v under its concurrency limit (spec.concurrency), then
// through its breaker; res.Trigger is the judged outcome. A request over
// the limit is shed (trigger Overload: the chain answers it where there is
// one); an adaptive limit learns from the call's latency.
func (p *Pipeline) primary(ctx context.Context, x *Exchange, v *Variant, res *Result) error {
	l := v.limiter
	if l == nil {
		return p.call(ctx, x, v, res)
	}
	if !l.TryAcquire() {
		p.Shed("concurrency")
		res.Variant, res.Trigger = v, fallback.Overload
		e := oip.Errorf(oip.Unavailable, "model %q version %q: %d requests in flight (spec.concurrency); shed, retry shortly", v.Route.Name, v.Name, l.Max())
		e.RetryAfter = overloadRetryAfter
		return e
	}
	inflight := l.InFlight()
	start := time.Now()
	err := p.call(ctx, x, v, res)
	l.Observe(time.Since(start), fallback.SampleOf(res.Trigger), inflight)
	l.Release()
	return err
}

// remember records a good primary answer for the chain: the last good
// store and the shape of answers for the empty step.
func (rf *routePolicies) remember(x *Exchange, v *Variant, res *Result, k reqKey) {
	if rf.lastGood != nil && k.ok {
		if e, ok := rf.entry(x, res); ok {
			rf.lastGood.Add(k.key, e)
		}
	}
	if rf.fb.static == nil && rf.fb.like.Load() == nil && rf.fb.hasStep(fallback.StepEmpty) {
		if resp, err := res.Response(); err == nil {
			like := make([]oip.Tensor, len(resp.Outputs))
			for i, t := range resp.Outputs {
				like[i] = oip.Tensor{Name: t.Name, Datatype: t.Datatype, Shape: append([]int64(nil), t.Shape...)}
			}
			rf.fb.like.Store(&like)
		}
	}
}

// backup calls the backup version with its own latency budget (its own
// breaker and retries). Any outcome but a good answer moves the chain on —
// a backup that rejects the request disagrees with its form (a smaller
// max_batch_size, another schema); the request is not at fault — so the
// error says why, for the message naming every step.
func (p *Pipeline) backup(ctx context.Context, pol *fallbackPolicy, x *Exchange, res *Result) error {
	bv := pol.backup
	saved := x.Deadline
	x.Deadline = time.Now().Add(pol.backupTimeout)
	err := p.primary(ctx, x, bv, res) // the backup's own limit too
	x.Deadline = saved
	t := res.Trigger
	if !t.Falls(fallback.Backup) && t.Fault() != fallback.FaultClient && err == nil && res.OK() {
		return nil
	}
	switch {
	case t.Fault() == fallback.FaultClient:
		return err
	case err != nil:
		return fmt.Errorf("version %q: %s: %v", bv.Name, t, err)
	}
	return fmt.Errorf("version %q: %s: %s", bv.Name, t, upstreamCause(res, nil))
}

// requestID is the request's id ("" when absent or undecodable).
func requestID(x *Exchange) string {
	if x.PBReq != nil {
		return x.PBReq.GetId()
	}
	if req, err := x.Request(); err == nil {
		return req.ID
	}
	return ""
}

// bodylessAnswer is the fallback chain's answer to a request refused
// before its body was read (the buffered-bytes budget: trigger Overload):
// the chain's first static or empty step, shaped as configured (the
// request's rows are unknown), since the cache and the backup need the
// body. ok is false when the route has neither.
func (rf *routePolicies) bodylessAnswer() (resp *oip.InferResponse, step fallback.Step, ok bool) {
	if rf == nil || rf.fb == nil {
		return nil, 0, false
	}
	pol, name := rf.fb, rf.route.Name
	for _, s := range pol.chain {
		switch s {
		case fallback.StepStatic:
			if pol.static == nil {
				continue
			}
			if r, err := pol.static.Response(name, "", -1); err == nil {
				return r, s, true
			}
		case fallback.StepEmpty:
			var like []oip.Tensor
			if pol.static != nil {
				like = pol.static.Outputs()
			} else if lp := pol.like.Load(); lp != nil {
				like = *lp
			}
			if like != nil {
				return fallback.EmptyResponse(name, "", like, -1), s, true
			}
		}
	}
	return nil, 0, false
}

// BodylessFallback is the route's static or empty answer to a request the
// buffered-bytes budget refused before its body was read (see
// bodylessAnswer), counted as that step answering an overload.
func (p *Pipeline) BodylessFallback(model string) (*oip.InferResponse, string, bool) {
	s := p.snap.Load()
	if s == nil {
		return nil, "", false
	}
	r := s.routes[model]
	if r == nil {
		return nil, "", false
	}
	resp, step, ok := r.policies.bodylessAnswer()
	if !ok {
		return nil, "", false
	}
	r.policies.f.fbm.Fallback(r.Name, step.String(), fallback.Overload)
	return resp, step.String(), true
}
