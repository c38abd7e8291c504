package proxy

import (
	"crypto/subtle"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/switchyard-dev/switchyard/api"
	"github.com/switchyard-dev/switchyard/internal/seclog"
	"github.com/switchyard-dev/switchyard/internal/tlsutil"
	"github.com/switchyard-dev/switchyard/proxy/pipeline"
	"github.com/switchyard-dev/switchyard/proxy/xdsclient"
)

// ConfigDump is the answer of /config_dump.
type ConfigDump struct {
	Version string `json:"version"`
	// Source is xds, persisted (loaded from StateDir because the control
	// plane has not answered yet) or static.
	Source        string            `json:"source"`
	AppliedAt     time.Time         `json:"appliedAt"`
	PersistedFrom string            `json:"persistedFrom,omitempty"`
	Note          string            `json:"note,omitempty"`
	XDS           *xdsclient.Status `json:"xds,omitempty"`
	Models        []api.Model       `json:"models"`
}

// Stats is the answer of /stats.
type Stats struct {
	Models []ModelStats `json:"models"`
}

// ModelStats are one route's live upstream numbers.
type ModelStats struct {
	Model    string         `json:"model"`
	Variants []VariantStats `json:"variants"`
}

// VariantStats are one variant's breaker and endpoints.
type VariantStats struct {
	Variant   string          `json:"variant"`
	Weight    int             `json:"weight"`
	Breaker   string          `json:"breaker"`
	Endpoints []EndpointStats `json:"endpoints"`
}

// EndpointStats are one endpoint's counters.
type EndpointStats struct {
	Addr      string `json:"addr"`
	InFlight  int64  `json:"inFlight"`
	Attempts  int64  `json:"attempts"`
	Failures  int64  `json:"failures"`
	Ejected   bool   `json:"ejected"`
	Ejections int    `json:"ejections"`
}

// ConfigDump returns the active configuration and where it came from.
func (p *Proxy) ConfigDump() ConfigDump {
	s, ok := p.pl.Live()
	d := ConfigDump{Models: []api.Model{}}
	if ok {
		d.Version, d.Source, d.AppliedAt, d.Models = s.Version, s.Source, s.Applied, s.Models
		if s.Source == SourcePersisted {
			d.PersistedFrom = p.persisted
			d.Note = "serving the persisted last good configuration: the control plane has not answered since start"
		}
	} else {
		d.Note = "no configuration yet"
	}
	if p.xds != nil {
		st := p.xds.Status()
		d.XDS = &st
	}
	return d
}

// Stats returns live per-variant upstream numbers.
func (p *Proxy) Stats() Stats {
	out := Stats{Models: []ModelStats{}}
	now := time.Now().UnixNano()
	for _, r := range p.pl.Routes() {
		ms := ModelStats{Model: r.Name}
		for i, v := range r.Variants {
			vs := VariantStats{Variant: v.Name, Weight: r.Picker.Weight(i), Breaker: v.Breaker.State().String()}
			for _, e := range v.Endpoints {
				total, failures := e.Counts()
				vs.Endpoints = append(vs.Endpoints, EndpointStats{Addr: e.Addr, InFlight: e.InFlight(), Attempts: total,
					Failures: failures, Ejected: e.Ejected(now), Ejections: e.Ejections()})
			}
			ms.Variants = append(ms.Variants, vs)
		}
		out.Models = append(out.Models, ms)
	}
	return out
}

func (p *Proxy) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(p.cfg.Registry, promhttp.HandlerOpts{}))
	mux.Handle("GET /config_dump", p.guard(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		pipeline.WriteJSON(w, http.StatusOK, p.ConfigDump())
	})))
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) {
		pipeline.WriteJSON(w, http.StatusOK, p.Stats())
	})
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, r *http.Request) {
		s, ok := p.pl.Live()
		if !ok {
			pipeline.WriteJSON(w, http.StatusServiceUnavailable, map[string]any{"ready": false, "reason": "no configuration yet"})
			return
		}
		pipeline.WriteJSON(w, http.StatusOK, map[string]any{"ready": true, "version": s.Version, "source": s.Source})
	})
	p.pl.AdminRoutes(mux, p.guard)                                  // /shadow/report, /shadow/records, /fallback
	mux.Handle("GET /security/events", p.guard(p.seclog.Handler())) // the guard's own refusals (seclog)
	mux.Handle("GET /debug/pprof/", p.guard(http.HandlerFunc(pprof.Index)))
	mux.Handle("GET /debug/pprof/profile", p.guard(http.HandlerFunc(pprof.Profile)))
	mux.Handle("GET /debug/pprof/symbol", p.guard(http.HandlerFunc(pprof.Symbol)))
	mux.Handle("GET /debug/pprof/trace", p.guard(http.HandlerFunc(pprof.Trace)))
	return mux
}

// guard protects an admin page that exposes data or internals (the
// configuration, captured shadow records, fallback state, profiles):
// with Config.AdminToken set it needs "Authorization: Bearer <token>"
// (401 without it); without one it is served to loopback clients only
// (403 otherwise). /ready, /metrics and /stats (counts only) stay open.
// Refused calls are logged and counted
// (switchyard_proxy_admin_refused_total{reason}).
func (p *Proxy) guard(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reason := ""
		switch {
		case p.cfg.AdminToken != "":
			got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(p.cfg.AdminToken)) != 1 {
				reason = "no_credential"
				if ok {
					reason = "bad_credential"
				}
			}
		case !isLoopback(r.RemoteAddr):
			reason = "not_loopback"
		}
		if reason == "" {
			h.ServeHTTP(w, r)
			return
		}
		p.pl.Metrics().AdminRefused.WithLabelValues(reason).Inc()
		ev := seclog.Event{Remote: r.RemoteAddr, Method: r.Method, Path: r.URL.Path, Subject: tlsutil.PeerIdentity(r.TLS)}
		if reason == "not_loopback" {
			ev.Reason, ev.Detail = seclog.NotAllowed, fmt.Sprintf("%s is served to loopback clients only; start the proxy with --admin-token-file to serve it to callers that present the token", r.URL.Path)
			p.seclog.Refuse(ev)
			pipeline.WriteError(w, http.StatusForbidden, ev.Detail)
			return
		}
		ev.Reason, ev.Detail = seclog.Reason(reason), fmt.Sprintf("%s needs the admin token: Authorization: Bearer <token>", r.URL.Path)
		p.seclog.Refuse(ev)
		w.Header().Set("WWW-Authenticate", `Bearer realm="switchyard-proxy-admin"`)
		pipeline.WriteError(w, http.StatusUnauthorized, ev.Detail)
	})
}

func isLoopback(remote string) bool {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
