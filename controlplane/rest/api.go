// Package rest is the control plane's REST API (JSON): models, weights,
// rollback, history, audit, proxies, and the canary, stats, shadow report
// and static fallback endpoints, each behind a role (controlplane/auth),
// counted and timed. Writes go to the store; the xDS side
// (controlplane/xds) publishes them, and the API waits for the proxies'
// ACKs through the small Snapshots and Proxies interfaces below. Writes
// over a running canary are judged by the canary controller
// (controlplane/canaryctl) first.
package rest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/switchyard-dev/switchyard/api"
	"github.com/switchyard-dev/switchyard/controlplane/auth"
	"github.com/switchyard-dev/switchyard/controlplane/canaryctl"
	"github.com/switchyard-dev/switchyard/controlplane/stats"
	"github.com/switchyard-dev/switchyard/controlplane/store"
	"github.com/switchyard-dev/switchyard/internal/seclog"
	"github.com/switchyard-dev/switchyard/internal/tlsutil"
)

// DefaultMaxBodyBytes caps request bodies.
const DefaultMaxBodyBytes = 1 << 20

// maxAckWait caps the waitForAck of a write (rollback, weights, put).
const maxAckWait = 60 * time.Second

// defaultRollbackAckWait bounds how long a rollback answer waits for the
// connected proxies' ACKs when the request does not say.
const defaultRollbackAckWait = 5 * time.Second

// HandlerFunc is an API handler that knows its authenticated caller.
type HandlerFunc func(w http.ResponseWriter, r *http.Request, caller auth.Identity)

// Snapshots is the xDS side's snapshot publishing (xds.Server).
type Snapshots interface {
	// Version is the store revision of the snapshot being served.
	Version() int64
	// WaitPublished waits until a snapshot of at least revision rev is
	// served, or ctx is done.
	WaitPublished(ctx context.Context, rev int64) error
}

// Proxies is the proxies' ACK/NACK state (xds.Tracker).
type Proxies interface {
	Proxies() []api.ProxyStatus
	Status(version string) api.AckResult
	Wait(ctx context.Context, version string) api.AckResult
}

// Options of an API.
type Options struct {
	Store     store.Store
	Auth      *auth.Authenticator
	Snapshots Snapshots
	Proxies   Proxies
	// Gatherer is served on /metrics (nil: no /metrics); Registerer takes
	// the API's metrics (nil: not registered).
	Gatherer   prometheus.Gatherer
	Registerer prometheus.Registerer
	// Logger (nil: discard).
	Logger *slog.Logger
	// MaxBodyBytes caps request bodies (0: DefaultMaxBodyBytes).
	MaxBodyBytes int64
	// Shadow asks the proxies' admin pages for the shadow report.
	Shadow stats.ShadowGatherer
	// Seclog records refused calls (401/403; nil: not recorded).
	Seclog *seclog.Log
}

// API is the REST API (JSON) over a Store.
//
// Endpoints (role needed in brackets):
//
//	GET    /v1/models                      [viewer]   list
//	GET    /v1/models/{name}               [viewer]   one model; ETag = revision
//	PUT    /v1/models/{name}               [editor]   create/replace (If-Match / If-None-Match: *; ?force=true; ?waitForAck=10s)
//	DELETE /v1/models/{name}               [operator] delete (If-Match)
//	GET    /v1/models/{name}/history       [viewer]   revisions, newest first (?limit=)
//	PUT    /v1/models/{name}/weights       [editor]   change weights only (force: true / ?force=true; waitForAck)
//	POST   /v1/models/{name}/rollback      [operator] restore the previous or a named revision (aborts a running canary first)
//	GET    /v1/audit                       [viewer]   audit log (?model=&before=&limit=)
//	GET    /v1/proxies                     [viewer]   connected proxies and their ACK/NACK state
//	GET    /metrics, /healthz              (no auth)
//
// Later features add their endpoints with Handle (see routes below):
// /v1/models/{name}/canary (EnableCanary), /v1/models/{name}/shadow/report,
// the static fallback replacement.
type API struct {
	store     store.Store
	auth      *auth.Authenticator
	acks      Proxies
	snapshots Snapshots
	metrics   *metrics
	log       *slog.Logger
	maxBody   int64
	mux       *http.ServeMux
	gatherer  prometheus.Gatherer
	// canary, when the canary controller is enabled, guards writes that
	// would change a running canary's weights (canaryctl/guard.go);
	// stats serves the stats endpoint; ackWait is how long a canary
	// action waits for ACKs when the request does not say.
	canary  *canaryctl.Controller
	stats   *stats.Service
	ackWait time.Duration
	// shadow gathers the shadow report from the proxies.
	shadow stats.ShadowGatherer
	// seclog records refused calls (401/403; nil: not recorded).
	seclog *seclog.Log
}

