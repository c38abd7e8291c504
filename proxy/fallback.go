package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/switchyard-dev/switchyard/fallback"
	"github.com/switchyard-dev/switchyard/oip"
	"github.com/switchyard-dev/switchyard/routing"
)

// Fallbacks (spec.fallback). The fallback invoker takes the chosen
// version's concurrency slot (spec.fallback.maxConcurrency) and its circuit
// breaker itself, calls the version, and classifies the outcome into a
// fallback.Trigger: timeout (latency budget), connect_error, upstream_5xx,
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
//	        invoker (its own breaker and retries) with its own budget
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
	limiters      []*fallback.Limiter // by variant index (nil: unlimited)
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

func (f *features) policyLocked(r *Route, spec *routing.Fallback) (*fallbackPolicy, error) {
	chain, err := fallback.ParseChain(spec.Chain)
	if err != nil {
		return nil, err
	}
	pol := &fallbackPolicy{chain: chain, backupTimeout: spec.BackupTimeout.D(), limiters: make([]*fallback.Limiter, len(r.Variants))}
	if spec.Backup != "" {
		if pol.backup = r.Variant(spec.Backup); pol.backup == nil {
			return nil, fmt.Errorf("fallback.backup %q is not a version of the model", spec.Backup)
		}
	}
	if pol.backupTimeout <= 0 {
		pol.backupTimeout = r.Timeout
	}
	if spec.Static != nil && len(spec.Static.Outputs) > 0 {
		ts := make([]fallback.StaticTensor, len(spec.Static.Outputs))
		for i, t := range spec.Static.Outputs {
			ts[i] = fallback.StaticTensor{Name: t.Name, Datatype: t.Datatype, Shape: t.Shape, Data: t.Data, Strings: t.Strings}
		}
		if pol.static, err = fallback.NewStatic(ts); err != nil {
			return nil, err
		}
	}
	if spec.MaxConcurrency > 0 {
		for i, v := range r.Variants {
			k := fmt.Sprintf("%s/%s/%d", r.Name, v.Name, spec.MaxConcurrency)
			l := f.limiters[k]
			if l == nil {
				l = fallback.NewLimiter(spec.MaxConcurrency)
				f.limiters[k] = l
			}
			pol.limiters[i] = l
		}
	}
	return pol, nil
}

// fallbackInvoker runs the primary call and, on a trigger, the chain.
type fallbackInvoker struct {
	rf   *routeFeatures
	next Invoker
}

