package controlplane

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"go.uber.org/goleak"

	"github.com/switchyard-dev/switchyard/api"
	"github.com/switchyard-dev/switchyard/controlplane/store"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	viewerToken   = "viewer-token-0123456789"
	editorToken   = "editor-token-0123456789"
	operatorToken = "operator-token-0123456"
)

func testAuth(t testing.TB) *Authenticator {
	t.Helper()
	a, err := NewAuthenticator([]Token{
		{Subject: "vera", Role: "viewer", Token: viewerToken},
		{Subject: "eddie", Role: "editor", Token: editorToken},
		{Subject: "olga", Role: "operator", Token: operatorToken},
	})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func startCP(t testing.TB, statePath string) *ControlPlane {
	t.Helper()
	if statePath == "" {
		statePath = filepath.Join(t.TempDir(), "state.db")
	}
	cp, err := New(Config{StatePath: statePath, APIAddr: "127.0.0.1:0", XDSAddr: "127.0.0.1:0", Auth: testAuth(t),
		AllowAnonymousXDS: true}) // xDS authentication: xdsauth_test.go
	if err != nil {
		t.Fatal(err)
	}
	if err := cp.Start(context.Background()); err != nil {
		cp.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { cp.Close() })
	return cp
}

type result struct {
	code int
	etag string
	body []byte
}

func (r result) decode(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
}

func call(t testing.TB, cp *ControlPlane, method, path, token string, body any, headers ...string) result {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, cp.APIURL()+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	req.Close = true // no keep-alive connections left behind for goleak
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return result{code: resp.StatusCode, etag: resp.Header.Get("ETag"), body: b}
}

func doc(name string, w1, w2 int) api.Model {
	return api.Model{
		Metadata: api.Metadata{Name: name},
		Spec: api.Spec{
			Versions: []api.Version{
				{Name: "v1", Endpoints: []string{"127.0.0.1:8001"}},
				{Name: "v2", Endpoints: []string{"127.0.0.1:8002"}},
			},
			Traffic: api.Traffic{Weights: map[string]int{"v1": w1, "v2": w2}},
		},
	}
}

func revisionOf(t testing.TB, cp *ControlPlane) int64 {
	t.Helper()
	_, rev, err := cp.Store().List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return rev
}

func TestNewRefusesUnsafeConfig(t *testing.T) {
	dir := t.TempDir()
	tests := map[string]struct {
		cfg  Config
		want string
	}{
		"insecure on all interfaces": {Config{StatePath: filepath.Join(dir, "a.db"), APIAddr: "0.0.0.0:0", XDSAddr: "127.0.0.1:0", InsecureLoopbackNoAuth: true}, "needs a loopback --api address"},
		"insecure on empty host":     {Config{StatePath: filepath.Join(dir, "a.db"), APIAddr: ":0", XDSAddr: "127.0.0.1:0", InsecureLoopbackNoAuth: true}, "needs a loopback --api address"},
		"no auth":                    {Config{StatePath: filepath.Join(dir, "a.db"), APIAddr: "127.0.0.1:0", XDSAddr: "127.0.0.1:0"}, "give --tokens FILE"},
		"no state":                   {Config{APIAddr: "127.0.0.1:0", XDSAddr: "127.0.0.1:0", InsecureLoopbackNoAuth: true}, "give --state FILE"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			cp, err := New(tc.cfg)
			if err == nil {
				cp.Close()
				t.Fatal("want an error")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want %q, got %v", tc.want, err)
			}
		})
	}
}

