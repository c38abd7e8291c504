package proxy

import (
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
		if pol.static, err = fallback.NewStatic(spec.Static.Outputs); err != nil {
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

// fallbackInvoker runs the primary call and, on a trigger that falls
// (fallback.Trigger.Falls), the chain.
type fallbackInvoker struct {
	rf   *routeFeatures
	next Invoker
}

func (fi *fallbackInvoker) Invoke(ctx context.Context, x *Exchange, v *Variant, res *Result) error {
	rf := fi.rf
	pol := rf.fb
	trig, err := fi.primary(ctx, x, v, res)
	if !trig.Falls(fallback.Primary) {
		if trig == fallback.None && err == nil && res.OK() {
			fi.good(x, v, res)
		}
		return err
	}
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
	key, keyOK := rf.key(x, v)
	avail := fallback.Availability{
		LastGood: rf.lastGood != nil && keyOK && rf.lastGood.Contains(key),
		Backup:   pol.backup != nil && pol.backup != v,
		Static:   pol.static != nil,
	}
	var gone error // the client went away during the chain: stop
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
			e, ok := rf.lastGood.Get(key)
			if !ok {
				return errors.New("the last good answer expired")
			}
			return rf.fill(x, v, res, e)
		case fallback.StepBackup:
			err := fi.backup(ctx, x, res)
			if res.Trigger == fallback.Cancelled {
				gone = err
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
			} else if p := pol.like.Load(); p != nil {
				like = *p
			}
			res.SetResponse(nil, fallback.EmptyResponse(r.Name, requestID(x), like, requestRows(x)))
			return nil
		}
		return fmt.Errorf("unknown step %v", s)
	})
	if gone != nil {
		res.Variant, res.Trigger = v, fallback.Cancelled
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

// primary calls v under its concurrency limit and returns the attempt's
// trigger (the upstream invoker judged it and told the breaker).
func (fi *fallbackInvoker) primary(ctx context.Context, x *Exchange, v *Variant, res *Result) (fallback.Trigger, error) {
	if l := fi.rf.fb.limiters[v.Index]; l != nil {
		if !l.TryAcquire() {
			res.Variant, res.Trigger = v, fallback.Overload
			return fallback.Overload, oip.Errorf(oip.Unavailable, "model %q version %q: %d requests in flight (maxConcurrency)", v.Route.Name, v.Name, l.Max())
		}
		defer l.Release()
	}
	err := fi.next.Invoke(ctx, x, v, res)
	return res.Trigger, err
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
// plain upstream invoker (the backup's own breaker and retries). Any
// outcome but a good answer moves the chain on — a backup that rejects
// the request disagrees with its form (a smaller max_batch_size, another
// schema); the request is not at fault — so the error says why, for the
// message naming every step.
func (fi *fallbackInvoker) backup(ctx context.Context, x *Exchange, res *Result) error {
	pol := fi.rf.fb
	bv := pol.backup
	saved := x.Deadline
	x.Deadline = time.Now().Add(pol.backupTimeout)
	err := fi.rf.route.Invoker().Invoke(ctx, x, bv, res)
	x.Deadline = saved
	t := res.Trigger
	if !t.Falls(fallback.Backup) && t != fallback.Cancelled && err == nil && res.OK() {
		return nil
	}
	switch {
	case t == fallback.Cancelled:
		return err
	case err != nil:
		return fmt.Errorf("version %q: %s: %v", bv.Name, t, err)
	}
	return fmt.Errorf("version %q: %s: %s", bv.Name, t, upstreamCause(res, nil))
}

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
