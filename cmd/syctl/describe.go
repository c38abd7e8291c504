package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/switchyard-dev/switchyard/api"
	"github.com/switchyard-dev/switchyard/cmd/syctl/internal/client"
)

// describeView is what describe shows (and prints with -o json|yaml).
type describeView struct {
	Model    api.ModelResponse `json:"model"`
	Variants []variantView     `json:"variants"`
	// Canary, Shadow and Stats are the API's (or a proxy's) answers as
	// they came, or absent with a note why.
	Canary      json.RawMessage `json:"canaryStatus,omitempty"`
	Shadow      json.RawMessage `json:"shadowReport,omitempty"`
	ProxyStats  json.RawMessage `json:"proxyStats,omitempty"`
	Applied     *appliedView    `json:"applied,omitempty"`
	Unavailable []string        `json:"unavailable,omitempty"`
	// StatsSource says where the live numbers come from.
	StatsSource string `json:"statsSource,omitempty"`
}

type variantView struct {
	Version      string   `json:"version"`
	Weight       int      `json:"weight"`
	Share        float64  `json:"share"`
	Roles        []string `json:"roles,omitempty"`
	Protocol     string   `json:"protocol"`
	BackendModel string   `json:"backendModel"`
	Endpoints    []string `json:"endpoints"`
	// Live numbers; nil when no source offers them.
	Breaker   *string  `json:"breaker,omitempty"`
	Requests  *int64   `json:"requests,omitempty"`
	ErrorRate *float64 `json:"errorRate,omitempty"`
	P99MS     *float64 `json:"p99Ms,omitempty"`
	// Fallbacks: the version's requests a fallback answered; NaNOutputs:
	// its answers with NaN/Inf; Errors: its failures by kind (from the
	// control plane's stats).
	Fallbacks  *uint64           `json:"fallbacks,omitempty"`
	NaNOutputs *uint64           `json:"nanOutputs,omitempty"`
	Errors     map[string]uint64 `json:"errors,omitempty"`
	// UpstreamFailures: the version's own failures by trigger, whether or
	// not a fallback answered (FailureRate their share of Requests);
	// BackupAnswers: other versions' requests it answered as their backup.
	UpstreamFailures map[string]uint64 `json:"upstreamFailures,omitempty"`
	FailureRate      *float64          `json:"upstreamFailureRate,omitempty"`
	BackupAnswers    *uint64           `json:"backupAnswers,omitempty"`
	// ShadowCompared / ShadowDisagreed: its mirrored calls as the shadow.
	ShadowCompared  *uint64 `json:"shadowCompared,omitempty"`
	ShadowDisagreed *uint64 `json:"shadowDisagreed,omitempty"`
}

type appliedView struct {
	Revision int64    `json:"revision"`
	Proxies  int      `json:"proxies"`
	Applied  int      `json:"applied"`
	Behind   []string `json:"behind,omitempty"`
	Nacked   []string `json:"nacked,omitempty"`
}

func cmdDescribe(a *app, args []string) error {
	fs := flag.NewFlagSet("describe model NAME | describe model/NAME", flag.ContinueOnError)
	proxyAdmin := fs.String("proxy-admin", "", "also read live breaker states and request counts from this proxy's admin `URL` (env SYCTL_PROXY_ADMIN), e.g. http://127.0.0.1:9901")
	watch := watchFlags(fs)
	pos, err := a.parse(fs, args)
	if err != nil {
		return err
	}
	name, err := modelResource(pos)
	if err != nil {
		return err
	}
	if name == "" {
		return usagef("want: describe model NAME")
	}
	if *proxyAdmin == "" {
		*proxyAdmin = a.getenv("SYCTL_PROXY_ADMIN")
	}
	return a.watch(watch, func(ctx context.Context) error { return a.describeOnce(ctx, name, *proxyAdmin) })
}