func TestInsecureLoopbackMode(t *testing.T) {
	cp, err := New(Config{StatePath: filepath.Join(t.TempDir(), "s.db"), APIAddr: "127.0.0.1:0", XDSAddr: "127.0.0.1:0", InsecureLoopbackNoAuth: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := cp.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer cp.Close()
	if r := call(t, cp, "PUT", "/v1/models/a", "", doc("a", 1, 1)); r.code != http.StatusCreated {
		t.Fatalf("PUT without token in loopback mode: %d %s", r.code, r.body)
	}
	var audit struct{ Items []api.AuditEntry }
	call(t, cp, "GET", "/v1/audit", "", nil).decode(t, &audit)
	if len(audit.Items) != 1 || audit.Items[0].Subject != "anonymous" {
		t.Fatalf("audit %+v", audit.Items)
	}
}

func TestLoadTokens(t *testing.T) {
	dir := t.TempDir()
	write := func(s string) string {
		p := filepath.Join(dir, fmt.Sprint(len(s), ".yaml"))
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if _, err := LoadTokens(write("tokens:\n  - {subject: a, role: editor, token: " + editorToken + "}\n")); err != nil {
		t.Fatal(err)
	}
	for s, want := range map[string]string{
		"tokens:\n  - {subject: a, role: admin, token: " + editorToken + "}\n":   `tokens[0].role: unknown role "admin" (allowed: viewer, editor, operator)`,
		"tokens:\n  - {subject: a, role: viewer, token: short}\n":                "tokens[0].token: at least 16 characters",
		"tokens:\n  - {subject: '', role: viewer, token: " + editorToken + "}\n": "tokens[0].subject: required",
		"tokens:\n  - {subject: a, role: viewer, tokn: x}\n":                     "field tokn not found",
		"tokens: []\n": "no tokens",
		"tokens:\n  - {subject: a, role: viewer, token: " + editorToken + "}\n  - {subject: b, role: operator, token: " + editorToken + "}\n": "tokens[1].token: the same token is given twice",
	} {
		if _, err := LoadTokens(write(s)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: want %q, got %v", s, want, err)
		}
	}
}

func TestAuthAndRoles(t *testing.T) {
	cp := startCP(t, "")
	if r := call(t, cp, "PUT", "/v1/models/a", editorToken, doc("a", 1, 1)); r.code != http.StatusCreated {
		t.Fatalf("editor create: %d %s", r.code, r.body)
	}
	tests := []struct {
		method, path, token string
		body                any
		want                int
	}{
		{"GET", "/v1/models", "", nil, http.StatusUnauthorized},
		{"GET", "/v1/models", "wrong-token-0123456789", nil, http.StatusUnauthorized},
		{"GET", "/v1/models", viewerToken, nil, http.StatusOK},
		{"GET", "/v1/proxies", viewerToken, nil, http.StatusOK},
		{"GET", "/v1/audit", viewerToken, nil, http.StatusOK},
		{"PUT", "/v1/models/a", viewerToken, doc("a", 1, 2), http.StatusForbidden},
		{"PUT", "/v1/models/a/weights", viewerToken, api.WeightsRequest{Weights: map[string]int{"v1": 1}}, http.StatusForbidden},
		{"PUT", "/v1/models/a/weights", editorToken, api.WeightsRequest{Weights: map[string]int{"v1": 1}}, http.StatusOK},
		{"POST", "/v1/models/a/rollback", editorToken, nil, http.StatusForbidden},
		{"DELETE", "/v1/models/a", editorToken, nil, http.StatusForbidden},
		{"POST", "/v1/models/a/rollback", operatorToken, nil, http.StatusOK},
		{"DELETE", "/v1/models/a", operatorToken, nil, http.StatusOK},
	}
	for _, tc := range tests {
		r := call(t, cp, tc.method, tc.path, tc.token, tc.body)
		if r.code != tc.want {
			t.Errorf("%s %s as %q: got %d, want %d: %s", tc.method, tc.path, tc.token, r.code, tc.want, r.body)
		}
	}
	r := call(t, cp, "GET", "/v1/models", "", nil)
	if !strings.Contains(string(r.body), "missing or invalid bearer token") {
		t.Errorf("401 body %s", r.body)
	}
	r = call(t, cp, "DELETE", "/v1/models/a", viewerToken, nil)
	if !strings.Contains(string(r.body), "vera has role viewer; this needs operator") {
		t.Errorf("403 body %s", r.body)
	}
}

func TestModelLifecycleAndETags(t *testing.T) {
	cp := startCP(t, "")
	r := call(t, cp, "PUT", "/v1/models/a", editorToken, doc("a", 80, 20), "X-Switchyard-Reason", "first rollout")
	if r.code != http.StatusCreated || r.etag != `"1"` {
		t.Fatalf("create: %d etag %s %s", r.code, r.etag, r.body)
	}
	var got api.ModelResponse
	r = call(t, cp, "GET", "/v1/models/a", viewerToken, nil)
	r.decode(t, &got)
	if r.etag != `"1"` || got.Revision != 1 || got.Model.Spec.Traffic.Weights["v1"] != 80 || got.Model.Spec.Versions[0].BackendModel != "a" {
		t.Fatalf("get: %s %+v", r.etag, got)
	}
	// Create-only on an existing model.
	if r := call(t, cp, "PUT", "/v1/models/a", editorToken, doc("a", 1, 1), "If-None-Match", "*"); r.code != http.StatusConflict {
		t.Fatalf("If-None-Match on existing: %d", r.code)
	}
	// Update with the right ETag.
	r = call(t, cp, "PUT", "/v1/models/a", editorToken, doc("a", 50, 50), "If-Match", `"1"`)
	if r.code != http.StatusOK || r.etag != `"3"` && r.etag != `"2"` {
		t.Fatalf("update: %d %s %s", r.code, r.etag, r.body)
	}
	cur := r.etag
	// A stale ETag: 409, the current ETag in the answer, nothing changes.
	before := revisionOf(t, cp)
	r = call(t, cp, "PUT", "/v1/models/a", editorToken, doc("a", 1, 99), "If-Match", `"1"`)
	var conflict api.ErrorResponse
	r.decode(t, &conflict)
	if r.code != http.StatusConflict || r.etag != cur || !strings.Contains(conflict.Error, "not 1") {
		t.Fatalf("stale update: %d %s %s", r.code, r.etag, r.body)
	}
	if revisionOf(t, cp) != before {
		t.Fatal("a stale write changed the store")
	}
	if r := call(t, cp, "PUT", "/v1/models/a/weights", editorToken, api.WeightsRequest{Weights: map[string]int{"v1": 1}}, "If-Match", `"1"`); r.code != http.StatusConflict {
		t.Fatalf("stale weights: %d", r.code)
	}
	if r := call(t, cp, "DELETE", "/v1/models/a", operatorToken, nil, "If-Match", `"1"`); r.code != http.StatusConflict {
		t.Fatalf("stale delete: %d", r.code)
	}
	if r := call(t, cp, "PUT", "/v1/models/a", editorToken, doc("a", 1, 1), "If-Match", "abc"); r.code != http.StatusBadRequest {
		t.Fatalf("bad If-Match: %d", r.code)
	}
	var list struct {
		Revision int64
		Items    []api.ModelResponse
	}
	call(t, cp, "GET", "/v1/models", viewerToken, nil).decode(t, &list)
	if len(list.Items) != 1 || list.Revision != before {
		t.Fatalf("list %+v", list)
	}
	if r := call(t, cp, "DELETE", "/v1/models/a", operatorToken, nil, "If-Match", cur); r.code != http.StatusOK {
		t.Fatalf("delete: %d %s", r.code, r.body)
	}
	if r := call(t, cp, "GET", "/v1/models/a", viewerToken, nil); r.code != http.StatusNotFound {
		t.Fatalf("get deleted: %d", r.code)
	}
	if r := call(t, cp, "GET", "/v1/models/zzz/history", viewerToken, nil); r.code != http.StatusNotFound {
		t.Fatalf("history of unknown: %d", r.code)
	}
	// YAML bodies work too.
	y := "metadata: {name: b}\nspec:\n  versions: [{name: v1, endpoints: ['127.0.0.1:9000']}]\n"
	if r := call(t, cp, "PUT", "/v1/models/b", editorToken, y, "Content-Type", "application/yaml"); r.code != http.StatusCreated {
		t.Fatalf("yaml: %d %s", r.code, r.body)
	}
}

func TestBadBodiesStoreNothing(t *testing.T) {
	cp := startCP(t, "")
	if r := call(t, cp, "PUT", "/v1/models/a", editorToken, doc("a", 1, 1)); r.code != http.StatusCreated {
		t.Fatal(r.code)
	}
	huge := `{"metadata": {"name": "a", "labels": {"x": "` + strings.Repeat("y", DefaultMaxBodyBytes) + `"}}}`
	bad := doc("a", 1, 1)
	bad.Spec.Traffic.Weights["v9"] = 5
	tests := []struct {
		name, path string
		body       any
		code       int
		field      string
		msg        string
	}{
		{"malformed", "/v1/models/a", `{"metadata": `, 400, "", "malformed JSON"},
		{"empty", "/v1/models/a", ``, 400, "body", "empty"},
		{"unknown field", "/v1/models/a", `{"metadata": {"name": "a"}, "spec": {"trafic": {}}}`, 400, "spec.trafic", "unknown field"},
		{"wrong type", "/v1/models/a", `{"spec": {"timeout": 5}}`, 400, "spec.timeout", "want a duration string"},
		{"invalid value", "/v1/models/a", bad, 400, "spec.traffic.weights.v9", "no such version (versions: v1, v2)"},
		{"name mismatch", "/v1/models/a", doc("b", 1, 1), 400, "metadata.name", `"b" does not match the name in the URL "a"`},
		{"oversized", "/v1/models/a", huge, 400, "body", "larger than 1048576 bytes"},
		{"weights unknown version", "/v1/models/a/weights", `{"weights": {"v7": 1}}`, 400, "spec.traffic.weights.v7", "no such version"},
		{"weights zero", "/v1/models/a/weights", `{"weights": {"v1": 0, "v2": 0}}`, 400, "spec.traffic.weights", "weights total 0"},
		{"weights range", "/v1/models/a/weights", `{"weights": {"v1": 10001}}`, 400, "spec.traffic.weights.v1", "out of range"},
		{"weights unknown field", "/v1/models/a/weights", `{"weight": {"v1": 1}}`, 400, "weight", "unknown field"},
		{"weights missing", "/v1/models/a/weights", `{}`, 400, "weights", "required"},
		{"rollback bad field", "/v1/models/a/rollback", `{"rev": 1}`, 400, "rev", "unknown field"},
	}
	before := revisionOf(t, cp)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			method := "PUT"
			if strings.HasSuffix(tc.path, "rollback") {
				method = "POST"
			}
			token := editorToken
			if method == "POST" {
				token = operatorToken
			}
			r := call(t, cp, method, tc.path, token, tc.body)
			if r.code != tc.code {
				t.Fatalf("got %d, want %d: %s", r.code, tc.code, r.body)
			}
			var e api.ErrorResponse
			r.decode(t, &e)
			if !strings.Contains(e.Error, tc.msg) {
				t.Errorf("error %q lacks %q", e.Error, tc.msg)
			}
			if tc.field != "" {
				found := false
				for _, f := range e.Fields {
					found = found || f.Field == tc.field
				}
				if !found {
					t.Errorf("fields %+v lack %q", e.Fields, tc.field)
				}
			}
		})
	}
	if after := revisionOf(t, cp); after != before {
		t.Fatalf("bad bodies changed the store: revision %d -> %d", before, after)
	}
}

