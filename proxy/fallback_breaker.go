package proxy

import (
	"github.com/switchyard-dev/switchyard/fallback"
	"github.com/switchyard-dev/switchyard/proxy/upstream"
	"github.com/switchyard-dev/switchyard/routing"
)

// versionBreaker is the one circuit breaker of a model version: a
// fallback.GoBreaker (sony/gobreaker two-step) seen by the upstream invoker
// through upstream.Breaker. The fallback extension takes it directly
// (Exchange.ext.breakerHeld) so it can count NaN answers as failures too;
// routes without a fallback policy use it through the invoker, counting
// transport failures and 5xx.
type versionBreaker struct {
	b *fallback.GoBreaker
}

var _ upstream.Breaker = versionBreaker{}

// breakerConfig maps the desired state's breaker onto the fallback
// package's (window and half-open probes keep their defaults: 10 s, 1).
func breakerConfig(cfg routing.Breaker) fallback.BreakerConfig {
	return fallback.BreakerConfig{
		ConsecutiveFailures: cfg.ConsecutiveFailures,
		FailureRatio:        cfg.FailureRatio,
		MinRequests:         cfg.MinRequests,
		OpenFor:             cfg.OpenFor.D(),
	}.Defaults()
}

// newVersionBreaker builds the breaker of model/version; onChange (the
// proxy's gauge switchyard_proxy_breaker_state and log line) gets
// "model/version" and the state names.
func newVersionBreaker(model, version string, cfg routing.Breaker, onChange func(name, from, to string)) upstream.Breaker {
	name := model + "/" + version
	var notify func(from, to fallback.BreakerState)
	if onChange != nil {
		notify = func(from, to fallback.BreakerState) { onChange(name, from.String(), to.String()) }
	}
	return versionBreaker{b: fallback.NewBreakerNotify(model, version, breakerConfig(cfg), nil, notify)}
}

func (v versionBreaker) Allow() (func(error), error) {
	done, ok := v.b.Allow()
	if !ok {
		return nil, upstream.ErrBreakerOpen
	}
	return func(err error) { done(err != nil) }, nil
}

func (v versionBreaker) State() string { return v.b.State().String() }

// fallbackBreaker returns the variant's fallback.Breaker.
func fallbackBreaker(v *Variant) fallback.Breaker {
	if vb, ok := v.Breaker.(versionBreaker); ok {
		return vb.b
	}
	return nil
}

// noBreaker is the done function of a call whose breaker is held elsewhere.
func noBreaker(error) {}