func (a *app) describeOnce(ctx context.Context, name, proxyAdmin string) error {
	mr, _, err := a.api.GetModel(ctx, name)
	if err != nil {
		return err
	}
	v := describeView{Model: mr}
	m := &mr.Model
	total := 0
	for _, w := range m.Spec.Traffic.Weights {
		total += w
	}
	for _, ver := range m.Spec.Versions {
		vv := variantView{Version: ver.Name, Weight: m.Spec.Traffic.Weights[ver.Name], Protocol: ver.Protocol,
			BackendModel: ver.BackendModel, Endpoints: ver.Endpoints, Roles: roles(m, ver.Name)}
		if total > 0 {
			vv.Share = float64(vv.Weight) / float64(total)
		}
		v.Variants = append(v.Variants, vv)
	}

	// Canary status and the shadow report: endpoints that later control
	// planes offer; say so when this one does not.
	base := client.ModelPath(name)
	if m.Spec.Canary != nil {
		if raw, err := a.api.Raw(ctx, http.MethodGet, base+"/canary", nil); err == nil {
			v.Canary = raw
		} else {
			v.Unavailable = append(v.Unavailable, "canary status: "+why(err))
		}
	}
	if m.Spec.Shadow != nil {
		if raw, err := a.api.Raw(ctx, http.MethodGet, base+"/shadow/report", nil); err == nil {
			v.Shadow = raw
		} else {
			v.Unavailable = append(v.Unavailable, "shadow report: "+why(err))
		}
	}
	// Per-variant live numbers: the control plane's aggregate when it has
	// one, else a proxy's /stats when asked.
	if raw, err := a.api.Raw(ctx, http.MethodGet, base+"/stats", nil); err == nil {
		v.ProxyStats = raw
		v.StatsSource = fillStats(v.Variants, raw, name)
		if proxyAdmin != "" { // the control plane has no breaker states: take them from the proxy
			if praw, perr := fetchProxyStats(ctx, a.httpClient(10*time.Second), proxyAdmin); perr != nil {
				v.Unavailable = append(v.Unavailable, "proxy breaker states: "+perr.Error())
			} else {
				fillBreakers(v.Variants, praw, name)
			}
		}
	} else if proxyAdmin != "" {
		raw, perr := fetchProxyStats(ctx, a.httpClient(10*time.Second), proxyAdmin)
		if perr != nil {
			v.Unavailable = append(v.Unavailable, "proxy stats: "+perr.Error())
		} else {
			v.ProxyStats = raw
			fillStats(v.Variants, raw, name)
		}
		if nums, err := fetchProxyMetrics(ctx, a.httpClient(10*time.Second), proxyAdmin, name); err != nil {
			v.Unavailable = append(v.Unavailable, "proxy metrics: "+err.Error())
		} else {
			fillMetrics(v.Variants, nums)
			v.StatsSource = "proxy " + proxyAdmin + " since it started (error rate: 5xx share)"
			v.Unavailable = append(v.Unavailable, "requests, error rate (5xx share) and p99 are from proxy "+proxyAdmin+" since it started")
		}
	} else {
		v.Unavailable = append(v.Unavailable, "per-variant p99, error rate and breaker state: "+why(err)+"; --proxy-admin URL reads breaker states and counts from a proxy")
	}
	if px, _, err := a.api.Proxies(ctx); err == nil {
		ap := &appliedView{Revision: mr.Revision, Proxies: len(px.Proxies)}
		for _, p := range px.Proxies {
			if n, err := strconv.ParseInt(p.AckedVersion, 10, 64); err == nil && n >= mr.Revision {
				ap.Applied++
			} else {
				ap.Behind = append(ap.Behind, p.Node)
			}
			if p.NackedVersion != "" {
				ap.Nacked = append(ap.Nacked, fmt.Sprintf("%s (version %s: %s)", p.Node, p.NackedVersion, p.NackReason))
			}
		}
		v.Applied = ap
	}
	if a.structured() {
		return a.printValue(v)
	}
	return printDescribe(a.stdout, v)
}