// New builds the API with its endpoints.
func New(o Options) *API {
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	a := &API{store: o.Store, auth: o.Auth, acks: o.Proxies, snapshots: o.Snapshots, metrics: newMetrics(o.Registerer), log: o.Logger,
		maxBody: o.MaxBodyBytes, mux: http.NewServeMux(), gatherer: o.Gatherer, shadow: o.Shadow, seclog: o.Seclog}
	a.routes()
	return a
}

// routes is the one place the API's endpoints are listed.
func (a *API) routes() {
	a.Handle("GET /v1/models", auth.RoleViewer, a.listModels)
	a.Handle("GET /v1/models/{name}", auth.RoleViewer, a.getModel)
	a.Handle("PUT /v1/models/{name}", auth.RoleEditor, a.putModel)
	a.Handle("DELETE /v1/models/{name}", auth.RoleOperator, a.deleteModel)
	a.Handle("GET /v1/models/{name}/history", auth.RoleViewer, a.history)
	a.Handle("PUT /v1/models/{name}/weights", auth.RoleEditor, a.putWeights)
	a.Handle("POST /v1/models/{name}/rollback", auth.RoleOperator, a.rollback)
	a.Handle("GET /v1/audit", auth.RoleViewer, a.audit)
	a.Handle("GET /v1/proxies", auth.RoleViewer, a.proxies)
	a.Handle("GET /v1/security/events", auth.RoleOperator, func(w http.ResponseWriter, r *http.Request, _ auth.Identity) {
		if a.seclog == nil {
			writeJSON(w, http.StatusOK, map[string]any{"events": []any{}, "suppressed": 0})
			return
		}
		a.seclog.Handler().ServeHTTP(w, r)
	})
	a.fallbackRoutes() // PUT /v1/models/{name}/fallback/static (fallback.go)
	a.shadowRoutes()   // GET /v1/models/{name}/shadow/report (shadow.go)
	// Next: "PUT /v1/models/{name}/canary" (auth.RoleEditor), "POST
	// /v1/models/{name}/canary/{action}" (auth.RoleOperator), "POST
	// /v1/models/{name}/shadow/report" (proxies), "PUT
	// /v1/models/{name}/fallback/static" (auth.RoleEditor) — registered by their
	// packages through Handle.
	if a.gatherer != nil {
		a.mux.Handle("GET /metrics", promhttp.HandlerFor(a.gatherer, promhttp.HandlerOpts{}))
	}
	a.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, api.Health{OK: true, SnapshotVersion: a.snapshots.Version()})
	})
}

// Handle registers an endpoint (a net/http pattern such as
// "PUT /v1/models/{name}/canary") that needs at least role.
func (a *API) Handle(pattern string, role auth.Role, h HandlerFunc) {
	a.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		id, ok := a.auth.Authenticate(r)
		if !ok {
			reason := seclog.NoCredential
			if r.Header.Get("Authorization") != "" {
				reason = seclog.BadCredential
			}
			a.refused(r, "", reason, "missing or invalid bearer token")
			w.Header().Set("WWW-Authenticate", `Bearer realm="switchyard"`)
			writeError(w, http.StatusUnauthorized, "missing or invalid bearer token", nil)
			return
		}
		if id.Role < role {
			msg := fmt.Sprintf("%s has role %s; this needs %s", id.Subject, id.Role, role)
			a.refused(r, id.Subject, seclog.NotAllowed, msg)
			writeError(w, http.StatusForbidden, msg, nil)
			return
		}
		h(w, r, id)
	})
}

// refused records a 401/403 in the security log.
func (a *API) refused(r *http.Request, subject string, reason seclog.Reason, detail string) {
	if subject == "" {
		subject = tlsutil.PeerIdentity(r.TLS) // a verified client certificate, if any
	}
	if a.seclog != nil {
		a.seclog.Refuse(seclog.Event{Subject: subject, Remote: r.RemoteAddr, Method: r.Method, Path: r.URL.Path, Reason: reason, Detail: detail})
	}
}

// ServeHTTP counts and times every request.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
	_, pattern := a.mux.Handler(r)
	if pattern == "" {
		a.unmatched(sw, r)
		pattern = "unmatched"
	} else {
		a.mux.ServeHTTP(sw, r)
	}
	a.metrics.requests.WithLabelValues(r.Method, pattern, strconv.Itoa(sw.code)).Inc()
	a.metrics.duration.WithLabelValues(pattern).Observe(time.Since(start).Seconds())
}