// TestConcurrentEditorsLoseNoUpdate runs editors that each read, change and
// write back with If-Match over real HTTP, retrying on 409.
func TestConcurrentEditorsLoseNoUpdate(t *testing.T) {
	cp := startCP(t, "")
	if r := call(t, cp, "PUT", "/v1/models/a", editorToken, doc("a", 1, 1)); r.code != http.StatusCreated {
		t.Fatal(r.code)
	}
	const editors, each = 4, 8
	var wg sync.WaitGroup
	var conflicts sync.Map
	for e := 0; e < editors; e++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for done, tries := 0, 0; done < each && tries < 1000; tries++ {
				r := call(t, cp, "GET", "/v1/models/a", editorToken, nil)
				var cur api.ModelResponse
				r.decode(t, &cur)
				m := cur.Model
				m.Spec.Traffic.Weights["v1"]++
				w := call(t, cp, "PUT", "/v1/models/a", editorToken, m, "If-Match", r.etag)
				switch w.code {
				case http.StatusOK:
					done++
				case http.StatusConflict:
					conflicts.Store(tries, true)
				default:
					t.Errorf("PUT: %d %s", w.code, w.body)
					return
				}
			}
		}()
	}
	wg.Wait()
	var got api.ModelResponse
	call(t, cp, "GET", "/v1/models/a", viewerToken, nil).decode(t, &got)
	if w := got.Model.Spec.Traffic.Weights["v1"]; w != 1+editors*each {
		t.Fatalf("weight %d, want %d: updates were lost", w, 1+editors*each)
	}
	var hist struct{ Items []api.Record }
	call(t, cp, "GET", "/v1/models/a/history", viewerToken, nil).decode(t, &hist)
	if len(hist.Items) != 1+editors*each {
		t.Fatalf("history has %d revisions, want %d", len(hist.Items), 1+editors*each)
	}
}

