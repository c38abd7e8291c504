package rest_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/api"
	"github.com/switchyard-dev/switchyard/controlplane"
	"github.com/switchyard-dev/switchyard/controlplane/cptest"
)

// Adversarial input to the control plane's REST API: JSON that parses but is
// absurd, unknown routes, wrong methods, broken Authorization headers and
// If-Match garbage. Every refusal is a JSON error with the right 4xx that
// names the problem, and nothing is stored (the store's revision does not
// move).
func TestAPIHardening(t *testing.T) {
	cp := cptest.Start(t, controlplane.Config{AllowAnonymousXDS: true}, &controlplane.CanaryOptions{Interval: time.Hour})
	if r := cptest.Call(t, cp, "PUT", "/v1/models/a", cptest.EditorToken, cptest.Doc("a", 1, 1)); r.Code != http.StatusCreated {
		t.Fatalf("seed: %d %s", r.Code, r.Body)
	}
	before := cptest.Revision(t, cp)

	manyVersions := func(n int) string {
		var sb strings.Builder
		sb.WriteString(`{"metadata":{"name":"a"},"spec":{"versions":[`)
		for i := range n {
			if i > 0 {
				sb.WriteByte(',')
			}
			fmt.Fprintf(&sb, `{"name":"v%d","endpoints":["127.0.0.1:1"]}`, i)
		}
		sb.WriteString(`],"traffic":{"weights":{"v0":1}}}}`)
		return sb.String()
	}
	deep := strings.Repeat(`{"a":`, 100000) + "1" + strings.Repeat("}", 100000)
	deepLabels := `{"metadata":{"name":"a","labels":` + strings.Repeat(`[`, 20000) + strings.Repeat(`]`, 20000) + `}}`
	withSpec := func(spec string) string {
		return `{"metadata":{"name":"a"},"spec":{"versions":[{"name":"v1","endpoints":["127.0.0.1:1"]},{"name":"v2","endpoints":["127.0.0.1:2"]}],` + spec + `}}`
	}

	cases := []struct {
		name, method, path, token, body string
		headers                         []string
		code                            int
		want                            string
	}{
		// Absurd documents.
		{"deep nesting", "PUT", "/v1/models/a", cptest.EditorToken, deep, nil, 400, ""},
		{"deep nesting in a field", "PUT", "/v1/models/a", cptest.EditorToken, deepLabels, nil, 400, "max depth"},
		{"many versions", "PUT", "/v1/models/a", cptest.EditorToken, manyVersions(20000), nil, 400, "versions"},
		{"weight of 2^63", "PUT", "/v1/models/a", cptest.EditorToken, withSpec(`"traffic":{"weights":{"v1":9223372036854775807,"v2":1}}`), nil, 400, "weights"},
		{"weight above int64", "PUT", "/v1/models/a", cptest.EditorToken, withSpec(`"traffic":{"weights":{"v1":1e30}}`), nil, 400, "weights"},
		{"negative weight", "PUT", "/v1/models/a", cptest.EditorToken, withSpec(`"traffic":{"weights":{"v1":-5,"v2":10}}`), nil, 400, "weights.v1"},
		{"fractional weight", "PUT", "/v1/models/a", cptest.EditorToken, withSpec(`"traffic":{"weights":{"v1":0.5}}`), nil, 400, "weights"},
		{"negative timeout", "PUT", "/v1/models/a", cptest.EditorToken, withSpec(`"traffic":{"weights":{"v1":1}},"timeout":"-5s"`), nil, 400, "timeout"},
		{"absurd timeout", "PUT", "/v1/models/a", cptest.EditorToken, withSpec(`"traffic":{"weights":{"v1":1}},"timeout":"9999999999h"`), nil, 400, "timeout"},
		{"negative breaker openFor", "PUT", "/v1/models/a", cptest.EditorToken, withSpec(`"traffic":{"weights":{"v1":1}},"fallback":{"chain":["backup"],"backup":"v2","breaker":{"consecutiveFailures":5,"openFor":"-10s"}}`), nil, 400, "openFor"},
		{"negative canary stepDuration", "PUT", "/v1/models/a", cptest.EditorToken, withSpec(`"traffic":{"weights":{"v1":1}},"canary":{"version":"v2","stepDuration":"-5m"}`), nil, 400, "stepDuration"},
		{"negative cache ttl", "PUT", "/v1/models/a", cptest.EditorToken, withSpec(`"traffic":{"weights":{"v1":1}},"cache":{"ttl":"-1s","maxEntries":10}`), nil, 400, "ttl"},
		{"negative retries", "PUT", "/v1/models/a", cptest.EditorToken, withSpec(`"traffic":{"weights":{"v1":1}},"retries":{"attempts":-1,"budgetPercent":20}`), nil, 400, "retries"},
		{"shadow percent 1e9", "PUT", "/v1/models/a", cptest.EditorToken, withSpec(`"traffic":{"weights":{"v1":1}},"shadow":{"version":"v2","percent":1000000000}`), nil, 400, "percent"},
		{"null document", "PUT", "/v1/models/a", cptest.EditorToken, `null`, nil, 400, ""},
		{"array document", "PUT", "/v1/models/a", cptest.EditorToken, `[]`, nil, 400, ""},
		{"string document", "PUT", "/v1/models/a", cptest.EditorToken, `"a"`, nil, 400, ""},
		{"trailing garbage", "PUT", "/v1/models/a", cptest.EditorToken, `{"metadata":{"name":"a"}} {"x":1}`, nil, 400, ""},
		{"invalid UTF-8 in name", "PUT", "/v1/models/a", cptest.EditorToken, "{\"metadata\":{\"name\":\"a\xff\"}}", nil, 400, "name"},
		{"unicode model name", "PUT", "/v1/models/r%C3%A9commender", cptest.EditorToken, withSpec(`"traffic":{"weights":{"v1":1}}`), nil, 400, "name"},
		{"slash in model name", "PUT", "/v1/models/a%2Fb", cptest.EditorToken, `{"spec":{"versions":[{"name":"v1","endpoints":["127.0.0.1:1"]}],"traffic":{"weights":{"v1":1}}}}`, nil, 400, "name"},
		{"unicode version name", "PUT", "/v1/models/a", cptest.EditorToken, `{"metadata":{"name":"a"},"spec":{"versions":[{"name":"v\u00e9","endpoints":["127.0.0.1:1"]}],"traffic":{"weights":{"v\u00e9":1}}}}`, nil, 400, "name"},
		{"endpoint garbage", "PUT", "/v1/models/a", cptest.EditorToken, `{"metadata":{"name":"a"},"spec":{"versions":[{"name":"v1","endpoints":["http://x y:99999"]}],"traffic":{"weights":{"v1":1}}}}`, nil, 400, "endpoints"},
		{"weights: 10^5 entries", "PUT", "/v1/models/a/weights", cptest.EditorToken, `{"weights":{` + weightsN(20000) + `}}`, nil, 400, "weights"},
		{"weights: 2^63", "PUT", "/v1/models/a/weights", cptest.EditorToken, `{"weights":{"v1":9223372036854775807,"v2":9223372036854775807}}`, nil, 400, "weights"},
		{"weights: null", "PUT", "/v1/models/a/weights", cptest.EditorToken, `{"weights":null}`, nil, 400, "weights"},
		{"rollback: negative revision", "POST", "/v1/models/a/rollback", cptest.OperatorToken, `{"revision":-3}`, nil, 400, "revision"},
		{"rollback: negative wait", "POST", "/v1/models/a/rollback", cptest.OperatorToken, `{"waitForAck":"-1s"}`, nil, 400, "waitForAck"},
		{"rollback: unknown revision", "POST", "/v1/models/a/rollback", cptest.OperatorToken, `{"revision":999999}`, nil, 404, "no revision"},
		{"canary: negative stepDuration", "POST", "/v1/models/a/canary/start", cptest.EditorToken, `{"version":"v2","stepDuration":"-5m"}`, nil, 400, "stepDuration"},
		{"canary: 10^5 steps", "POST", "/v1/models/a/canary/start", cptest.EditorToken, `{"version":"v2","steps":[` + strings.Repeat("1,", 100000) + `100]}`, nil, 400, "steps"},
		{"canary: negative minRequests", "POST", "/v1/models/a/canary/start", cptest.EditorToken, `{"version":"v2","minRequests":-1}`, nil, 400, "minRequests"},
		{"canary: unknown action", "POST", "/v1/models/a/canary/explode", cptest.EditorToken, ``, nil, 404, "unknown canary action"},
		{"static fallback: huge shape", "PUT", "/v1/models/a/fallback/static", cptest.EditorToken, `{"outputs":[{"name":"s","datatype":"FP32","shape":[4611686018427387904,4],"data":[1]}]}`, nil, 400, "shape"},
		{"static fallback: negative shape", "PUT", "/v1/models/a/fallback/static", cptest.EditorToken, `{"outputs":[{"name":"s","datatype":"FP32","shape":[-1],"data":[1]}]}`, nil, 400, "shape"},
		{"static fallback: bad dtype", "PUT", "/v1/models/a/fallback/static", cptest.EditorToken, `{"outputs":[{"name":"s","datatype":"FP128","shape":[1],"data":[1]}]}`, nil, 400, "FP128"},
		{"stats: negative window", "GET", "/v1/models/a/stats?window=-1m", cptest.ViewerToken, ``, nil, 400, "window"},
		{"shadow report: huge window", "GET", "/v1/models/a/shadow/report?window=99999999h", cptest.ViewerToken, ``, nil, 400, "window"},
		{"history: negative limit", "GET", "/v1/models/a/history?limit=-1", cptest.ViewerToken, ``, nil, 400, "limit"},
		{"audit: limit overflow", "GET", "/v1/audit?limit=99999999999999999999", cptest.ViewerToken, ``, nil, 400, "limit"},

		// Preconditions.
		{"If-Match garbage", "PUT", "/v1/models/a", cptest.EditorToken, jsonText(cptest.Doc("a", 2, 1)), []string{"If-Match", "garbage"}, 400, "If-Match"},
		{"If-Match negative", "PUT", "/v1/models/a", cptest.EditorToken, jsonText(cptest.Doc("a", 2, 1)), []string{"If-Match", `"-1"`}, 400, "If-Match"},
		{"If-Match list", "PUT", "/v1/models/a", cptest.EditorToken, jsonText(cptest.Doc("a", 2, 1)), []string{"If-Match", `"1", "2"`}, 400, "If-Match"},
		{"If-Match overflow", "PUT", "/v1/models/a", cptest.EditorToken, jsonText(cptest.Doc("a", 2, 1)), []string{"If-Match", `"99999999999999999999"`}, 400, "If-Match"},
		{"If-Match stale", "PUT", "/v1/models/a", cptest.EditorToken, jsonText(cptest.Doc("a", 2, 1)), []string{"If-Match", `"999"`}, 409, "revision"},
		{"If-None-Match etag", "PUT", "/v1/models/a", cptest.EditorToken, jsonText(cptest.Doc("a", 2, 1)), []string{"If-None-Match", `"3"`}, 400, "If-None-Match"},
		{"If-None-Match on existing", "PUT", "/v1/models/a", cptest.EditorToken, jsonText(cptest.Doc("a", 2, 1)), []string{"If-None-Match", `*`}, 409, ""},
		{"delete If-Match garbage", "DELETE", "/v1/models/a", cptest.OperatorToken, ``, []string{"If-Match", `W/"x"`}, 400, "If-Match"},
		{"weights If-Match garbage", "PUT", "/v1/models/a/weights", cptest.EditorToken, `{"weights":{"v1":1}}`, []string{"If-Match", `""`}, 400, "If-Match"},

		// Authorization.
		{"no token", "PUT", "/v1/models/a", "", jsonText(cptest.Doc("a", 2, 1)), nil, 401, "bearer"},
		{"wrong scheme", "PUT", "/v1/models/a", "", jsonText(cptest.Doc("a", 2, 1)), []string{"Authorization", "Basic " + cptest.EditorToken}, 401, "bearer"},
		{"scheme only", "PUT", "/v1/models/a", "", jsonText(cptest.Doc("a", 2, 1)), []string{"Authorization", "Bearer"}, 401, "bearer"},
		{"empty token", "PUT", "/v1/models/a", "", jsonText(cptest.Doc("a", 2, 1)), []string{"Authorization", "Bearer "}, 401, "bearer"},
		{"token with spaces", "PUT", "/v1/models/a", "", jsonText(cptest.Doc("a", 2, 1)), []string{"Authorization", "Bearer  " + cptest.EditorToken + " x"}, 401, "bearer"},
		{"token prefix", "PUT", "/v1/models/a", "", jsonText(cptest.Doc("a", 2, 1)), []string{"Authorization", "Bearer " + cptest.EditorToken[:10]}, 401, "bearer"},
		{"huge token", "PUT", "/v1/models/a", "", jsonText(cptest.Doc("a", 2, 1)), []string{"Authorization", "Bearer " + strings.Repeat("x", 200000)}, 401, "bearer"},
		{"non-ASCII token", "PUT", "/v1/models/a", "", jsonText(cptest.Doc("a", 2, 1)), []string{"Authorization", "Bearer tökén"}, 401, "bearer"},
		{"viewer writes", "PUT", "/v1/models/a", cptest.ViewerToken, jsonText(cptest.Doc("a", 2, 1)), nil, 403, "needs editor"},
		{"editor deletes", "DELETE", "/v1/models/a", cptest.EditorToken, ``, nil, 403, "needs operator"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := cptest.Call(t, cp, tc.method, tc.path, tc.token, tc.body, tc.headers...)
			if r.Code != tc.code {
				t.Fatalf("got %d, want %d: %.300s", r.Code, tc.code, r.Body)
			}
			var e api.ErrorResponse
			if err := json.Unmarshal(r.Body, &e); err != nil || e.Error == "" {
				t.Fatalf("not a JSON error (%v): %.300s", err, r.Body)
			}
			msg := strings.ToLower(string(r.Body))
			if !strings.Contains(msg, strings.ToLower(tc.want)) {
				t.Fatalf("error does not name %q: %.300s", tc.want, r.Body)
			}
		})
	}

	// Unknown routes and wrong methods: JSON errors, 405 with Allow.
	routes := []struct {
		method, path string
		code         int
		allow        string
	}{
		{"GET", "/v1/nope", 404, ""},
		{"GET", "/", 404, ""},
		{"GET", "/v2/models/a/infer", 404, ""},
		{"POST", "/v1/models", 405, "GET"},
		{"PATCH", "/v1/models/a", 405, "PUT"},
		{"GET", "/v1/models/a/weights", 405, "PUT"},
		{"GET", "/v1/models/a/rollback", 405, "POST"},
		{"DELETE", "/v1/audit", 405, "GET"},
		{"POST", "/healthz", 405, "GET"},
	}
	for _, tc := range routes {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, cp.APIURL()+tc.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", "Bearer "+cptest.OperatorToken)
			req.Close = true
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.code {
				t.Fatalf("got %d, want %d: %s", resp.StatusCode, tc.code, b)
			}
			if tc.allow != "" && !strings.Contains(resp.Header.Get("Allow"), tc.allow) {
				t.Fatalf("Allow %q lacks %s", resp.Header.Get("Allow"), tc.allow)
			}
			var e api.ErrorResponse
			if err := json.Unmarshal(b, &e); err != nil || e.Error == "" || !strings.Contains(e.Error, tc.path) {
				t.Fatalf("want a JSON error naming %s, got %q (%v)", tc.path, b, err)
			}
		})
	}

	if after := cptest.Revision(t, cp); after != before {
		t.Fatalf("refused requests changed the store: revision %d -> %d", before, after)
	}
	// Still works.
	if r := cptest.Call(t, cp, "PUT", "/v1/models/a/weights", cptest.EditorToken, `{"weights":{"v1":3,"v2":1}}`); r.Code != 200 {
		t.Fatalf("good weights after attacks: %d %s", r.Code, r.Body)
	}
}

func weightsN(n int) string {
	var sb strings.Builder
	for i := range n {
		if i > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprintf(&sb, `"v%d":1`, i)
	}
	return sb.String()
}

func jsonText(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}