// unmatched answers a request no endpoint takes with a JSON error naming
// the path: 404, or 405 with Allow when the path exists for other methods
// (the mux's own answers are plain text).
func (a *API) unmatched(w http.ResponseWriter, r *http.Request) {
	h, _ := a.mux.Handler(r)
	rec := &captureWriter{header: http.Header{}}
	h.ServeHTTP(rec, r)
	switch rec.code {
	case http.StatusMethodNotAllowed, http.StatusNotFound:
		// Tells a client "this server has no such route" apart from "no
		// such model" (both 404): syctl says which.
		w.Header().Set(HeaderUnknownRoute, "true")
	}
	switch rec.code {
	case http.StatusMethodNotAllowed:
		allow := rec.header.Get("Allow")
		w.Header().Set("Allow", allow)
		writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("%s %s: method not allowed (allowed: %s)", r.Method, r.URL.Path, allow), nil)
	case http.StatusNotFound:
		writeError(w, http.StatusNotFound, fmt.Sprintf("unknown path %s (the API serves /v1/models, /v1/models/{name}[/...], /v1/audit, /v1/proxies, /healthz, /metrics)", r.URL.Path), nil)
	default: // e.g. the mux's redirect to a cleaned path
		for k, v := range rec.header {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.code)
		w.Write(rec.body.Bytes())
	}
}

// HeaderUnknownRoute marks a 404/405 answered because the API has no such
// route (as opposed to a missing model).
const HeaderUnknownRoute = "X-Switchyard-Unknown-Route"

// captureWriter records an answer to be rewritten.
type captureWriter struct {
	header http.Header
	code   int
	body   bytes.Buffer
}

func (c *captureWriter) Header() http.Header { return c.header }
func (c *captureWriter) WriteHeader(code int) {
	if c.code == 0 {
		c.code = code
	}
}
func (c *captureWriter) Write(b []byte) (int, error) {
	if c.code == 0 {
		c.code = http.StatusOK
	}
	return c.body.Write(b)
}

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (s *statusWriter) WriteHeader(code int) {
	s.code = code
	s.ResponseWriter.WriteHeader(code)
}

func modelResponse(r api.Record) api.ModelResponse {
	return api.ModelResponse{Revision: r.Revision, CreateRevision: r.CreateRevision, Time: r.Time, Subject: r.Subject, Model: r.Model}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string, fields []api.FieldError) {
	writeJSON(w, code, api.ErrorResponse{Error: msg, Fields: fields})
}

func etag(rev int64) string { return `"` + strconv.FormatInt(rev, 10) + `"` }

// storeError maps store errors to HTTP answers.
func (a *API) storeError(w http.ResponseWriter, r *http.Request, err error) {
	var ve api.ValidationError
	switch {
	case errors.As(err, &ve):
		writeError(w, http.StatusBadRequest, ve.Error(), ve)
	case errors.Is(err, store.ErrNotFound):
		writeError(w, http.StatusNotFound, err.Error(), nil)
	case errors.Is(err, store.ErrConflict):
		body := api.ErrorResponse{Error: err.Error()}
		if cur, gerr := a.store.Get(r.Context(), r.PathValue("name")); gerr == nil {
			body.Revision = cur.Revision
			w.Header().Set("ETag", etag(cur.Revision))
		}
		writeJSON(w, http.StatusConflict, body)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		writeError(w, http.StatusServiceUnavailable, err.Error(), nil)
	case store.OutOfSpace(err):
		a.log.Error("state write failed: out of space", "method", r.Method, "path", r.URL.Path, "err", err)
		writeError(w, http.StatusInsufficientStorage, "state write failed, nothing was changed: the state file has no room (disk full or file size limit): "+err.Error(), nil)
	default:
		a.log.Error("store error", "method", r.Method, "path", r.URL.Path, "err", err)
		writeError(w, http.StatusInternalServerError, "store error: "+err.Error(), nil)
	}
}

// readBody reads at most maxBody bytes; an empty body is allowed when
// optional.
func (a *API) readBody(w http.ResponseWriter, r *http.Request, optional bool) ([]byte, bool) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, a.maxBody))
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		writeError(w, http.StatusBadRequest, fmt.Sprintf("body: larger than %d bytes", a.maxBody), []api.FieldError{{Field: "body", Message: fmt.Sprintf("larger than %d bytes", a.maxBody)}})
		return nil, false
	case err != nil:
		writeError(w, http.StatusBadRequest, "body: "+err.Error(), nil)
		return nil, false
	case len(strings.TrimSpace(string(b))) == 0 && !optional:
		writeError(w, http.StatusBadRequest, "body: empty; want a JSON document", []api.FieldError{{Field: "body", Message: "empty"}})
		return nil, false
	}
	return b, true
}