func TestWeightsRollbackHistoryAudit(t *testing.T) {
	cp := startCP(t, "")
	call(t, cp, "PUT", "/v1/models/a", editorToken, doc("a", 80, 20))
	r := call(t, cp, "PUT", "/v1/models/a/weights", editorToken, api.WeightsRequest{Weights: map[string]int{"v1": 50, "v2": 50}, Reason: "ramp"})
	var w api.ModelResponse
	r.decode(t, &w)
	if r.code != 200 || w.Model.Spec.Traffic.Weights["v2"] != 50 || w.Revision != 2 {
		t.Fatalf("weights: %d %s", r.code, r.body)
	}
	call(t, cp, "PUT", "/v1/models/a/weights", editorToken, api.WeightsRequest{Weights: map[string]int{"v2": 1}})
	// Rollback to the previous revision (2: 50/50).
	r = call(t, cp, "POST", "/v1/models/a/rollback", operatorToken, nil)
	var rb api.ModelResponse
	r.decode(t, &rb)
	if r.code != 200 || rb.Revision != 4 || rb.Model.Spec.Traffic.Weights["v1"] != 50 {
		t.Fatalf("rollback: %d %s", r.code, r.body)
	}
	// Rollback to a named revision (1: 80/20).
	r = call(t, cp, "POST", "/v1/models/a/rollback", operatorToken, api.RollbackRequest{Revision: 1, Reason: "bad canary"})
	r.decode(t, &rb)
	if r.code != 200 || rb.Model.Spec.Traffic.Weights["v1"] != 80 {
		t.Fatalf("rollback to 1: %d %s", r.code, r.body)
	}
	if r := call(t, cp, "POST", "/v1/models/a/rollback", operatorToken, api.RollbackRequest{Revision: 99}); r.code != 404 {
		t.Fatalf("rollback to unknown revision: %d", r.code)
	}
	var hist struct{ Items []api.Record }
	call(t, cp, "GET", "/v1/models/a/history?limit=3", viewerToken, nil).decode(t, &hist)
	if len(hist.Items) != 3 || hist.Items[0].Action != "rollback" || hist.Items[0].Reason != "bad canary" || hist.Items[2].Action != "weights" {
		t.Fatalf("history %+v", hist.Items)
	}
	var audit struct{ Items []api.AuditEntry }
	call(t, cp, "GET", "/v1/audit?model=a&limit=10", viewerToken, nil).decode(t, &audit)
	if len(audit.Items) != 5 {
		t.Fatalf("audit has %d entries", len(audit.Items))
	}
	e := audit.Items[3] // revision 2: weights by eddie
	if e.Revision != 2 || e.Subject != "eddie" || e.Action != "weights" || e.Reason != "ramp" ||
		e.Before.Spec.Traffic.Weights["v1"] != 80 || e.After.Spec.Traffic.Weights["v1"] != 50 {
		t.Fatalf("audit entry %+v", e)
	}
	if audit.Items[0].Subject != "olga" || audit.Items[0].Action != "rollback" {
		t.Fatalf("newest audit entry %+v", audit.Items[0])
	}
	// Undelete: roll back a deleted model.
	call(t, cp, "DELETE", "/v1/models/a", operatorToken, nil)
	if r := call(t, cp, "POST", "/v1/models/a/rollback", operatorToken, nil); r.code != 200 {
		t.Fatalf("rollback of a deleted model: %d %s", r.code, r.body)
	}
	if r := call(t, cp, "GET", "/v1/audit?limit=x", viewerToken, nil); r.code != 400 {
		t.Fatalf("bad limit: %d", r.code)
	}
}

func waitCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestXDSOverSocket drives a real ADS client: it receives the resources,
// then a weight change, NACKs a bad version (recorded and shown on
// /v1/proxies, without a resend loop), and ACKs a rollback.
func TestXDSOverSocket(t *testing.T) {
	cp := startCP(t, "")
	ctx := waitCtx(t)
	call(t, cp, "PUT", "/v1/models/rec", editorToken, doc("rec", 80, 20))

	rejectVersion := make(chan string, 1)
	var rejectMu sync.Mutex
	rejecting := ""
	client := dialADS(t, cp.XDSAddr(), "proxy-1", func(typ string, resp *discoveryv3.DiscoveryResponse) error {
		rejectMu.Lock()
		defer rejectMu.Unlock()
		select {
		case v := <-rejectVersion:
			rejecting = v
		default:
		}
		if typ == resource.ClusterType && resp.GetVersionInfo() == rejecting {
			return errors.New("cluster rec_v2: test rejects this version")
		}
		return nil
	})
	other := dialADS(t, cp.XDSAddr(), "proxy-2", nil)

	v, models, err := client.waitFor(ctx, func(v string, ms []api.Model) bool { return len(ms) == 1 })
	if err != nil {
		t.Fatal(err)
	}
	if v != "1" || models[0].Spec.Traffic.Weights["v1"] != 80 || models[0].Spec.Versions[1].Endpoints[0] != "127.0.0.1:8002" {
		t.Fatalf("first config: version %s %+v", v, models)
	}

	// A weight change reaches the proxy.
	r := call(t, cp, "PUT", "/v1/models/rec/weights", editorToken, api.WeightsRequest{Weights: map[string]int{"v1": 20, "v2": 80}})
	var wr api.ModelResponse
	r.decode(t, &wr)
	if _, _, err := client.waitFor(ctx, func(v string, ms []api.Model) bool {
		return len(ms) == 1 && ms[0].Spec.Traffic.Weights["v2"] == 80
	}); err != nil {
		t.Fatal(err)
	}
	acked, total := cp.Tracker().WaitForAck(ctx, fmt.Sprint(wr.Revision))
	if len(acked) != 2 || len(total) != 2 {
		t.Fatalf("WaitForAck %d: acked %v of %v", wr.Revision, acked, total)
	}

	// The next version is NACKed by proxy-1.
	rejectVersion <- fmt.Sprint(wr.Revision + 1)
	r = call(t, cp, "PUT", "/v1/models/rec/weights", editorToken, api.WeightsRequest{Weights: map[string]int{"v1": 1, "v2": 99}})
	var bad api.ModelResponse
	r.decode(t, &bad)
	res := cp.WaitApplied(ctx, bad.Revision)
	if fmt.Sprint(res.Nacked) != "[proxy-1]" || fmt.Sprint(res.Acked) != "[proxy-2]" || res.Total != 2 {
		t.Fatalf("after NACK: %+v", res)
	}
	var px struct {
		SnapshotVersion string
		Proxies         []api.ProxyStatus
	}
	call(t, cp, "GET", "/v1/proxies", viewerToken, nil).decode(t, &px)
	if len(px.Proxies) != 2 || px.SnapshotVersion != fmt.Sprint(bad.Revision) {
		t.Fatalf("proxies %+v", px)
	}
	p1 := px.Proxies[0]
	if p1.Node != "proxy-1" || p1.NackedVersion != fmt.Sprint(bad.Revision) || !strings.Contains(p1.NackReason, "test rejects this version") ||
		p1.Types[resource.ClusterType].AckedVersion != fmt.Sprint(wr.Revision) || p1.AckedVersion != fmt.Sprint(wr.Revision) {
		t.Fatalf("proxy-1 status %+v", p1)
	}
	if px.Proxies[1].AckedVersion != fmt.Sprint(bad.Revision) {
		t.Fatalf("proxy-2 status %+v", px.Proxies[1])
	}
	clustersAfterNack := client.count(resource.ClusterType)

	// Rollback, waiting for ACKs: both proxies apply it.
	r = call(t, cp, "POST", "/v1/models/rec/rollback", operatorToken, api.RollbackRequest{WaitForAck: api.Duration(10 * time.Second)})
	var rb api.ModelResponse
	r.decode(t, &rb)
	if r.code != 200 || rb.Proxies == nil || fmt.Sprint(rb.Proxies.Acked) != "[proxy-1 proxy-2]" || rb.Model.Spec.Traffic.Weights["v2"] != 80 {
		t.Fatalf("rollback: %d %s", r.code, r.body)
	}
	if _, _, err := client.waitFor(ctx, func(v string, ms []api.Model) bool { return v == fmt.Sprint(rb.Revision) }); err != nil {
		t.Fatal(err)
	}
	// No resend loop after the NACK: one more cluster response (the
	// rollback) since then.
	if n := client.count(resource.ClusterType); n != clustersAfterNack+1 {
		t.Fatalf("cluster responses after NACK: %d, want %d", n, clustersAfterNack+1)
	}
	var px2 struct{ Proxies []api.ProxyStatus }
	call(t, cp, "GET", "/v1/proxies", viewerToken, nil).decode(t, &px2)
	if px2.Proxies[0].NackedVersion != "" {
		t.Fatalf("NACK not cleared by a later ACK: %+v", px2.Proxies[0])
	}

	// A deleted model disappears from the proxy's config.
	call(t, cp, "DELETE", "/v1/models/rec", operatorToken, nil)
	if _, _, err := client.waitFor(ctx, func(v string, ms []api.Model) bool { return len(ms) == 0 }); err != nil {
		t.Fatal(err)
	}
	other.Close()
	for tr := cp.Tracker(); ; {
		tr.mu.Lock()
		ch := tr.changed
		tr.mu.Unlock()
		if tr.Connected() == 1 {
			break
		}
		select {
		case <-ch:
		case <-ctx.Done():
			t.Fatalf("proxy-2's stream still counted: %+v", tr.Proxies())
		}
	}
	if _, total := cp.Tracker().WaitForAck(ctx, "0"); fmt.Sprint(total) != "[proxy-1]" {
		t.Fatalf("after proxy-2 left: %v", total)
	}
}

