package rest

import (
	"fmt"
	"net/http"
	"time"

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
	window := stats.DefaultShadowWindow
	if s := r.URL.Query().Get("window"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 || d > stats.MaxShadowWindow {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("window: want a duration in (0, %s] such as 5m, got %q", stats.MaxShadowWindow, s), nil)
			return
		}
		window = d
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