func badDecode(w http.ResponseWriter, err error) {
	var ve api.ValidationError
	if errors.As(err, &ve) {
		writeError(w, http.StatusBadRequest, ve.Error(), ve)
		return
	}
	writeError(w, http.StatusBadRequest, err.Error(), nil)
}

// precondition reads If-Match ("N" or *) and If-None-Match (*).
func precondition(r *http.Request) (store.Precondition, error) {
	var p store.Precondition
	if inm := strings.TrimSpace(r.Header.Get("If-None-Match")); inm != "" {
		if inm != "*" {
			return p, fmt.Errorf("If-None-Match: only * is supported")
		}
		p.MustNotExist = true
	}
	im := strings.TrimSpace(r.Header.Get("If-Match"))
	switch {
	case im == "":
	case im == "*":
		p.MustExist = true
	default:
		rev, err := strconv.ParseInt(strings.Trim(strings.TrimPrefix(im, "W/"), `"`), 10, 64)
		if err != nil || rev <= 0 {
			return p, fmt.Errorf("If-Match: want a revision ETag such as \"12\", got %s", im)
		}
		p.IfRevision = rev
	}
	return p, nil
}

func change(r *http.Request, caller auth.Identity, action, reason string) store.Change {
	if reason == "" {
		reason = r.Header.Get("X-Switchyard-Reason")
	}
	return store.Change{Subject: caller.Subject, Action: action, Reason: reason}
}

func (a *API) listModels(w http.ResponseWriter, r *http.Request, _ auth.Identity) {
	recs, rev, err := a.store.List(r.Context())
	if err != nil {
		a.storeError(w, r, err)
		return
	}
	items := make([]api.ModelResponse, len(recs))
	for i, rec := range recs {
		items[i] = modelResponse(rec)
	}
	writeJSON(w, http.StatusOK, api.ModelList{Items: items, Revision: rev})
}

func (a *API) getModel(w http.ResponseWriter, r *http.Request, _ auth.Identity) {
	rec, err := a.store.Get(r.Context(), r.PathValue("name"))
	if err != nil {
		a.storeError(w, r, err)
		return
	}
	resp := modelResponse(rec)
	if resp.FailedVersions, err = a.store.Failed(r.Context(), rec.Model.Metadata.Name); err != nil {
		a.storeError(w, r, err)
		return
	}
	if len(resp.FailedVersions) == 0 {
		resp.FailedVersions = nil
	}
	w.Header().Set("ETag", etag(rec.Revision))
	writeJSON(w, http.StatusOK, resp)
}

// forceParam reads ?force=true (or a body's force field, when set).
func forceParam(r *http.Request, body bool) (bool, error) {
	q := r.URL.Query().Get("force")
	if q == "" {
		return body, nil
	}
	v, err := strconv.ParseBool(q)
	if err != nil {
		return false, fmt.Errorf("query parameter force: want true or false, got %q", q)
	}
	return v || body, nil
}

// putModel creates or replaces a model. The body is the Model document in
// JSON (or YAML with a Content-Type naming yaml).
func (a *API) putModel(w http.ResponseWriter, r *http.Request, caller auth.Identity) {
	name := r.PathValue("name")
	pre, err := precondition(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error(), nil)
		return
	}
	body, ok := a.readBody(w, r, false)
	if !ok {
		return
	}
	var m api.Model
	if strings.Contains(r.Header.Get("Content-Type"), "yaml") {
		m, err = api.DecodeYAML(body)
	} else {
		m, err = api.DecodeJSON(body)
	}
	if err != nil {
		badDecode(w, err)
		return
	}
	if m.Metadata.Name == "" {
		m.Metadata.Name = name
	}
	if m.Metadata.Name != name {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("metadata.name: %q does not match the name in the URL %q", m.Metadata.Name, name),
			[]api.FieldError{{Field: "metadata.name", Message: fmt.Sprintf("%q does not match the name in the URL %q", m.Metadata.Name, name)}})
		return
	}
	if err := api.Normalize(&m); err != nil {
		badDecode(w, err)
		return
	}
	force, err := forceParam(r, false)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error(), nil)
		return
	}
	wait, err := ackWaitParam(r, 0)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error(), nil)
		return
	}
	written := time.Now()
	rec, ok := a.guardedPut(w, r, caller, m, pre, force)
	if !ok {
		return
	}
	code := http.StatusOK
	if rec.CreateRevision == rec.Revision {
		code = http.StatusCreated
	}
	resp := modelResponse(rec)
	if wait > 0 {
		resp.Proxies = waitApplied(r.Context(), a.WaitApplied, rec.Revision, written, wait)
	}
	a.log.Info("model stored", "model", name, "revision", rec.Revision, "subject", caller.Subject)
	w.Header().Set("ETag", etag(rec.Revision))
	writeJSON(w, code, resp)
}