func why(err error) string {
	var ae *client.APIError
	if errors.As(err, &ae) {
		if ae.NoEndpoint {
			return "n/a (this control plane has no " + ae.Path + " yet)"
		}
		return fmt.Sprintf("n/a (%s, HTTP %d)", ae.Error(), ae.Status)
	}
	return "n/a (" + err.Error() + ")"
}

func roles(m *api.Model, version string) []string {
	var r []string
	if m.Spec.Traffic.Weights[version] > 0 {
		r = append(r, "serving")
	}
	if c := m.Spec.Canary; c != nil && c.Version == version {
		r = append(r, "canary")
	}
	if s := m.Spec.Shadow; s != nil && s.Version == version {
		r = append(r, "shadow")
	}
	if f := m.Spec.Fallback; f != nil && f.Backup == version {
		r = append(r, "backup")
	}
	return r
}

func fetchProxyStats(ctx context.Context, hc *http.Client, adminURL string) (json.RawMessage, error) {
	u := strings.TrimRight(adminURL, "/")
	if !strings.Contains(u, "://") {
		u = "http://" + u
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u+"/stats", nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach the proxy admin at %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s/stats: HTTP %d", u, resp.StatusCode)
	}
	if !json.Valid(b) {
		return nil, fmt.Errorf("%s/stats: not JSON", u)
	}
	return b, nil
}

// fillStats reads per-variant numbers from a stats document shaped like
// the proxy's /stats ({models: [{model, variants: [{variant, breaker,
// endpoints: [{attempts, failures}], p99Ms?, errorRate?}]}]}) or a
// control-plane aggregate with the same per-variant keys.
func fillStats(vs []variantView, raw []byte, model string) (source string) {
	var doc struct {
		Models   []statsModel   `json:"models"`
		Variants []statsVariant `json:"variants"`
		Window   string         `json:"window"`
		Proxies  []string       `json:"proxies"`
	}
	if json.Unmarshal(raw, &doc) != nil {
		return ""
	}
	if doc.Window != "" {
		source = fmt.Sprintf("the control plane, last %s, reports of %d proxies", doc.Window, len(doc.Proxies))
	}
	variants := doc.Variants
	for _, m := range doc.Models {
		if m.Model == model {
			variants = m.Variants
		}
	}
	for _, sv := range variants {
		name := first(sv.Variant, sv.Version)
		for i := range vs {
			if vs[i].Version != name {
				continue
			}
			if sv.Breaker != "" {
				b := sv.Breaker
				vs[i].Breaker = &b
			}
			var att, fail int64
			for _, e := range sv.Endpoints {
				att += e.Attempts
				fail += e.Failures
			}
			if sv.Requests != nil {
				att = *sv.Requests
			}
			if len(sv.Endpoints) > 0 || sv.Requests != nil {
				vs[i].Requests = &att
			}
			switch {
			case sv.ErrorRate != nil:
				vs[i].ErrorRate = sv.ErrorRate
			case att > 0:
				r := float64(fail) / float64(att)
				vs[i].ErrorRate = &r
			}
			vs[i].P99MS = sv.P99MS
			vs[i].Fallbacks, vs[i].NaNOutputs, vs[i].Errors = sv.Fallbacks, sv.NaNOutputs, sv.Errors
			vs[i].UpstreamFailures, vs[i].FailureRate, vs[i].BackupAnswers = sv.UpstreamFailures, sv.FailureRate, sv.BackupAnswers
			vs[i].ShadowCompared, vs[i].ShadowDisagreed = sv.ShadowCompared, sv.ShadowDisagreed
		}
	}
	return source
}

// fillBreakers copies only the breaker states from a proxy's /stats.
func fillBreakers(vs []variantView, raw []byte, model string) {
	var doc struct {
		Models []statsModel `json:"models"`
	}
	if json.Unmarshal(raw, &doc) != nil {
		return
	}
	for _, m := range doc.Models {
		if m.Model != model {
			continue
		}
		for _, sv := range m.Variants {
			for i := range vs {
				if vs[i].Version == sv.Variant && sv.Breaker != "" {
					b := sv.Breaker
					vs[i].Breaker = &b
				}
			}
		}
	}
}

