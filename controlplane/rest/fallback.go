package rest

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/switchyard-dev/switchyard/api"
	"github.com/switchyard-dev/switchyard/controlplane/auth"
	"github.com/switchyard-dev/switchyard/fallback"
)

// fallbackRoutes registers the fallback endpoints.
func (a *API) fallbackRoutes() {
	a.Handle("PUT /v1/models/{name}/fallback/static", auth.RoleEditor, a.putStatic)
}

// putStatic replaces spec.fallback.static atomically, as a new revision
// (audited as "fallback-static") that proxies get over xDS like any other
// change. With If-Match it applies to that revision only (else 409);
// without, to the current revision, retrying if another write lands in
// between. The model must have a fallback chain with a "static" step.
func (a *API) putStatic(w http.ResponseWriter, r *http.Request, caller auth.Identity) {
	name := r.PathValue("name")
	req, pre, ok := decodePatch[api.StaticRequest](a, w, r)
	if !ok {
		return
	}
	if len(req.Outputs) == 0 {
		writeError(w, http.StatusBadRequest, "outputs: required: at least one output tensor",
			[]api.FieldError{{Field: "outputs", Message: "required: at least one output tensor"}})
		return
	}
	// The fallback package's checks name the tensor and the problem
	// (element count vs shape, range of the datatype, ...).
	if _, err := fallback.NewStatic(req.Outputs); err != nil {
		msg := strings.TrimPrefix(err.Error(), "static.")
		writeError(w, http.StatusBadRequest, msg, []api.FieldError{{Field: "outputs", Message: msg}})
		return
	}
	rec, ok := a.patch(w, r, caller, name, pre, "fallback-static", req.Reason, func(m *api.Model) bool {
		fb := m.Spec.Fallback
		if fb == nil || !hasStaticStep(fb.Chain) {
			writeError(w, http.StatusConflict, fmt.Sprintf("model %q has no fallback chain with a \"static\" step; add spec.fallback (chain: [..., static]) first", name),
				[]api.FieldError{{Field: "spec.fallback.chain", Message: "needs a \"static\" step"}})
			return false
		}
		fb.Static = &api.Static{Outputs: req.Outputs}
		return true
	})
	if !ok {
		return
	}
	a.log.Info("static fallback replaced", "model", name, "revision", rec.Revision, "outputs", len(req.Outputs), "subject", caller.Subject)
	writeJSON(w, http.StatusOK, modelResponse(rec))
}

func hasStaticStep(chain []string) bool {
	for _, s := range chain {
		if s == api.FallbackStatic {
			return true
		}
	}
	return false
}