func TestRestartServesStoredState(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	cp := startCP(t, path)
	call(t, cp, "PUT", "/v1/models/a", editorToken, doc("a", 3, 7))
	cp.Close()

	cp2 := startCP(t, path)
	if cp2.SnapshotVersion() != 1 {
		t.Fatalf("snapshot version after restart: %d", cp2.SnapshotVersion())
	}
	client := dialADS(t, cp2.XDSAddr(), "p", nil)
	if _, _, err := client.waitFor(waitCtx(t), func(v string, ms []api.Model) bool {
		return len(ms) == 1 && ms[0].Spec.Traffic.Weights["v2"] == 7
	}); err != nil {
		t.Fatal(err)
	}
}

func TestMetricsEndpoint(t *testing.T) {
	cp := startCP(t, "")
	call(t, cp, "PUT", "/v1/models/a", editorToken, doc("a", 1, 1))
	client := dialADS(t, cp.XDSAddr(), "p", nil)
	if _, _, err := client.waitFor(waitCtx(t), func(v string, ms []api.Model) bool { return len(ms) == 1 }); err != nil {
		t.Fatal(err)
	}
	cp.Tracker().WaitForAck(waitCtx(t), "1")
	r := call(t, cp, "GET", "/metrics", "", nil)
	for _, want := range []string{
		`switchyard_controlplane_api_requests_total{code="201",method="PUT",route="PUT /v1/models/{name}"} 1`,
		`switchyard_controlplane_store_duration_seconds_count{op="put"} 1`,
		`switchyard_controlplane_snapshot_version 1`,
		`switchyard_controlplane_connected_proxies 1`,
		`switchyard_controlplane_push_duration_seconds_count`,
		`switchyard_controlplane_ack_latency_seconds_count 1`,
	} {
		if !strings.Contains(string(r.body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// A rollback without a named revision restores the last split known to be
// healthy: it passes over revisions a canary wrote mid-ramp, says which it
// skipped, and reports how the proxies applied it.
func TestRollbackSkipsMidCanaryRevisions(t *testing.T) {
	cp := startCP(t, "")
	ctx := waitCtx(t)
	call(t, cp, "PUT", "/v1/models/a", editorToken, doc("a", 100, 0)) // revision 1: healthy
	for _, step := range []struct {
		action string
		w2     int
	}{{"canary-start", 20}, {"canary-promote", 50}} {
		m := doc("a", 100-step.w2, step.w2)
		if err := api.Normalize(&m); err != nil {
			t.Fatal(err)
		}
		if _, err := cp.Store().Put(ctx, m, store.Precondition{MustExist: true}, store.Change{Subject: "canary-controller", Action: step.action}); err != nil {
			t.Fatal(err)
		}
	}
	r := call(t, cp, "POST", "/v1/models/a/rollback", operatorToken, nil)
	var rb api.ModelResponse
	r.decode(t, &rb)
	if r.code != 200 || rb.Model.Spec.Traffic.Weights["v1"] != 100 || rb.Model.Spec.Traffic.Weights["v2"] != 0 {
		t.Fatalf("rollback: %d %s", r.code, r.body)
	}
	if rb.RestoredRevision != 1 {
		t.Fatalf("restored revision %d, want 1", rb.RestoredRevision)
	}
	if len(rb.Skipped) != 1 || rb.Skipped[0].Revision != 2 || !strings.Contains(rb.Skipped[0].Why, "canary-start") {
		t.Fatalf("skipped %+v", rb.Skipped)
	}
	if rb.Proxies == nil || rb.Proxies.Total != 0 || !strings.Contains(rb.Proxies.Message, "no proxies connected") {
		t.Fatalf("proxies %+v", rb.Proxies)
	}
}
