package controlplane

import (
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/api"
	"github.com/switchyard-dev/switchyard/inference-backend/backendtest"
	"github.com/switchyard-dev/switchyard/inference-backend/demomodels"
	"github.com/switchyard-dev/switchyard/internal/tlsutil"
	"github.com/switchyard-dev/switchyard/proxy"
)

// TestStaticFallbackAPI: roles, validation naming the field, a model
// without a static step, If-Match, and a change that touches nothing but
// spec.fallback.static.
func TestStaticFallbackAPI(t *testing.T) {
	cp := startCP(t, "")
	m := doc("rec", 80, 20)
	m.Spec.Fallback = &api.Fallback{Chain: []string{"static"}, Static: &api.Static{Outputs: []api.StaticTensor{
		{Name: "scores", Datatype: "FP32", Shape: []int64{1, 2}, Data: []float64{1, 2}}}}}
	if r := call(t, cp, http.MethodPut, "/v1/models/rec", editorToken, m); r.code != http.StatusCreated {
		t.Fatalf("create: %d %s", r.code, r.body)
	}
	noStatic := doc("plain", 80, 20)
	if r := call(t, cp, http.MethodPut, "/v1/models/plain", editorToken, noStatic); r.code != http.StatusCreated {
		t.Fatalf("create plain: %d %s", r.code, r.body)
	}
	good := `{"outputs":[{"name":"scores","datatype":"FP32","shape":[1,2],"data":[5,6]}],"reason":"popular today"}`
	for _, tc := range []struct {
		name, model, token, body string
		code                     int
		want                     string
	}{
		{"viewer", "rec", viewerToken, good, http.StatusForbidden, "needs editor"},
		{"shape", "rec", editorToken, `{"outputs":[{"name":"scores","datatype":"FP32","shape":[1,2],"data":[5]}]}`, http.StatusBadRequest, `outputs[0] \"scores\": shape [1 2] needs 2 values, got 1`},
		{"dtype", "rec", editorToken, `{"outputs":[{"name":"scores","datatype":"FP31","shape":[1],"data":[5]}]}`, http.StatusBadRequest, "FP31"},
		{"empty", "rec", editorToken, `{"outputs":[]}`, http.StatusBadRequest, "outputs: required"},
		{"unknown field", "rec", editorToken, `{"outputs":[],"colour":1}`, http.StatusBadRequest, "colour"},
		{"no static step", "plain", editorToken, good, http.StatusConflict, `no fallback chain with a \"static\" step`},
		{"no model", "nope", editorToken, good, http.StatusNotFound, "nope"},
	} {
		r := call(t, cp, http.MethodPut, "/v1/models/"+tc.model+"/fallback/static", tc.token, tc.body)
		if r.code != tc.code || !strings.Contains(string(r.body), tc.want) {
			t.Errorf("%s: %d %s, want %d containing %q", tc.name, r.code, r.body, tc.code, tc.want)
		}
	}
	before, err := cp.Store().Get(context.Background(), "rec")
	if err != nil {
		t.Fatal(err)
	}
	if r := call(t, cp, http.MethodPut, "/v1/models/rec/fallback/static", editorToken, good, "If-Match", etag(before.Revision+100)); r.code != http.StatusConflict {
		t.Fatalf("stale If-Match: %d %s", r.code, r.body)
	}
	r := call(t, cp, http.MethodPut, "/v1/models/rec/fallback/static", editorToken, good)
	if r.code != http.StatusOK {
		t.Fatalf("put static: %d %s", r.code, r.body)
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
	au := call(t, cp, http.MethodGet, "/v1/audit?model=rec", viewerToken, nil)
	if !strings.Contains(string(au.body), `"fallback-static"`) || !strings.Contains(string(au.body), "popular today") || !strings.Contains(string(au.body), "eddie") {
		t.Fatalf("audit: %s", au.body)
	}
}

// TestShadowReportWithoutProxies: the report of a model nobody serves is
// empty, not an error; unknown models are 404.
func TestShadowReportWithoutProxies(t *testing.T) {
	cp := startCP(t, "")
	m := doc("rec", 80, 20)
	m.Spec.Shadow = &api.Shadow{Version: "v2", Percent: 10}
	if r := call(t, cp, http.MethodPut, "/v1/models/rec", editorToken, m); r.code != http.StatusCreated {
		t.Fatalf("create: %d %s", r.code, r.body)
	}
	var rep api.ShadowReportResponse
	r := call(t, cp, http.MethodGet, "/v1/models/rec/shadow/report?window=1m", viewerToken, nil)
	r.decode(t, &rep)
	if r.code != 200 || rep.Shadow.Compared != 0 || len(rep.Proxies) != 0 || rep.ShadowVersion != "v2" || rep.Window != "1m0s" {
		t.Fatalf("report: %d %s", r.code, r.body)
	}
	if r := call(t, cp, http.MethodGet, "/v1/models/nope/shadow/report", viewerToken, nil); r.code != http.StatusNotFound {
		t.Fatalf("unknown model: %d %s", r.code, r.body)
	}
	if r := call(t, cp, http.MethodGet, "/v1/models/rec/shadow/report?window=-1s", viewerToken, nil); r.code != http.StatusBadRequest {
		t.Fatalf("bad window: %d %s", r.code, r.body)
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

// TestShadowRecordsPresentProxyAdminToken: the shadow report's fetch of a
// proxy's records presents the proxies' admin token (a real proxy whose
// admin pages need it), and a wrong one is named in the error.
func TestShadowRecordsPresentProxyAdminToken(t *testing.T) {
	be := backendtest.Start(t, backendtest.Options{})
	m := api.Model{
		Metadata: api.Metadata{Name: "recommender"},
		Spec: api.Spec{
			Versions: []api.Version{
				{Name: "v1", Endpoints: []string{be.HTTPAddr}, BackendModel: demomodels.V1},
				{Name: "v2", Endpoints: []string{be.HTTPAddr}, BackendModel: demomodels.V1},
			},
			Traffic: api.Traffic{Weights: map[string]int{"v1": 100}},
			Timeout: api.Duration(2 * time.Second),
			Shadow:  &api.Shadow{Version: "v2", Percent: 100},
		},
	}
	const token = "proxy-admin-token-0123456"
	p, err := proxy.New(proxy.Config{AdminAddr: "127.0.0.1:0", Models: []api.Model{m}, AdminToken: token})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	client := &http.Client{Timeout: 5 * time.Second}
	if _, err := fetchShadowRecords(context.Background(), client, p.AdminAddr(), token, "recommender", time.Minute); err != nil {
		t.Fatalf("with the token: %v", err)
	}
	if _, err := fetchShadowRecords(context.Background(), client, p.AdminAddr(), "", "recommender", time.Minute); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("without the token: %v", err)
	}

	// A proxy whose admin serves mTLS: asked at https:// (its node
	// metadata says so) with the control plane's own certificate.
	dir := t.TempDir()
	ca, err := tlsutil.NewCA("test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ca.Write(dir)
	files := map[string]tlsutil.Files{}
	for _, kind := range []string{"proxy", "controlplane"} {
		c, k, err := ca.Issue(tlsutil.LocalLeaf(tlsutil.DefaultTrustDomain, kind, "x", time.Hour, nil, nil))
		if err != nil {
			t.Fatal(err)
		}
		tlsutil.WritePair(dir, kind, c, k)
		files[kind] = tlsutil.Files{Cert: filepath.Join(dir, kind+".crt"), Key: filepath.Join(dir, kind+".key"), CA: filepath.Join(dir, "ca.crt")}
	}
	pf := files["proxy"]
	tp, err := proxy.New(proxy.Config{AdminAddr: "127.0.0.1:0", Models: []api.Model{m}, AdminToken: token, TLS: &pf})
	if err != nil {
		t.Fatal(err)
	}
	if err := tp.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tp.Close() })
	cc, err := tlsutil.NewClientConfig(files["controlplane"], tlsutil.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: cc, DisableKeepAlives: true}}
	if _, err := fetchShadowRecords(context.Background(), tc, "https://"+tp.AdminAddr(), token, "recommender", time.Minute); err != nil {
		t.Fatalf("over mTLS: %v", err)
	}
	if _, err := fetchShadowRecords(context.Background(), client, "https://"+tp.AdminAddr(), token, "recommender", time.Minute); err == nil {
		t.Fatal("over TLS without the control plane's certificate: answered")
	}
}
