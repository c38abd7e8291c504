package rest_test

import (
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/switchyard-dev/switchyard/api"
	"github.com/switchyard-dev/switchyard/controlplane"
	"github.com/switchyard-dev/switchyard/controlplane/cptest"
	"github.com/switchyard-dev/switchyard/controlplane/rest"
	"github.com/switchyard-dev/switchyard/controlplane/store"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestAuthAndRoles(t *testing.T) {
	cp := cptest.Start(t, controlplane.Config{AllowAnonymousXDS: true}, nil)
	if r := cptest.Call(t, cp, "PUT", "/v1/models/a", cptest.EditorToken, cptest.Doc("a", 1, 1)); r.Code != http.StatusCreated {
		t.Fatalf("editor create: %d %s", r.Code, r.Body)
	}
	tests := []struct {
		method, path, token string
		body                any
		want                int
	}{
		{"GET", "/v1/models", "", nil, http.StatusUnauthorized},
		{"GET", "/v1/models", "wrong-token-0123456789", nil, http.StatusUnauthorized},
		{"GET", "/v1/models", cptest.ViewerToken, nil, http.StatusOK},
		{"GET", "/v1/proxies", cptest.ViewerToken, nil, http.StatusOK},
		{"GET", "/v1/audit", cptest.ViewerToken, nil, http.StatusOK},
		{"PUT", "/v1/models/a", cptest.ViewerToken, cptest.Doc("a", 1, 2), http.StatusForbidden},
		{"PUT", "/v1/models/a/weights", cptest.ViewerToken, api.WeightsRequest{Weights: map[string]int{"v1": 1}}, http.StatusForbidden},
		{"PUT", "/v1/models/a/weights", cptest.EditorToken, api.WeightsRequest{Weights: map[string]int{"v1": 1}}, http.StatusOK},
		{"POST", "/v1/models/a/rollback", cptest.EditorToken, nil, http.StatusForbidden},
		{"DELETE", "/v1/models/a", cptest.EditorToken, nil, http.StatusForbidden},
		{"POST", "/v1/models/a/rollback", cptest.OperatorToken, nil, http.StatusOK},
		{"DELETE", "/v1/models/a", cptest.OperatorToken, nil, http.StatusOK},
	}
	for _, tc := range tests {
		r := cptest.Call(t, cp, tc.method, tc.path, tc.token, tc.body)
		if r.Code != tc.want {
			t.Errorf("%s %s as %q: got %d, want %d: %s", tc.method, tc.path, tc.token, r.Code, tc.want, r.Body)
		}
	}
	r := cptest.Call(t, cp, "GET", "/v1/models", "", nil)
	if !strings.Contains(string(r.Body), "missing or invalid bearer token") {
		t.Errorf("401 body %s", r.Body)
	}
	r = cptest.Call(t, cp, "DELETE", "/v1/models/a", cptest.ViewerToken, nil)
	if !strings.Contains(string(r.Body), "vera has role viewer; this needs operator") {
		t.Errorf("403 body %s", r.Body)
	}
}

func TestModelLifecycleAndETags(t *testing.T) {
	cp := cptest.Start(t, controlplane.Config{AllowAnonymousXDS: true}, nil)
	r := cptest.Call(t, cp, "PUT", "/v1/models/a", cptest.EditorToken, cptest.Doc("a", 80, 20), "X-Switchyard-Reason", "first rollout")
	if r.Code != http.StatusCreated || r.ETag != `"1"` {
		t.Fatalf("create: %d etag %s %s", r.Code, r.ETag, r.Body)
	}
	var got api.ModelResponse
	r = cptest.Call(t, cp, "GET", "/v1/models/a", cptest.ViewerToken, nil)
	r.Decode(t, &got)
	if r.ETag != `"1"` || got.Revision != 1 || got.Model.Spec.Traffic.Weights["v1"] != 80 || got.Model.Spec.Versions[0].BackendModel != "a" {
		t.Fatalf("get: %s %+v", r.ETag, got)
	}
	// Create-only on an existing model.
	if r := cptest.Call(t, cp, "PUT", "/v1/models/a", cptest.EditorToken, cptest.Doc("a", 1, 1), "If-None-Match", "*"); r.Code != http.StatusConflict {
		t.Fatalf("If-None-Match on existing: %d", r.Code)
	}
	// Update with the right ETag.
	r = cptest.Call(t, cp, "PUT", "/v1/models/a", cptest.EditorToken, cptest.Doc("a", 50, 50), "If-Match", `"1"`)
	if r.Code != http.StatusOK || r.ETag != `"3"` && r.ETag != `"2"` {
		t.Fatalf("update: %d %s %s", r.Code, r.ETag, r.Body)
	}
	cur := r.ETag
	// A stale ETag: 409, the current ETag in the answer, nothing changes.
	before := cptest.Revision(t, cp)
	r = cptest.Call(t, cp, "PUT", "/v1/models/a", cptest.EditorToken, cptest.Doc("a", 1, 99), "If-Match", `"1"`)
	var conflict api.ErrorResponse
	r.Decode(t, &conflict)
	if r.Code != http.StatusConflict || r.ETag != cur || !strings.Contains(conflict.Error, "not 1") {
		t.Fatalf("stale update: %d %s %s", r.Code, r.ETag, r.Body)
	}
	if cptest.Revision(t, cp) != before {
		t.Fatal("a stale write changed the store")
	}
	if r := cptest.Call(t, cp, "PUT", "/v1/models/a/weights", cptest.EditorToken, api.WeightsRequest{Weights: map[string]int{"v1": 1}}, "If-Match", `"1"`); r.Code != http.StatusConflict {
		t.Fatalf("stale weights: %d", r.Code)
	}
	if r := cptest.Call(t, cp, "DELETE", "/v1/models/a", cptest.OperatorToken, nil, "If-Match", `"1"`); r.Code != http.StatusConflict {
		t.Fatalf("stale delete: %d", r.Code)
	}
	if r := cptest.Call(t, cp, "PUT", "/v1/models/a", cptest.EditorToken, cptest.Doc("a", 1, 1), "If-Match", "abc"); r.Code != http.StatusBadRequest {
		t.Fatalf("bad If-Match: %d", r.Code)
	}
	var list struct {
		Revision int64
		Items    []api.ModelResponse
	}
	cptest.Call(t, cp, "GET", "/v1/models", cptest.ViewerToken, nil).Decode(t, &list)
	if len(list.Items) != 1 || list.Revision != before {
		t.Fatalf("list %+v", list)
	}
	if r := cptest.Call(t, cp, "DELETE", "/v1/models/a", cptest.OperatorToken, nil, "If-Match", cur); r.Code != http.StatusOK {
		t.Fatalf("delete: %d %s", r.Code, r.Body)
	}
	if r := cptest.Call(t, cp, "GET", "/v1/models/a", cptest.ViewerToken, nil); r.Code != http.StatusNotFound {
		t.Fatalf("get deleted: %d", r.Code)
	}
	if r := cptest.Call(t, cp, "GET", "/v1/models/zzz/history", cptest.ViewerToken, nil); r.Code != http.StatusNotFound {
		t.Fatalf("history of unknown: %d", r.Code)
	}
	// YAML bodies work too.
	y := "metadata: {name: b}\nspec:\n  versions: [{name: v1, endpoints: ['127.0.0.1:9000']}]\n"
	if r := cptest.Call(t, cp, "PUT", "/v1/models/b", cptest.EditorToken, y, "Content-Type", "application/yaml"); r.Code != http.StatusCreated {
		t.Fatalf("yaml: %d %s", r.Code, r.Body)
	}
}

func TestBadBodiesStoreNothing(t *testing.T) {
	cp := cptest.Start(t, controlplane.Config{AllowAnonymousXDS: true}, nil)
	if r := cptest.Call(t, cp, "PUT", "/v1/models/a", cptest.EditorToken, cptest.Doc("a", 1, 1)); r.Code != http.StatusCreated {
		t.Fatal(r.Code)
	}
	huge := `{"metadata": {"name": "a", "labels": {"x": "` + strings.Repeat("y", rest.DefaultMaxBodyBytes) + `"}}}`
	bad := cptest.Doc("a", 1, 1)
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
		{"name mismatch", "/v1/models/a", cptest.Doc("b", 1, 1), 400, "metadata.name", `"b" does not match the name in the URL "a"`},
		{"oversized", "/v1/models/a", huge, 400, "body", "larger than 1048576 bytes"},
		{"weights unknown version", "/v1/models/a/weights", `{"weights": {"v7": 1}}`, 400, "spec.traffic.weights.v7", "no such version"},
		{"weights zero", "/v1/models/a/weights", `{"weights": {"v1": 0, "v2": 0}}`, 400, "spec.traffic.weights", "weights total 0"},
		{"weights range", "/v1/models/a/weights", `{"weights": {"v1": 10001}}`, 400, "spec.traffic.weights.v1", "out of range"},
		{"weights unknown field", "/v1/models/a/weights", `{"weight": {"v1": 1}}`, 400, "weight", "unknown field"},
		{"weights missing", "/v1/models/a/weights", `{}`, 400, "weights", "required"},
		{"rollback bad field", "/v1/models/a/rollback", `{"rev": 1}`, 400, "rev", "unknown field"},
	}
	before := cptest.Revision(t, cp)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			method := "PUT"
			if strings.HasSuffix(tc.path, "rollback") {
				method = "POST"
			}
			token := cptest.EditorToken
			if method == "POST" {
				token = cptest.OperatorToken
			}
			r := cptest.Call(t, cp, method, tc.path, token, tc.body)
			if r.Code != tc.code {
				t.Fatalf("got %d, want %d: %s", r.Code, tc.code, r.Body)
			}
			var e api.ErrorResponse
			r.Decode(t, &e)
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
	if after := cptest.Revision(t, cp); after != before {
		t.Fatalf("bad bodies changed the store: revision %d -> %d", before, after)
	}
}

