package rest

import (
	"net/http"

	"github.com/switchyard-dev/switchyard/controlplane/auth"
	"github.com/switchyard-dev/switchyard/controlplane/stats"
)

// shadowRoutes registers the shadow endpoints.
func (a *API) shadowRoutes() {
	a.Handle("GET /v1/models/{name}/shadow/report", auth.RoleViewer, a.shadowReport)
}

// shadowReport answers GET /v1/models/{name}/shadow/report?window=5m: the
// connected proxies' shadow records of the window, merged
// (stats.ShadowGatherer).
func (a *API) shadowReport(w http.ResponseWriter, r *http.Request, _ auth.Identity) {
	name := r.PathValue("name")
	window, err := windowParam(r, stats.DefaultShadowWindow, stats.MaxShadowWindow)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error(), nil)
		return
	}
	rec, err := a.store.Get(r.Context(), name)
	if err != nil {
		a.storeError(w, r, err)
		return
	}
	shadowVersion := ""
	if sh := rec.Model.Spec.Shadow; sh != nil {
		shadowVersion = sh.Version
	}
	writeJSON(w, http.StatusOK, a.shadow.ShadowReport(r.Context(), a.acks.Proxies(), name, shadowVersion, window))
}