// windowParam reads ?window=DURATION (def when absent): the span of a
// figures' window, in (0, max].
func windowParam(r *http.Request, def, max time.Duration) (time.Duration, error) {
	q := r.URL.Query().Get("window")
	if q == "" {
		return def, nil
	}
	d, err := time.ParseDuration(q)
	if err != nil || d <= 0 || d > max {
		return 0, fmt.Errorf("query parameter window: want a duration in (0, %s] such as 1m, got %q", max, q)
	}
	return d, nil
}

// ackWaitParam reads ?waitForAck=DURATION (or a body's waitForAck, when
// set): how long a write's answer waits for the connected proxies to apply
// it ("applied on N/N proxies in T ms"); 0 answers at once.
func ackWaitParam(r *http.Request, body api.Duration) (time.Duration, error) {
	wait := body.D()
	if q := r.URL.Query().Get("waitForAck"); q != "" {
		d, err := time.ParseDuration(q)
		if err != nil {
			return 0, fmt.Errorf("query parameter waitForAck: want a duration such as 10s, got %q", q)
		}
		wait = d
	}
	if wait < 0 || wait > maxAckWait {
		return 0, fmt.Errorf("waitForAck: want 0s..%s, got %s", maxAckWait, wait)
	}
	return wait, nil
}

// guardedPut stores m. With the canary controller enabled, a write over a
// running canary is judged first (judgeWrite): one that changes the
// canary's weights is refused (409 with hints) unless forced, which aborts
// the canary first; one that carries the split from before the canary
// keeps the canary's weights, and is a no-op (200, unchanged) when nothing
// else differs. It then writes with the revision it judged (retrying a
// lost race when the request pinned none), so the canary cannot move in
// between. On a problem it has answered and returns false.
func (a *API) guardedPut(w http.ResponseWriter, r *http.Request, caller auth.Identity, m api.Model, pre store.Precondition, force bool) (api.Record, bool) {
	ctx := r.Context()
	name := m.Metadata.Name
	for attempt := 0; ; attempt++ {
		next := m.Clone()
		writePre, retry := pre, false
		if a.canary != nil && !pre.MustNotExist {
			cur, err := a.store.Get(ctx, name)
			switch {
			case errors.Is(err, store.ErrNotFound):
			case err != nil:
				a.storeError(w, r, err)
				return api.Record{}, false
			case pre.IfRevision > 0 && cur.Revision != pre.IfRevision:
				a.storeError(w, r, fmt.Errorf("model %q is at revision %d, not %d: %w", name, cur.Revision, pre.IfRevision, store.ErrConflict))
				return api.Record{}, false
			default:
				v := a.canary.Judge(name, &cur.Model, &next, false)
				switch v.Outcome {
				case canaryctl.WriteConflict:
					if !force {
						answerConflict(w, v.Conflict(forceHint(name, v.Canary, http.MethodPut, modelAPIPath(name)+"?force=true", nil)))
						return api.Record{}, false
					}
					ab, err := a.canary.AbortFor(ctx, name, cur.Revision, caller.Subject, "document with other weights applied with force by "+caller.Subject)
					if err != nil {
						a.actionError(w, r, err)
						return api.Record{}, false
					}
					if ab != nil && pre.IfRevision > 0 {
						pre.IfRevision = ab.Revision // the revision the caller saw, aborted on their behalf
					}
					if attempt < casAttempts {
						continue
					}
				case canaryctl.WriteKeep:
					next.Spec.Traffic.Weights = maps.Clone(cur.Model.Spec.Traffic.Weights)
					if sameDocument(&next, &cur.Model) {
						resp := modelResponse(cur)
						resp.Unchanged = true
						w.Header().Set("ETag", etag(cur.Revision))
						writeJSON(w, http.StatusOK, resp)
						return api.Record{}, false
					}
				}
				if writePre.IfRevision == 0 {
					writePre.IfRevision, retry = cur.Revision, true
				}
			}
		}
		rec, err := a.store.Put(ctx, next, writePre, change(r, caller, "put", ""))
		if errors.Is(err, store.ErrConflict) && retry && attempt < casAttempts {
			continue
		}
		if err != nil {
			a.storeError(w, r, err)
			return api.Record{}, false
		}
		return rec, true
	}
}

// actionError answers an error of a canary action taken on a request's
// behalf.
func (a *API) actionError(w http.ResponseWriter, r *http.Request, err error) {
	var ce canaryctl.ConflictError
	if errors.As(err, &ce) {
		answerConflict(w, ce)
		return
	}
	a.storeError(w, r, err)
}