// TestConcurrentEditorsLoseNoUpdate runs editors that each read, change and
// write back with If-Match over real HTTP, retrying on 409.
func TestConcurrentEditorsLoseNoUpdate(t *testing.T) {
	cp := cptest.Start(t, controlplane.Config{AllowAnonymousXDS: true}, nil)
	if r := cptest.Call(t, cp, "PUT", "/v1/models/a", cptest.EditorToken, cptest.Doc("a", 1, 1)); r.Code != http.StatusCreated {
		t.Fatal(r.Code)
	}
	const editors, each = 4, 8
	var wg sync.WaitGroup
	var conflicts sync.Map
	for e := 0; e < editors; e++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for done, tries := 0, 0; done < each && tries < 1000; tries++ {
				r := cptest.Call(t, cp, "GET", "/v1/models/a", cptest.EditorToken, nil)
				var cur api.ModelResponse
				r.Decode(t, &cur)
				m := cur.Model
				m.Spec.Traffic.Weights["v1"]++
				w := cptest.Call(t, cp, "PUT", "/v1/models/a", cptest.EditorToken, m, "If-Match", r.ETag)
				switch w.Code {
				case http.StatusOK:
					done++
				case http.StatusConflict:
					conflicts.Store(tries, true)
				default:
					t.Errorf("PUT: %d %s", w.Code, w.Body)
					return
				}
			}
		}()
	}
	wg.Wait()
	var got api.ModelResponse
	cptest.Call(t, cp, "GET", "/v1/models/a", cptest.ViewerToken, nil).Decode(t, &got)
	if w := got.Model.Spec.Traffic.Weights["v1"]; w != 1+editors*each {
		t.Fatalf("weight %d, want %d: updates were lost", w, 1+editors*each)
	}
	var hist struct{ Items []api.Record }
	cptest.Call(t, cp, "GET", "/v1/models/a/history", cptest.ViewerToken, nil).Decode(t, &hist)
	if len(hist.Items) != 1+editors*each {
		t.Fatalf("history has %d revisions, want %d", len(hist.Items), 1+editors*each)
	}
}

