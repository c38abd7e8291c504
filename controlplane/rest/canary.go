package rest

import (
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/switchyard-dev/switchyard/api"
	"github.com/switchyard-dev/switchyard/controlplane/auth"
	"github.com/switchyard-dev/switchyard/controlplane/canaryctl"
	"github.com/switchyard-dev/switchyard/controlplane/stats"
)

// Canary endpoints (role in brackets):
//
//	GET  /v1/models/{name}/canary               [viewer]   CanaryStatus
//	GET  /v1/models/{name}/stats                [viewer]   ModelStatsView (?window=1m)
//	POST /v1/models/{name}/canary/start         [editor]   body: reason, version, steps, stepDuration, minRequests
//	POST /v1/models/{name}/canary/pause         [editor]
//	POST /v1/models/{name}/canary/resume        [editor]
//	POST /v1/models/{name}/canary/promote       [editor]   the next step now, skipping the gates
//	POST /v1/models/{name}/canary/abort         [operator] roll back now; the version is marked failed
//	POST /v1/models/{name}/canary/reset         [operator] clear a version's failed mark (body: version)
//
// Editors ramp their own models forward; taking a release down (abort) or
// clearing a failure verdict (reset) is on-call's, as is the rollback
// endpoint. Every action body may carry reason and waitForAck (default
// 10s, "0s": don't wait); the answer reports "applied on N/N proxies in T
// ms".

// EnableCanary registers the canary and stats endpoints, served by the
// canary controller c and the stats service st, and makes writes over a
// running canary subject to c's judgement. ackWait is how long an action
// waits for the proxies to ACK its change when the request does not say.
// Call it before serving.
func (a *API) EnableCanary(c *canaryctl.Controller, st *stats.Service, ackWait time.Duration) {
	a.canary, a.stats, a.ackWait = c, st, ackWait
	a.canaryRoutes()
}

func (a *API) canaryRoutes() {
	a.Handle("GET /v1/models/{name}/canary", auth.RoleViewer, a.canaryStatus)
	a.Handle("GET /v1/models/{name}/stats", auth.RoleViewer, a.modelStats)
	for _, act := range []struct {
		name string
		role auth.Role
	}{{"start", auth.RoleEditor}, {"pause", auth.RoleEditor}, {"resume", auth.RoleEditor}, {"promote", auth.RoleEditor}, {"abort", auth.RoleOperator}, {"reset", auth.RoleOperator}} {
		a.Handle("POST /v1/models/{name}/canary/"+act.name, act.role, a.canaryAction(act.name))
	}
	a.Handle("POST /v1/models/{name}/canary/{action}", auth.RoleViewer, func(w http.ResponseWriter, r *http.Request, _ auth.Identity) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("unknown canary action %q (want start, pause, resume, promote, abort or reset)", r.PathValue("action")), nil)
	})
}

func (a *API) canaryStatus(w http.ResponseWriter, r *http.Request, _ auth.Identity) {
	s, err := a.canary.Status(r.Context(), r.PathValue("name"))
	if err != nil {
		a.storeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, s)
}

func (a *API) canaryAction(action string) HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request, caller auth.Identity) {
		name := r.PathValue("name")
		body, ok := a.readBody(w, r, true)
		if !ok {
			return
		}
		var req api.CanaryActionRequest
		if len(strings.TrimSpace(string(body))) > 0 {
			if err := api.DecodeJSONInto(body, &req); err != nil {
				badDecode(w, err)
				return
			}
		}
		if action != "start" && (len(req.Steps) > 0 || req.StepDuration != 0 || req.MinRequests != 0) {
			writeError(w, http.StatusBadRequest, "steps, stepDuration and minRequests go with start only", nil)
			return
		}
		if req.Version != "" && action != "start" && action != "reset" {
			writeError(w, http.StatusBadRequest, "version goes with start and reset only", nil)
			return
		}
		wait := a.ackWait
		if req.WaitForAck != nil {
			wait = req.WaitForAck.D()
			if wait < 0 || wait > maxAckWait {
				writeError(w, http.StatusBadRequest, fmt.Sprintf("waitForAck: want 0s..%s, got %s", maxAckWait, wait), nil)
				return
			}
		}
		if req.Reason == "" {
			req.Reason = r.Header.Get("X-Switchyard-Reason")
		}
		rev, err := a.canary.Act(r.Context(), name, action, req, caller.Subject)
		if err != nil {
			var ce canaryctl.ConflictError
			var br canaryctl.BadRequestError
			switch {
			case errors.As(err, &ce):
				answerConflict(w, ce)
			case errors.As(err, &br):
				writeError(w, http.StatusBadRequest, err.Error(), nil)
			default:
				a.storeError(w, r, err)
			}
			return
		}
		written := time.Now()
		resp := api.CanaryActionResponse{Action: action, Revision: rev}
		if wait > 0 {
			resp.Proxies = waitApplied(r.Context(), a.WaitApplied, rev, written, wait)
		}
		if resp.Status, err = a.canary.Status(r.Context(), name); err != nil {
			a.storeError(w, r, err)
			return
		}
		w.Header().Set("ETag", etag(rev))
		writeJSON(w, http.StatusOK, resp)
	}
}

// maxStatsWindow caps ?window= of the stats endpoint.
const maxStatsWindow = 24 * time.Hour

// modelStats answers GET /v1/models/{name}/stats?window=1m: every version's
// figures summed over the proxies' reports of the window (default 1m).
func (a *API) modelStats(w http.ResponseWriter, r *http.Request, _ auth.Identity) {
	name := r.PathValue("name")
	window, err := windowParam(r, time.Minute, maxStatsWindow)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error(), nil)
		return
	}
	rec, err := a.store.Get(r.Context(), name)
	if err != nil {
		a.storeError(w, r, err)
		return
	}
	to := a.canary.Now()
	from := to.Add(-window)
	view := api.ModelStatsView{Model: name, Window: window.String(), From: from, To: to, Proxies: a.stats.Proxies(), Variants: []api.VariantStatsView{}}
	if view.Proxies == nil {
		view.Proxies = []string{}
	}
	names := rec.Model.VersionNames()
	sort.Strings(names)
	for _, v := range names {
		st, err := a.stats.Stats(r.Context(), name, v, from, to)
		if err != nil {
			writeError(w, http.StatusBadGateway, "stats: "+err.Error(), nil)
			return
		}
		view.Variants = append(view.Variants, stats.VariantView(v, &st))
	}
	writeJSON(w, http.StatusOK, view)
}