func (fi *fallbackInvoker) Invoke(ctx context.Context, x *Exchange, v *Variant, res *Result) error {
	rf := fi.rf
	pol := rf.fb
	trig, err := fi.primary(ctx, x, v, res)
	if trig == fallback.None {
		if err == nil && res.OK() {
			fi.good(x, v, res)
		}
		return err
	}
	r := rf.route
	m := rf.f.fbm
	m.Trigger(r.Name, v.Name, trig)
	key, keyOK := rf.key(x, v)
	avail := fallback.Availability{
		LastGood: rf.lastGood != nil && keyOK && rf.lastGood.Contains(key),
		Backup:   pol.backup != nil && pol.backup != v,
		Static:   pol.static != nil,
	}
	var badRequest error // the backup says the request itself is bad
	step, werr := fallback.Walk(pol.chain, avail, trig, func(s fallback.Step) error {
		if badRequest != nil {
			return errors.New("skipped: the backup rejected the request itself")
		}
		switch s {
		case fallback.StepCache:
			e, ok := rf.lastGood.Get(key)
			if !ok {
				return errors.New("the last good answer expired")
			}
			return rf.fill(x, v, res, e)
		case fallback.StepBackup:
			err := fi.backup(ctx, x, res)
			var bad *badRequestError
			if errors.As(err, &bad) {
				badRequest = bad.err
			}
			return err
		case fallback.StepStatic:
			res.SetResponse(v, pol.static.Response(r.Name, requestID(x)))
			return nil
		case fallback.StepEmpty:
			var like []oip.Tensor
			if pol.static != nil {
				like = pol.static.Outputs()
			} else if p := pol.like.Load(); p != nil {
				like = *p
			}
			res.SetResponse(v, fallback.EmptyResponse(r.Name, requestID(x), like))
			return nil
		}
		return fmt.Errorf("unknown step %v", s)
	})
	if werr != nil && badRequest != nil {
		// Not an outage: the request is malformed for this model. The
		// client gets the backup's 4xx, naming the problem, not a 503.
		m.Fallback(r.Name, "failed", trig)
		return badRequest
	}
	if werr != nil {
		m.Fallback(r.Name, "failed", trig)
		res.Variant = v
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
	res.Fallback, res.FallbackReason = step.String(), trig.String()
	m.Fallback(r.Name, step.String(), trig)
	return nil
}

// primary calls v under its concurrency limit and breaker and classifies
// the outcome.
func (fi *fallbackInvoker) primary(ctx context.Context, x *Exchange, v *Variant, res *Result) (fallback.Trigger, error) {
	if l := fi.rf.fb.limiters[v.Index]; l != nil {
		if !l.TryAcquire() {
			res.Variant = v
			return fallback.Overload, oip.Errorf(oip.Unavailable, "model %q version %q: %d requests in flight (maxConcurrency)", v.Route.Name, v.Name, l.Max())
		}
		defer l.Release()
	}
	b := fallbackBreaker(v)
	if b == nil {
		return fallback.None, fi.next.Invoke(ctx, x, v, res)
	}
	done, ok := b.Allow()
	if !ok {
		res.Variant = v
		v.metrics.upstreamError("breaker_open")
		return fallback.BreakerOpen, oip.Errorf(oip.Unavailable, "model %q version %q: circuit breaker open", v.Route.Name, v.Name)
	}
	x.ext.breakerHeld = true
	err := fi.next.Invoke(ctx, x, v, res)
	x.ext.breakerHeld = false
	trig := classify(x, res, err)
	done(trig.CountsForBreaker())
	return trig, err
}

// good records a good primary answer: the LastGood store and the shape of
// answers for the empty step.
func (fi *fallbackInvoker) good(x *Exchange, v *Variant, res *Result) {
	rf := fi.rf
	if rf.lastGood != nil {
		if key, ok := rf.key(x, v); ok {
			if e, ok := rf.entry(x, res); ok {
				rf.lastGood.Add(key, e)
			}
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

// backup calls the backup version with its own latency budget through the
// plain upstream invoker (the backup's own breaker and retries).
func (fi *fallbackInvoker) backup(ctx context.Context, x *Exchange, res *Result) error {
	pol := fi.rf.fb
	bv := pol.backup
	saved := x.Deadline
	x.Deadline = time.Now().Add(pol.backupTimeout)
	err := fi.rf.route.Invoker().Invoke(ctx, x, bv, res)
	x.Deadline = saved
	if err != nil {
		switch oip.CodeOf(err) {
		case oip.InvalidArgument, oip.NotFound, oip.TooLarge, oip.FailedPrecondition:
			return &badRequestError{err: err}
		}
		return fmt.Errorf("version %q: %v", bv.Name, err)
	}
	if t := classify(x, res, nil); t != fallback.None {
		return fmt.Errorf("version %q: %s", bv.Name, t)
	}
	if res.Status >= 400 && res.Status < 500 {
		// A REST 4xx from the backup: the request is bad, not the service.
		// Its answer (which names the problem) goes to the client as is.
		return nil
	}
	if !res.OK() {
		return fmt.Errorf("version %q answered status %d", bv.Name, res.Status)
	}
	return nil
}

// badRequestError is a gRPC client-error answer of the backup (invalid
// argument, not found): the request is at fault, so the fallback chain
// stops and the client gets that error.
type badRequestError struct{ err error }

func (e *badRequestError) Error() string { return e.err.Error() }

// classify turns one upstream outcome into a trigger (None: pass it on).
func classify(x *Exchange, res *Result, err error) fallback.Trigger {
	if err != nil {
		switch x.ext.failKind {
		case kindConnect, kindReset:
			return fallback.ConnectError
		case kindTimeout:
			return fallback.Timeout
		case kindUnavailable:
			return fallback.Unavailable
		case kind5xx:
			if x.pbReq != nil || res.Status == 0 {
				return fallback.Internal
			}
			return fallback.Upstream5xx
		case kindProtocol:
			return fallback.Upstream5xx
		case "breaker_open":
			return fallback.BreakerOpen
		}
		return fallback.ClassifyError(err)
	}
	switch {
	case res.PB != nil:
		resp, perr := res.Response()
		if perr != nil {
			return fallback.Upstream5xx
		}
		return fallback.ClassifyOutputs(resp.Outputs)
	case res.parsed != nil && len(res.Body) == 0:
		return fallback.ClassifyOutputs(res.parsed.Outputs)
	case res.Status >= 500:
		if bytes.Contains(res.Body, nanMessageBytes) {
			return fallback.NaNOutput
		}
		return fallback.ClassifyHTTP(res.Status)
	case res.Status >= 200 && res.Status < 300:
		// JSON cannot carry NaN/Inf (a lenient server may still write the
		// tokens); binary outputs can: decode those.
		if res.HeaderLen > 0 || bytes.Contains(res.Body, nanMessageBytes) || bytes.Contains(res.Body, infMessageBytes) {
			resp, perr := res.Response()
			if perr != nil {
				return fallback.Upstream5xx
			}
			return fallback.ClassifyOutputs(resp.Outputs)
		}
	}
	return fallback.None
}

var infMessageBytes = []byte("Infinity")

// requestID is the request's id ("" when absent or undecodable).
func requestID(x *Exchange) string {
	if x.pbReq != nil {
		return x.pbReq.GetId()
	}
	if req, err := x.Request(); err == nil {
		return req.ID
	}
	return ""
}