func TestWeightsRollbackHistoryAudit(t *testing.T) {
	cp := cptest.Start(t, controlplane.Config{AllowAnonymousXDS: true}, nil)
	cptest.Call(t, cp, "PUT", "/v1/models/a", cptest.EditorToken, cptest.Doc("a", 80, 20))
	r := cptest.Call(t, cp, "PUT", "/v1/models/a/weights", cptest.EditorToken, api.WeightsRequest{Weights: map[string]int{"v1": 50, "v2": 50}, Reason: "ramp"})
	var w api.ModelResponse
	r.Decode(t, &w)
	if r.Code != 200 || w.Model.Spec.Traffic.Weights["v2"] != 50 || w.Revision != 2 {
		t.Fatalf("weights: %d %s", r.Code, r.Body)
	}
	cptest.Call(t, cp, "PUT", "/v1/models/a/weights", cptest.EditorToken, api.WeightsRequest{Weights: map[string]int{"v2": 1}})
	// Rollback to the previous revision (2: 50/50).
	r = cptest.Call(t, cp, "POST", "/v1/models/a/rollback", cptest.OperatorToken, nil)
	var rb api.ModelResponse
	r.Decode(t, &rb)
	if r.Code != 200 || rb.Revision != 4 || rb.Model.Spec.Traffic.Weights["v1"] != 50 {
		t.Fatalf("rollback: %d %s", r.Code, r.Body)
	}
	// Rollback to a named revision (1: 80/20).
	r = cptest.Call(t, cp, "POST", "/v1/models/a/rollback", cptest.OperatorToken, api.RollbackRequest{Revision: 1, Reason: "bad canary"})
	r.Decode(t, &rb)
	if r.Code != 200 || rb.Model.Spec.Traffic.Weights["v1"] != 80 {
		t.Fatalf("rollback to 1: %d %s", r.Code, r.Body)
	}
	if r := cptest.Call(t, cp, "POST", "/v1/models/a/rollback", cptest.OperatorToken, api.RollbackRequest{Revision: 99}); r.Code != 404 {
		t.Fatalf("rollback to unknown revision: %d", r.Code)
	}
	var hist struct{ Items []api.Record }
	cptest.Call(t, cp, "GET", "/v1/models/a/history?limit=3", cptest.ViewerToken, nil).Decode(t, &hist)
	if len(hist.Items) != 3 || hist.Items[0].Action != "rollback" || hist.Items[0].Reason != "bad canary" || hist.Items[2].Action != "weights" {
		t.Fatalf("history %+v", hist.Items)
	}
	var audit struct{ Items []api.AuditEntry }
	cptest.Call(t, cp, "GET", "/v1/audit?model=a&limit=10", cptest.ViewerToken, nil).Decode(t, &audit)
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
	cptest.Call(t, cp, "DELETE", "/v1/models/a", cptest.OperatorToken, nil)
	if r := cptest.Call(t, cp, "POST", "/v1/models/a/rollback", cptest.OperatorToken, nil); r.Code != 200 {
		t.Fatalf("rollback of a deleted model: %d %s", r.Code, r.Body)
	}
	if r := cptest.Call(t, cp, "GET", "/v1/audit?limit=x", cptest.ViewerToken, nil); r.Code != 400 {
		t.Fatalf("bad limit: %d", r.Code)
	}
}