func (a *API) deleteModel(w http.ResponseWriter, r *http.Request, caller auth.Identity) {
	pre, err := precondition(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error(), nil)
		return
	}
	rec, err := a.store.Delete(r.Context(), r.PathValue("name"), pre, change(r, caller, "delete", ""))
	if err != nil {
		a.storeError(w, r, err)
		return
	}
	a.log.Info("model deleted", "model", r.PathValue("name"), "revision", rec.Revision, "subject", caller.Subject)
	writeJSON(w, http.StatusOK, api.DeleteResponse{Deleted: true, Revision: rec.Revision})
}

func intParam(r *http.Request, name string, def, maxV int64) (int64, error) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return def, nil
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 0 || v > maxV {
		return 0, fmt.Errorf("query parameter %s: want an integer 0..%d, got %q", name, maxV, s)
	}
	return v, nil
}

func (a *API) history(w http.ResponseWriter, r *http.Request, _ auth.Identity) {
	limit, err := intParam(r, "limit", 0, 100000)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error(), nil)
		return
	}
	recs, err := a.store.History(r.Context(), r.PathValue("name"), int(limit))
	if err != nil {
		a.storeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, api.History{Items: recs})
}

// casAttempts bounds read-modify-write retries when no If-Match was given.
const casAttempts = 16

// putWeights replaces spec.traffic.weights atomically: with If-Match it
// applies to that revision only (else 409); without, it applies to the
// current revision, retrying if another write lands in between.
func (a *API) putWeights(w http.ResponseWriter, r *http.Request, caller auth.Identity) {
	name := r.PathValue("name")
	req, pre, ok := decodePatch[api.WeightsRequest](a, w, r)
	if !ok {
		return
	}
	if len(req.Weights) == 0 {
		writeError(w, http.StatusBadRequest, "weights: required", []api.FieldError{{Field: "weights", Message: "required: version name to integer weight"}})
		return
	}
	force, err := forceParam(r, req.Force)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error(), nil)
		return
	}
	wait, err := ackWaitParam(r, req.WaitForAck)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error(), nil)
		return
	}
	written := time.Now()
	var aborted *api.AbortedCanary
	if a.canary != nil && force {
		cur, err := a.store.Get(r.Context(), name)
		if err != nil {
			a.storeError(w, r, err)
			return
		}
		next := cur.Model.Clone()
		next.Spec.Traffic.Weights = req.Weights
		if a.canary.Judge(name, &cur.Model, &next, true).Outcome == canaryctl.WriteConflict {
			why := "weights set with force by " + caller.Subject
			if req.Reason != "" {
				why += ": " + req.Reason
			}
			if aborted, err = a.canary.AbortFor(r.Context(), name, pre.IfRevision, caller.Subject, why); err != nil {
				a.actionError(w, r, err)
				return
			}
			if aborted != nil && pre.IfRevision > 0 {
				pre.IfRevision = aborted.Revision
			}
		}
	}
	rec, ok := a.patch(w, r, caller, name, pre, "weights", req.Reason, func(m *api.Model) bool {
		if a.canary != nil {
			next := m.Clone()
			next.Spec.Traffic.Weights = req.Weights
			if v := a.canary.Judge(name, m, &next, true); v.Outcome == canaryctl.WriteConflict {
				answerConflict(w, v.Conflict(forceHint(name, v.Canary, http.MethodPut, modelAPIPath(name)+"/weights",
					map[string]any{"weights": req.Weights, "force": true})))
				return false
			}
		}
		m.Spec.Traffic.Weights = req.Weights
		return true
	})
	if !ok {
		return
	}
	a.log.Info("weights changed", "model", name, "revision", rec.Revision, "weights", req.Weights, "subject", caller.Subject)
	resp := modelResponse(rec)
	resp.AbortedCanary = aborted
	if wait > 0 {
		resp.Proxies = waitApplied(r.Context(), a.WaitApplied, rec.Revision, written, wait)
	}
	writeJSON(w, http.StatusOK, resp)
}

// decodePatch reads what a patch endpoint needs from its request: the
// If-Match precondition and the strictly decoded JSON body (required). On a
// problem it has answered 400 naming it and returns false.
func decodePatch[T any](a *API, w http.ResponseWriter, r *http.Request) (req T, pre store.Precondition, ok bool) {
	pre, err := precondition(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error(), nil)
		return req, pre, false
	}
	body, ok := a.readBody(w, r, false)
	if !ok {
		return req, pre, false
	}
	if err := api.DecodeJSONInto(body, &req); err != nil {
		badDecode(w, err)
		return req, pre, false
	}
	return req, pre, true
}

