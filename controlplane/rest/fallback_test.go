package rest_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/switchyard-dev/switchyard/api"
	"github.com/switchyard-dev/switchyard/controlplane"
	"github.com/switchyard-dev/switchyard/controlplane/cptest"
)

// TestStaticFallbackAPI: roles, validation naming the field, a model
// without a static step, If-Match, and a change that touches nothing but
// spec.fallback.static.
func TestStaticFallbackAPI(t *testing.T) {
	cp := cptest.Start(t, controlplane.Config{AllowAnonymousXDS: true}, nil)
	m := cptest.Doc("rec", 80, 20)
	m.Spec.Fallback = &api.Fallback{Chain: []string{"static"}, Static: &api.Static{Outputs: []api.StaticTensor{
		{Name: "scores", Datatype: "FP32", Shape: []int64{1, 2}, Data: []float64{1, 2}}}}}
	if r := cptest.Call(t, cp, http.MethodPut, "/v1/models/rec", cptest.EditorToken, m); r.Code != http.StatusCreated {
		t.Fatalf("create: %d %s", r.Code, r.Body)
	}
	noStatic := cptest.Doc("plain", 80, 20)
	if r := cptest.Call(t, cp, http.MethodPut, "/v1/models/plain", cptest.EditorToken, noStatic); r.Code != http.StatusCreated {
		t.Fatalf("create plain: %d %s", r.Code, r.Body)
	}
	good := `{"outputs":[{"name":"scores","datatype":"FP32","shape":[1,2],"data":[5,6]}],"reason":"popular today"}`
	for _, tc := range []struct {
		name, model, token, body string
		code                     int
		want                     string
	}{
		{"viewer", "rec", cptest.ViewerToken, good, http.StatusForbidden, "needs editor"},
		{"shape", "rec", cptest.EditorToken, `{"outputs":[{"name":"scores","datatype":"FP32","shape":[1,2],"data":[5]}]}`, http.StatusBadRequest, `outputs[0] \"scores\": shape [1 2] needs 2 values, got 1`},
		{"dtype", "rec", cptest.EditorToken, `{"outputs":[{"name":"scores","datatype":"FP31","shape":[1],"data":[5]}]}`, http.StatusBadRequest, "FP31"},
		{"empty", "rec", cptest.EditorToken, `{"outputs":[]}`, http.StatusBadRequest, "outputs: required"},
		{"unknown field", "rec", cptest.EditorToken, `{"outputs":[],"colour":1}`, http.StatusBadRequest, "colour"},
		{"no static step", "plain", cptest.EditorToken, good, http.StatusConflict, `no fallback chain with a \"static\" step`},
		{"no model", "nope", cptest.EditorToken, good, http.StatusNotFound, "nope"},
	} {
		r := cptest.Call(t, cp, http.MethodPut, "/v1/models/"+tc.model+"/fallback/static", tc.token, tc.body)
		if r.Code != tc.code || !strings.Contains(string(r.Body), tc.want) {
			t.Errorf("%s: %d %s, want %d containing %q", tc.name, r.Code, r.Body, tc.code, tc.want)
		}
	}
	before, err := cp.Store().Get(context.Background(), "rec")
	if err != nil {
		t.Fatal(err)
	}
	if r := cptest.Call(t, cp, http.MethodPut, "/v1/models/rec/fallback/static", cptest.EditorToken, good, "If-Match", fmt.Sprintf(`"%d"`, before.Revision+100)); r.Code != http.StatusConflict {
		t.Fatalf("stale If-Match: %d %s", r.Code, r.Body)
	}
	r := cptest.Call(t, cp, http.MethodPut, "/v1/models/rec/fallback/static", cptest.EditorToken, good)
	if r.Code != http.StatusOK {
		t.Fatalf("put static: %d %s", r.Code, r.Body)
	}
	after, err := cp.Store().Get(context.Background(), "rec")
	if err != nil {
		t.Fatal(err)
	}
	if after.Revision <= before.Revision || after.Model.Spec.Fallback.Static.Outputs[0].Data[0] != 5 {
		t.Fatalf("stored: %+v", after.Model.Spec.Fallback)
	}
	// Nothing else changed.
	b := before.Model.Clone()
	b.Spec.Fallback.Static = after.Model.Spec.Fallback.Static
	if bj, aj := modelJSON(t, b), modelJSON(t, after.Model); bj != aj {
		t.Fatalf("other fields changed:\n%s\n%s", bj, aj)
	}
	au := cptest.Call(t, cp, http.MethodGet, "/v1/audit?model=rec", cptest.ViewerToken, nil)
	if !strings.Contains(string(au.Body), `"fallback-static"`) || !strings.Contains(string(au.Body), "popular today") || !strings.Contains(string(au.Body), "eddie") {
		t.Fatalf("audit: %s", au.Body)
	}
}

// TestShadowReportWithoutProxies: the report of a model nobody serves is
// empty, not an error; unknown models are 404.
func TestShadowReportWithoutProxies(t *testing.T) {
	cp := cptest.Start(t, controlplane.Config{AllowAnonymousXDS: true}, nil)
	m := cptest.Doc("rec", 80, 20)
	m.Spec.Shadow = &api.Shadow{Version: "v2", Percent: 10}
	if r := cptest.Call(t, cp, http.MethodPut, "/v1/models/rec", cptest.EditorToken, m); r.Code != http.StatusCreated {
		t.Fatalf("create: %d %s", r.Code, r.Body)
	}
	var rep api.ShadowReportResponse
	r := cptest.Call(t, cp, http.MethodGet, "/v1/models/rec/shadow/report?window=1m", cptest.ViewerToken, nil)
	r.Decode(t, &rep)
	if r.Code != 200 || rep.Shadow.Compared != 0 || len(rep.Proxies) != 0 || rep.ShadowVersion != "v2" || rep.Window != "1m0s" {
		t.Fatalf("report: %d %s", r.Code, r.Body)
	}
	if r := cptest.Call(t, cp, http.MethodGet, "/v1/models/nope/shadow/report", cptest.ViewerToken, nil); r.Code != http.StatusNotFound {
		t.Fatalf("unknown model: %d %s", r.Code, r.Body)
	}
	if r := cptest.Call(t, cp, http.MethodGet, "/v1/models/rec/shadow/report?window=-1s", cptest.ViewerToken, nil); r.Code != http.StatusBadRequest {
		t.Fatalf("bad window: %d %s", r.Code, r.Body)
	}
}

func modelJSON(t testing.TB, m api.Model) string {
	t.Helper()
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