// A rollback without a named revision restores the last split known to be
// healthy: it passes over revisions a canary wrote mid-ramp, says which it
// skipped, and reports how the proxies applied it.
func TestRollbackSkipsMidCanaryRevisions(t *testing.T) {
	cp := cptest.Start(t, controlplane.Config{AllowAnonymousXDS: true}, nil)
	ctx := cptest.WaitCtx(t)
	cptest.Call(t, cp, "PUT", "/v1/models/a", cptest.EditorToken, cptest.Doc("a", 100, 0)) // revision 1: healthy
	for _, step := range []struct {
		action string
		w2     int
	}{{"canary-start", 20}, {"canary-promote", 50}} {
		m := cptest.Doc("a", 100-step.w2, step.w2)
		if err := api.Normalize(&m); err != nil {
			t.Fatal(err)
		}
		if _, err := cp.Store().Put(ctx, m, store.Precondition{MustExist: true}, store.Change{Subject: "canary-controller", Action: step.action}); err != nil {
			t.Fatal(err)
		}
	}
	r := cptest.Call(t, cp, "POST", "/v1/models/a/rollback", cptest.OperatorToken, nil)
	var rb api.ModelResponse
	r.Decode(t, &rb)
	if r.Code != 200 || rb.Model.Spec.Traffic.Weights["v1"] != 100 || rb.Model.Spec.Traffic.Weights["v2"] != 0 {
		t.Fatalf("rollback: %d %s", r.Code, r.Body)
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