// patch changes one part of a model as a new revision: mutate edits a copy
// of the current document (or writes its own refusal and returns false),
// the result is validated and stored. With an If-Match precondition it
// applies to that revision only (else 409); without, to the current one,
// retrying when another write lands in between, so concurrent editors of
// different parts never lose each other's change. On success the ETag is
// set and the new record returned.
func (a *API) patch(w http.ResponseWriter, r *http.Request, caller auth.Identity, name string, pre store.Precondition, action, reason string, mutate func(m *api.Model) bool) (api.Record, bool) {
	for attempt := 0; ; attempt++ {
		cur, err := a.store.Get(r.Context(), name)
		if err != nil {
			a.storeError(w, r, err)
			return api.Record{}, false
		}
		if pre.IfRevision > 0 && cur.Revision != pre.IfRevision {
			a.storeError(w, r, fmt.Errorf("model %q is at revision %d, not %d: %w", name, cur.Revision, pre.IfRevision, store.ErrConflict))
			return api.Record{}, false
		}
		m := cur.Model.Clone()
		if !mutate(&m) {
			return api.Record{}, false
		}
		if err := m.Validate(); err != nil {
			badDecode(w, err)
			return api.Record{}, false
		}
		rec, err := a.store.Put(r.Context(), m, store.Precondition{IfRevision: cur.Revision}, change(r, caller, action, reason))
		if errors.Is(err, store.ErrConflict) && pre.IfRevision == 0 && attempt < casAttempts {
			continue
		}
		if err != nil {
			a.storeError(w, r, err)
			return api.Record{}, false
		}
		w.Header().Set("ETag", etag(rec.Revision))
		return rec, true
	}
}

// rollback writes an earlier revision's document as a new revision. A
// deleted model can be restored too. It works at any time: a running
// canary is aborted first (its version marked failed); when that abort's
// split routes nothing to a failed version it is the answer (no second
// revision). Without a named revision it restores the newest revision
// whose split was healthy (RollbackTarget); a named revision that routes
// traffic to a failed version is refused (409, hint: reset it first).
func (a *API) rollback(w http.ResponseWriter, r *http.Request, caller auth.Identity) {
	name := r.PathValue("name")
	pre, err := precondition(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error(), nil)
		return
	}
	body, ok := a.readBody(w, r, true)
	if !ok {
		return
	}
	var req api.RollbackRequest
	if len(strings.TrimSpace(string(body))) > 0 {
		if err := api.DecodeJSONInto(body, &req); err != nil {
			badDecode(w, err)
			return
		}
	}
	if req.Revision < 0 || req.WaitForAck < 0 || req.WaitForAck.D() > maxAckWait {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("revision must be >= 0 and waitForAck 0..%s", maxAckWait), nil)
		return
	}
	reason := req.Reason
	if reason == "" {
		reason = r.Header.Get("X-Switchyard-Reason")
	}
	wait := req.WaitForAck.D()
	if wait == 0 {
		wait = defaultRollbackAckWait
	}
	written := time.Now()
	var aborted *api.AbortedCanary
	if a.canary != nil {
		why := "rollback requested by " + caller.Subject
		if reason != "" {
			why += ": " + reason
		}
		if aborted, err = a.canary.AbortFor(r.Context(), name, pre.IfRevision, caller.Subject, why); err != nil {
			a.actionError(w, r, err)
			return
		}
		if aborted != nil && pre.IfRevision > 0 {
			pre.IfRevision = aborted.Revision
		}
	}
	hist, err := a.store.History(r.Context(), name, 0)
	if err != nil {
		a.storeError(w, r, err)
		return
	}
	marks, err := a.store.Failed(r.Context(), name)
	if err != nil {
		a.storeError(w, r, err)
		return
	}
	failed := slices.Sorted(maps.Keys(marks))
	head := hist[0]
	if aborted != nil && req.Revision == 0 && head.Revision == aborted.Revision && canaryctl.RoutesToFailed(head.Model.Spec.Traffic.Weights, failed) == "" {
		resp := modelResponse(head)
		resp.AbortedCanary = aborted
		resp.Proxies = waitApplied(r.Context(), a.WaitApplied, head.Revision, written, wait)
		a.log.Warn("model rolled back: canary aborted", "model", name, "canary", aborted.Canary, "revision", head.Revision,
			"subject", caller.Subject, "applied", resp.Proxies.Message)
		w.Header().Set("ETag", etag(head.Revision))
		writeJSON(w, http.StatusOK, resp)
		return
	}
	var target *api.Record
	var skipped []api.SkippedRevision
	if req.Revision == 0 {
		// The last revision whose split was healthy: not a deletion, not
		// written mid-canary, no traffic to a version marked failed.
		target, skipped = canaryctl.RollbackTarget(hist, failed)
	}
	for i := range hist {
		if req.Revision > 0 && hist[i].Revision == req.Revision {
			target = &hist[i]
			break
		}
	}
	switch {
	case target == nil && req.Revision > 0:
		writeError(w, http.StatusNotFound, fmt.Sprintf("model %q has no revision %d in its history", name, req.Revision), nil)
		return
	case target == nil:
		msg := fmt.Sprintf("model %q has no earlier revision to roll back to", name)
		if len(skipped) > 0 {
			msg = fmt.Sprintf("model %q has no earlier revision with a healthy split to roll back to (%d skipped; name one with \"revision\")", name, len(skipped))
		}
		writeError(w, http.StatusConflict, msg, nil)
		return
	case target.Deleted:
		writeError(w, http.StatusBadRequest, fmt.Sprintf("revision %d is a deletion; name a revision that held the model", target.Revision), []api.FieldError{{Field: "revision", Message: "is a deletion"}})
		return
	}
	if v := canaryctl.RoutesToFailed(target.Model.Spec.Traffic.Weights, failed); v != "" {
		answerConflict(w, canaryctl.ConflictError{
			Msg:   fmt.Sprintf("revision %d sends traffic to version %q, which failed its canary (%s); reset it first to roll back to it", target.Revision, v, marks[v].Reason),
			Hints: []api.Hint{canaryctl.ResetHint(name, v)},
		})
		return
	}
	if pre == (store.Precondition{}) {
		pre.IfRevision = head.Revision // roll back from what we looked at
		if head.Deleted {
			pre = store.Precondition{MustNotExist: true}
		}
	}
	if reason == "" {
		reason = fmt.Sprintf("rollback to revision %d", target.Revision)
	}
	rec, err := a.store.Put(r.Context(), target.Model, pre, store.Change{Subject: caller.Subject, Action: "rollback", Reason: reason})
	if err != nil {
		a.storeError(w, r, err)
		return
	}
	resp := modelResponse(rec)
	resp.RestoredRevision = target.Revision
	resp.Skipped = skipped
	resp.AbortedCanary = aborted
	resp.Proxies = waitApplied(r.Context(), a.WaitApplied, rec.Revision, written, wait)
	a.log.Warn("model rolled back", "model", name, "to", target.Revision, "revision", rec.Revision,
		"subject", caller.Subject, "applied", resp.Proxies.Message)
	w.Header().Set("ETag", etag(rec.Revision))
	writeJSON(w, http.StatusOK, resp)
}