type statsModel struct {
	Model    string         `json:"model"`
	Variants []statsVariant `json:"variants"`
}

type statsVariant struct {
	Variant    string            `json:"variant"`
	Version    string            `json:"version"`
	Breaker    string            `json:"breaker"`
	Requests   *int64            `json:"requests"`
	ErrorRate  *float64          `json:"errorRate"`
	P99MS      *float64          `json:"p99Ms"`
	Fallbacks  *uint64           `json:"fallbacks"`
	NaNOutputs *uint64           `json:"nanOutputs"`
	Errors     map[string]uint64 `json:"errors"`
	// From a control plane of this release (absent from older ones).
	UpstreamFailures map[string]uint64 `json:"upstreamFailures"`
	FailureRate      *float64          `json:"upstreamFailureRate"`
	BackupAnswers    *uint64           `json:"backupAnswers"`
	ShadowCompared   *uint64           `json:"shadowCompared"`
	ShadowDisagreed  *uint64           `json:"shadowDisagreed"`
	Endpoints        []struct {
		Attempts int64 `json:"attempts"`
		Failures int64 `json:"failures"`
	} `json:"endpoints"`
}

func na[T any](p *T, f func(T) string) string {
	if p == nil {
		return "n/a"
	}
	return f(*p)
}

func printDescribe(w io.Writer, v describeView) error {
	m := &v.Model.Model
	s := &m.Spec
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	p("Name:        %s", m.Metadata.Name)
	p("Endpoint:    /v2/models/%s/infer", m.Metadata.Name)
	created := ""
	if v.Model.CreateRevision > 0 && v.Model.CreateRevision != v.Model.Revision {
		created = fmt.Sprintf(", created at revision %d", v.Model.CreateRevision)
	}
	p("Revision:    %d (%s by %s%s)", v.Model.Revision, timeString(v.Model.Time), first(v.Model.Subject, "unknown"), created)
	if len(m.Metadata.Labels) > 0 {
		keys := make([]string, 0, len(m.Metadata.Labels))
		for k := range m.Metadata.Labels {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for i, k := range keys {
			keys[i] = k + "=" + m.Metadata.Labels[k]
		}
		p("Labels:      %s", strings.Join(keys, ", "))
	}
	retries := "off"
	if r := s.Retries; r != nil {
		retries = fmt.Sprintf("%d (budget %s%% of active requests)", r.Attempts, fmtFloat(r.BudgetPercent, -1))
	}
	p("Timeout:     %s   Retries: %s", s.Timeout, retries)
	sticky := "none (weighted random)"
	if s.Traffic.StickyHeader != "" {
		sticky = "header " + s.Traffic.StickyHeader
	}
	p("Traffic:     sticky by %s; override header %s", sticky, s.Traffic.OverrideHeader)
	p("Versions:")
	t := newTable(w, "  VERSION", "WEIGHT", "SHARE", "ROLE", "PROTOCOL", "BACKEND MODEL", "ENDPOINTS", "BREAKER", "REQUESTS", "ERROR RATE", "P99", "FALLBACKS", "NaN", "FAILED", "AS BACKUP", "AS SHADOW", "ERRORS")
	count := func(n uint64) string { return strconv.FormatUint(n, 10) }
	for _, vv := range v.Variants {
		t.row("  "+vv.Version, vv.Weight, fmtFloat(vv.Share*100, 0)+"%", strings.Join(vv.Roles, ","), vv.Protocol, vv.BackendModel,
			strings.Join(vv.Endpoints, ","), na(vv.Breaker, func(s string) string { return s }),
			na(vv.Requests, func(n int64) string { return strconv.FormatInt(n, 10) }),
			na(vv.ErrorRate, func(x float64) string { return fmtFloat(x*100, 2) + "%" }),
			na(vv.P99MS, func(x float64) string { return fmtFloat(x, 1) + "ms" }),
			na(vv.Fallbacks, count), na(vv.NaNOutputs, count),
			na(vv.FailureRate, func(x float64) string { return fmtFloat(x*100, 2) + "%" }),
			na(vv.BackupAnswers, count), shadowed(vv), errorKinds(vv))
	}
	if err := t.flush(); err != nil {
		return err
	}
	if v.StatsSource != "" {
		p("  (live figures: %s)", v.StatsSource)
	}
	if c := s.Canary; c != nil {
		steps := make([]string, len(c.Steps))
		for i, x := range c.Steps {
			steps[i] = strconv.Itoa(x) + "%"
		}
		p("Canary:      %s, steps %s, at least %s and %d requests per step", c.Version, strings.Join(steps, " → "), c.StepDuration, c.MinRequests)
		items := []string{fmt.Sprintf("gates: error rate ≤ %s, p99 ≤ %s× baseline, NaN rate ≤ %s, rollback after %d failed analyses",
			pct(c.MaxErrorRate), fmtFloat(c.MaxP99Ratio, -1), pct(c.MaxNaNRate), c.ConsecutiveFailures)}
		items = append(items, canarySummary(v.Canary, &v.Model)...)
		branches(w, "", items)
	} else {
		p("Canary:      none")
	}
	if sh := s.Shadow; sh != nil {
		cmp := sh.Compare.Mode
		switch sh.Compare.Mode {
		case api.CompareTopK:
			cmp += fmt.Sprintf(" k=%d", sh.Compare.K)
		case api.CompareNumeric:
			cmp += fmt.Sprintf(" absTol=%g relTol=%g", sh.Compare.AbsTol, sh.Compare.RelTol)
		}
		p("Shadow:      %s at %s%% (%s sampling), compare %s", sh.Version, fmtFloat(sh.Percent, -1), sh.Sampling, cmp)
		branches(w, "", []string{"agreement: " + shadowAgreement(v.Shadow), "details: syctl shadow report " + m.Metadata.Name})
	} else {
		p("Shadow:      none")
	}
	if f := s.Fallback; f != nil {
		chain := make([]string, len(f.Chain))
		for i, c := range f.Chain {
			chain[i] = c
			if c == api.FallbackBackup && f.Backup != "" {
				chain[i] = "backup (" + f.Backup + ")"
			}
		}
		p("Fallback:    %s; breaker opens after %d consecutive failures for %s", strings.Join(chain, " → "), f.Breaker.ConsecutiveFailures, f.Breaker.OpenFor)
	} else {
		p("Fallback:    none")
	}
	if c := s.Cache; c.On() {
		co := "off"
		if c.CoalesceOn() {
			co = "on"
		}
		p("Cache:       ttl %s, up to %d entries, coalescing %s", c.TTL, c.MaxEntries, co)
	} else {
		p("Cache:       off")
	}
	if ap := v.Applied; ap != nil {
		line := fmt.Sprintf("%d/%d proxies have applied revision %d", ap.Applied, ap.Proxies, ap.Revision)
		if len(ap.Behind) > 0 {
			line += "; behind: " + strings.Join(ap.Behind, ", ")
		}
		p("Proxies:     %s", line)
		for _, n := range ap.Nacked {
			p("  NACK:      %s", n)
		}
	}
	for _, u := range v.Unavailable {
		p("Note:        %s", u)
	}
	return nil
}

// shadowAgreement summarises a shadow report (shadow.Report's JSON).
func shadowAgreement(raw json.RawMessage) string {
	if raw == nil {
		return "n/a"
	}
	var r struct {
		Shadow struct {
			Compared      float64 `json:"compared"`
			AgreementRate float64 `json:"agreement_rate"`
			ShadowErrors  float64 `json:"shadow_errors"`
			ShadowNaN     float64 `json:"shadow_nan"`
		} `json:"shadow"`
	}
	if json.Unmarshal(raw, &r) != nil {
		return strings.TrimSpace(string(raw))
	}
	if r.Shadow.Compared == 0 {
		return "no comparisons yet"
	}
	return fmt.Sprintf("%s of %s compared pairs agree; shadow errors %s, NaN answers %s",
		fmtFloat(r.Shadow.AgreementRate*100, 1)+"%", fmtFloat(r.Shadow.Compared, -1), fmtFloat(r.Shadow.ShadowErrors, -1), fmtFloat(r.Shadow.ShadowNaN, -1))
}

// canarySummary is the canary status as describe's tree items: phase and
// step, the newest decision and why, the gates' verdicts. A finished run
// older than the document (the controller has not acted on the change
// yet) is said to be the previous one.
func canarySummary(raw json.RawMessage, mr *api.ModelResponse) []string {
	if raw == nil {
		return []string{"status: n/a"}
	}
	var s api.CanaryStatus
	if json.Unmarshal(raw, &s) != nil {
		return []string{"status: " + strings.TrimSpace(string(raw))}
	}
	name := mr.Model.Metadata.Name
	phase := s.Phase
	if s.Step > 0 {
		phase += fmt.Sprintf(", step %d of %d (%s at %d%%)", s.Step, len(s.Steps), s.Canary, s.StepWeight)
	}
	if s.TimeInStep != "" && (s.Phase == "progressing" || s.Phase == "paused") {
		phase += ", " + roundDuration(s.TimeInStep) + " in step"
	}
	// The controller writes the revision that ends a run just after the
	// run's last event: that revision is the run's own, not a change since.
	if n := len(s.History); n > 0 && (s.Phase == "promoted" || s.Phase == "rolled_back") && s.History[n-1].Time.Before(mr.Time) && mr.Subject != "canary-controller" { // canaryctl.Subject
		phase += fmt.Sprintf(" (the previous run, ended %s; the document changed since, at revision %d: the controller acts on it at its next tick)",
			timeString(s.History[n-1].Time), mr.Revision)
	}
	items := []string{"phase: " + phase}
	reason := restToCommands(s.Reason, name, s.Canary)
	if s.Decision != "" {
		items = append(items, "decision: "+s.Decision+": "+reason)
	} else if reason != "" {
		items = append(items, "status: "+reason)
	}
	if len(s.Gates) > 0 {
		var gs []string
		for _, g := range s.Gates {
			gs = append(gs, fmt.Sprintf("%s %s %s", gateMark(g.Status), g.Name, gateValue(g.Name, g.Value)))
		}
		items = append(items, "gates now: "+strings.Join(gs, ", "))
	}
	return append(items, "details: syctl canary status "+name)
}

// fillMetrics sets requests, error rate and p99 from a proxy's metrics.
func fillMetrics(vs []variantView, nums map[string]*variantNumbers) {
	for i := range vs {
		n := nums[vs[i].Version]
		if n == nil {
			continue
		}
		req := int64(n.Requests)
		vs[i].Requests = &req
		vs[i].ErrorRate = nil
		if n.Requests > 0 {
			r := float64(n.Errors) / float64(n.Requests)
			vs[i].ErrorRate = &r
		}
		vs[i].P99MS = n.P99MS
	}
}

// errorKinds lists a variant's errors as the clients got them and, marked
// "failed:", the version's own failures by trigger, those a fallback
// answered for included.
func errorKinds(vv variantView) string {
	var kinds []string
	for _, k := range sortedKeys(vv.Errors) {
		kinds = append(kinds, fmt.Sprintf("%s=%d", k, vv.Errors[k]))
	}
	for _, k := range sortedKeys(vv.UpstreamFailures) {
		kinds = append(kinds, fmt.Sprintf("failed:%s=%d", k, vv.UpstreamFailures[k]))
	}
	return strings.Join(kinds, " ")
}

// shadowed is the AS SHADOW cell: comparisons as the shadow, and how many
// disagreed ("120 (3 differ)").
func shadowed(vv variantView) string {
	if vv.ShadowCompared == nil {
		return "n/a"
	}
	out := strconv.FormatUint(*vv.ShadowCompared, 10)
	if vv.ShadowDisagreed != nil && *vv.ShadowDisagreed > 0 {
		out += fmt.Sprintf(" (%d differ)", *vv.ShadowDisagreed)
	}
	return out
}
