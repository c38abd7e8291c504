package controlplane

import (
	"errors"
	"path/filepath"
	"time"

	"github.com/switchyard-dev/switchyard/api/statspb"
	"github.com/switchyard-dev/switchyard/controlplane/canaryctl"
	"github.com/switchyard-dev/switchyard/controlplane/stats"
)

// CanaryOptions configure the canary controller and the stats service it
// reads (zero values: defaults).
type CanaryOptions struct {
	// Interval between ticks (default 1s).
	Interval time.Duration
	// Retention of the proxies' reports (default 15m): a step is judged on
	// at most this much of its traffic.
	Retention time.Duration
	// Source of the stats the analysis reads (default: the proxies'
	// reports, the controller's Stats()); e.g. a canaryctl.PromSource.
	Source canaryctl.MetricSource
	// AckWait bounds how long a manual action waits for the proxies to ACK
	// its change when the request does not say (default 10s).
	AckWait time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// EnableCanary creates the canary controller of cp (controlplane/canaryctl)
// and the stats service it reads (controlplane/stats): it registers the
// statspb.Stats service on the xDS gRPC server (so proxies report to the
// xDS address), the canary and stats endpoints on the API, and starts the
// ticking goroutine (stopped by Close). Call it once, after New and before
// Start.
func (cp *ControlPlane) EnableCanary(opts CanaryOptions) (*canaryctl.Controller, error) {
	if cp.canary {
		return nil, errors.New("canary controller already enabled")
	}
	if opts.Retention <= 0 {
		opts.Retention = 15 * time.Minute
	}
	if opts.AckWait <= 0 {
		opts.AckWait = 10 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	log := cp.log.With("component", "canary")
	legacy := ""
	if b, ok := cp.store.(interface{ Path() string }); ok {
		// Older control planes kept the canary's state in a file of its
		// own next to the state file.
		legacy = filepath.Clean(b.Path() + ".canary")
	}
	// Nothing is registered or served before the controller loaded its
	// state: a failed load leaves the control plane as it was, and
	// EnableCanary may be called again.
	st := stats.New(opts.Retention, opts.Now, log)
	c, err := canaryctl.New(cp.ctx, canaryctl.Options{Store: cp.timed, Stats: st, Source: opts.Source, Interval: opts.Interval, Now: opts.Now,
		LegacyStatePath: legacy, Logger: log, Registerer: cp.cfg.Registerer})
	if err != nil {
		return nil, err
	}
	cp.canary = true
	if cp.cfg.Registerer != nil {
		st.Register(cp.cfg.Registerer)
	}
	statspb.RegisterStatsServer(cp.xds.GRPC(), st)
	cp.api.EnableCanary(c, st, opts.AckWait)
	cp.wg.Add(1)
	go func() {
		defer cp.wg.Done()
		c.Run(cp.ctx)
	}()
	return c, nil
}