// WaitApplied waits until the snapshot of store revision rev (or newer) is
// served and every connected proxy has ACKed or NACKed it, or ctx is done.
func (a *API) WaitApplied(ctx context.Context, rev int64) api.AckResult {
	version := strconv.FormatInt(rev, 10)
	if err := a.snapshots.WaitPublished(ctx, rev); err != nil {
		return a.acks.Status(version)
	}
	return a.acks.Wait(ctx, version)
}

func (a *API) audit(w http.ResponseWriter, r *http.Request, _ auth.Identity) {
	before, err := intParam(r, "before", 0, 1<<62)
	if err == nil {
		var limit int64
		limit, err = intParam(r, "limit", 100, 1000)
		if err == nil {
			entries, err := a.store.Audit(r.Context(), store.AuditQuery{Model: r.URL.Query().Get("model"), Before: before, Limit: int(limit)})
			if err != nil {
				a.storeError(w, r, err)
				return
			}
			if entries == nil {
				entries = []api.AuditEntry{}
			}
			writeJSON(w, http.StatusOK, api.Audit{Items: entries})
			return
		}
	}
	writeError(w, http.StatusBadRequest, err.Error(), nil)
}

func (a *API) proxies(w http.ResponseWriter, r *http.Request, _ auth.Identity) {
	writeJSON(w, http.StatusOK, api.ProxyList{
		Proxies:         a.acks.Proxies(),
		SnapshotVersion: strconv.FormatInt(a.snapshots.Version(), 10),
	})
}

// The hints of a refused write over a running canary that the API adds
// (the canary's own, abort and reset, are canaryctl's).

func modelAPIPath(name string) string { return "/v1/models/" + name }

func forceHint(model, version, method, path string, body map[string]any) api.Hint {
	return api.Hint{Action: api.HintForce, Model: model, Version: version, Method: method, Path: path, Body: body,
		Message: fmt.Sprintf("repeat with force: the canary is aborted first (%s marked failed), then your change is written", version)}
}

// answerConflict answers a canaryctl.ConflictError.
func answerConflict(w http.ResponseWriter, ce canaryctl.ConflictError) {
	writeJSON(w, http.StatusConflict, api.ErrorResponse{Error: ce.Msg, Hints: ce.Hints})
}

// sameDocument reports whether two (normalized) documents are the same.
func sameDocument(a, b *api.Model) bool {
	x, err1 := json.Marshal(a)
	y, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && string(x) == string(y)
}
