package proxy

import (
	"context"

	"github.com/switchyard-dev/switchyard/proxy/report"
)

// RecordShadow counts one shadow comparison of (model, version) as the
// shadow, for the canary's shadow-disagreement gate.
func (p *Proxy) RecordShadow(model, version string, disagreed bool) {
	p.pl.RecordShadow(model, version, disagreed)
}

// StatsReporterStatus returns the stats reporter's state (zero without
// one).
func (p *Proxy) StatsReporterStatus() report.Status {
	if p.reporter == nil {
		return report.Status{}
	}
	return p.reporter.Status()
}

// startReporter starts the stats reporter (Start calls it when the proxy has
// a control plane and reporting is on).
func (p *Proxy) startReporter(ctx context.Context) {
	addr := p.cfg.StatsAddr
	if addr == "" {
		addr = p.cfg.XDSAddr
	}
	p.reporter = report.New(p.pl.Stats(), report.Options{Addr: addr, Node: p.cfg.NodeID, Interval: p.cfg.StatsInterval,
		BackoffMin: p.cfg.XDSBackoffMin, BackoffMax: p.cfg.XDSBackoffMax, Log: p.log, Dial: p.cpDial})
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		p.reporter.Run(ctx)
	}()
}
