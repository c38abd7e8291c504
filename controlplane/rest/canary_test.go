package rest_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/controlplane"
	"github.com/switchyard-dev/switchyard/controlplane/cptest"
	"github.com/switchyard-dev/switchyard/controlplane/store"
)

func TestCanaryAPIErrors(t *testing.T) {
	cp := cptest.Start(t, controlplane.Config{AllowAnonymousXDS: true}, &controlplane.CanaryOptions{Interval: time.Hour})
	m := cptest.Doc("m", 100, 0)
	m.Defaults()
	if _, err := cp.Store().Put(context.Background(), m, store.Precondition{}, store.Change{Subject: "t", Action: "put"}); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		method, path, token string
		body                any
		code                int
		want                string
	}{
		{"GET", "/v1/models/m/canary", "", nil, 401, "bearer"},
		{"GET", "/v1/models/nope/canary", cptest.ViewerToken, nil, 404, "not found"},
		{"GET", "/v1/models/m/canary", cptest.ViewerToken, nil, 200, "no canary: spec.canary is not set"},
		{"POST", "/v1/models/m/canary/start", cptest.ViewerToken, nil, 403, "needs editor"},
		{"POST", "/v1/models/m/canary/start", cptest.EditorToken, nil, 400, "version: required"},
		{"POST", "/v1/models/m/canary/start", cptest.EditorToken, map[string]any{"version": "v9"}, 400, "v9"},
		{"POST", "/v1/models/m/canary/start", cptest.EditorToken, map[string]any{"version": "v2", "steps": []int{50, 20}}, 400, "steps"},
		{"POST", "/v1/models/m/canary/start", cptest.EditorToken, map[string]any{"version": "v2", "bogus": 1}, 400, "bogus"},
		{"POST", "/v1/models/m/canary/start", cptest.EditorToken, `{"version": `, 400, "malformed JSON"},
		{"POST", "/v1/models/m/canary/start", cptest.EditorToken, map[string]any{"version": "v2", "waitForAck": "5m"}, 400, "waitForAck"},
		{"POST", "/v1/models/m/canary/pause", cptest.EditorToken, map[string]any{"steps": []int{100}}, 400, "start only"},
		{"POST", "/v1/models/m/canary/pause", cptest.EditorToken, nil, 409, "no canary in progress"},
		{"POST", "/v1/models/m/canary/abort", cptest.EditorToken, nil, 403, "needs operator"},
		{"POST", "/v1/models/m/canary/reset", cptest.OperatorToken, map[string]any{"version": "v2"}, 409, "no failed or finished canary"},
		{"POST", "/v1/models/nope/canary/start", cptest.EditorToken, map[string]any{"version": "v2"}, 404, "not found"},
		{"POST", "/v1/models/m/canary/start", cptest.EditorToken, map[string]any{"version": "v2", "stepDuration": "1h", "waitForAck": "0s"}, 200, `"phase": "progressing"`},
		{"POST", "/v1/models/m/canary/start", cptest.EditorToken, map[string]any{"version": "v2"}, 409, "already progressing"},
		{"POST", "/v1/models/m/canary/resume", cptest.EditorToken, nil, 409, "resume does not apply"},
		{"POST", "/v1/models/m/canary/pause", cptest.EditorToken, map[string]any{"reason": "weekend"}, 200, `"phase": "paused"`},
		{"GET", "/v1/models/m/canary", cptest.ViewerToken, nil, 200, "paused: weekend"},
		{"POST", "/v1/models/m/canary/resume", cptest.EditorToken, nil, 200, `"phase": "progressing"`},
	}
	for _, c := range cases {
		r := cptest.Call(t, cp, c.method, c.path, c.token, c.body)
		if r.Code != c.code || !strings.Contains(string(r.Body), c.want) {
			t.Errorf("%s %s %v: %d %s; want %d containing %q", c.method, c.path, c.body, r.Code, r.Body, c.code, c.want)
		}
	}
	// Pause and resume are in the audit log with their subject.
	entries, err := cp.Store().Audit(context.Background(), store.AuditQuery{Model: "m"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Action+" by "+e.Subject)
	}
	if want := "canary-resume by eddie,canary-pause by eddie,canary-start by eddie,put by t"; strings.Join(got, ",") != want {
		t.Fatalf("audit %v, want %s", got, want)
	}
}
