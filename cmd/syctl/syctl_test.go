package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.yaml.in/yaml/v3"

	"github.com/switchyard-dev/switchyard/cmd/syctl/internal/client"
	"github.com/switchyard-dev/switchyard/controlplane"
	"github.com/switchyard-dev/switchyard/controlplane/canaryctl"
	"github.com/switchyard-dev/switchyard/controlplane/cptest"
	"github.com/switchyard-dev/switchyard/inference-backend/backendtest"
	"github.com/switchyard-dev/switchyard/proxy"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// The tokens of vera (viewer), eddie (editor) and olga (operator).
const (
	viewerToken   = cptest.ViewerToken
	editorToken   = cptest.EditorToken
	operatorToken = cptest.OperatorToken
)

// startCP starts a real control plane on 127.0.0.1:0 (with tokens when
// auth is true, else loopback no-auth).
func startCP(t *testing.T, auth bool) *cptest.CP {
	t.Helper()
	return cptest.Start(t, controlplane.Config{InsecureLoopbackNoAuth: !auth}, nil)
}

type result struct {
	stdout, stderr string
	code           int
}

// syctl runs the CLI in-process against cp with a clean environment
// (HOME in a temp folder, so no real config file is read).
func syctl(t *testing.T, cp *cptest.CP, env map[string]string, stdin string, args ...string) result {
	t.Helper()
	home := t.TempDir()
	getenv := func(k string) string {
		if v, ok := env[k]; ok {
			return v
		}
		switch k {
		case "SYCTL_SERVER":
			if cp != nil {
				return cp.APIURL()
			}
		case "HOME":
			return home
		}
		return ""
	}
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	code := run(ctx, args, strings.NewReader(stdin), &out, &errb, getenv)
	return result{out.String(), errb.String(), code}
}

// waitProxyApplied waits (bounded) until one proxy is connected and has
// applied revision rev.
func waitProxyApplied(t *testing.T, cp *cptest.CP, rev int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for res := cp.WaitApplied(ctx, rev); len(res.Acked) != 1; res = cp.WaitApplied(ctx, rev) {
		if ctx.Err() != nil {
			t.Fatalf("proxy did not apply revision %d: %+v", rev, res)
		}
		time.Sleep(20 * time.Millisecond) // not connected yet
	}
}

func mustOK(t *testing.T, r result) result {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	return r
}

func wantCode(t *testing.T, r result, code int, stderrHas ...string) {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", r.code, code, r.stdout, r.stderr)
	}
	for _, s := range stderrHas {
		if !strings.Contains(r.stderr, s) {
			t.Errorf("stderr lacks %q:\n%s", s, r.stderr)
		}
	}
}

func revisionOf(t *testing.T, s string) int64 {
	t.Helper()
	m := regexp.MustCompile(`revision (\d+)`).FindStringSubmatch(s)
	if m == nil {
		t.Fatalf("no revision in %q", s)
	}
	n, _ := strconv.ParseInt(m[1], 10, 64)
	return n
}

const exampleYAML = "../../examples/recommender.yaml"
const exampleJSON = "../../examples/recommender-ab.json"

func TestApplyYAMLJSONAndStdin(t *testing.T) {
	cp := startCP(t, false)

	r := mustOK(t, syctl(t, cp, nil, "", "apply", "-f", exampleYAML))
	if !strings.HasPrefix(r.stdout, "model/recommender created (revision ") {
		t.Fatalf("first apply: %q", r.stdout)
	}
	rev1 := revisionOf(t, r.stdout)
	rec, err := cp.Store().Get(context.Background(), "recommender")
	if err != nil || rec.Revision != rev1 || rec.Model.Spec.Shadow == nil || rec.Model.Spec.Shadow.Version != "v3" {
		t.Fatalf("stored: %+v, %v", rec, err)
	}

	// The same document again writes nothing.
	r = mustOK(t, syctl(t, cp, nil, "", "apply", "-f", exampleYAML))
	if want := "model/recommender unchanged (revision " + strconv.FormatInt(rev1, 10) + ")\n"; r.stdout != want {
		t.Fatalf("re-apply: %q, want %q", r.stdout, want)
	}

	// JSON replaces it.
	r = mustOK(t, syctl(t, cp, nil, "", "apply", "-f", exampleJSON))
	if !strings.HasPrefix(r.stdout, "model/recommender configured (revision ") || revisionOf(t, r.stdout) <= rev1 {
		t.Fatalf("JSON apply: %q", r.stdout)
	}
	rec, _ = cp.Store().Get(context.Background(), "recommender")
	if rec.Model.Spec.Shadow != nil || len(rec.Model.Spec.Versions) != 3 {
		t.Fatalf("after JSON apply: %+v", rec.Model.Spec)
	}

	// YAML from stdin, two documents.
	stdin := `apiVersion: switchyard.dev/v1
kind: Model
metadata: {name: ranker}
spec:
  versions: [{name: a, endpoints: ["127.0.0.1:8001"]}]
---
apiVersion: switchyard.dev/v1
kind: Model
metadata: {name: search}
spec:
  versions:
    - {name: a, endpoints: ["127.0.0.1:8001"]}
    - {name: b, endpoints: ["127.0.0.1:8002"]}
  traffic: {weights: {a: 3, b: 1}}
`
	r = mustOK(t, syctl(t, cp, nil, stdin, "apply", "-f", "-"))
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "model/ranker created") || !strings.HasPrefix(lines[2], "model/search created") ||
		lines[1] != "no proxies connected (nothing to apply it yet)" {
		t.Fatalf("stdin apply: %q", r.stdout)
	}

	// get models: the table and -o json / -o yaml.
	r = mustOK(t, syctl(t, cp, nil, "", "get", "models"))
	for _, want := range []string{"NAME", "recommender", "v1,v2,lite", "v1=80 v2=20", "search", "a=3 b=1"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("get models lacks %q:\n%s", want, r.stdout)
		}
	}
	r = mustOK(t, syctl(t, cp, nil, "", "get", "models", "-o", "json"))
	var list struct {
		Kind  string `json:"kind"`
		Items []struct {
			Metadata struct{ Name string } `json:"metadata"`
			Status   struct {
				Revision int64 `json:"revision"`
			} `json:"status"`
		} `json:"items"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil || len(list.Items) != 3 || list.Kind != "List" || list.Items[0].Status.Revision == 0 {
		t.Fatalf("get models -o json: %v\n%s", err, r.stdout)
	}
	r = mustOK(t, syctl(t, cp, nil, "", "-o", "yaml", "get", "model", "search"))
	var y struct {
		Kind string `yaml:"kind"`
		Spec struct {
			Traffic struct {
				Weights map[string]int `yaml:"weights"`
			} `yaml:"traffic"`
		} `yaml:"spec"`
		Status struct {
			Revision int64 `yaml:"revision"`
		} `yaml:"status"`
	}
	if err := yaml.Unmarshal([]byte(r.stdout), &y); err != nil || y.Status.Revision == 0 || y.Kind != "Model" || y.Spec.Traffic.Weights["a"] != 3 {
		t.Fatalf("get model -o yaml: %v %+v\n%s", err, y, r.stdout)
	}
}

func TestApplyValidationErrorsShowTheField(t *testing.T) {
	cp := startCP(t, false)
	bad := `apiVersion: switchyard.dev/v1
kind: Model
metadata: {name: recommender}
spec:
  versions: [{name: v1, endpoints: ["127.0.0.1:8001"]}]
  traffic: {weights: {v1: 50, v9: 50}}
`
	r := syctl(t, cp, nil, bad, "apply", "-f", "-")
	wantCode(t, r, exitError, "HTTP 400", "spec.traffic.weights.v9:")

	// An unknown field, from a JSON file: the API's strict decoder names it.
	dir := t.TempDir()
	p := filepath.Join(dir, "m.json")
	os.WriteFile(p, []byte(`{"apiVersion":"switchyard.dev/v1","kind":"Model","metadata":{"name":"recommender"},
"spec":{"versions":[{"name":"v1","endpoints":["127.0.0.1:8001"]}],"traffic":{"wieghts":{"v1":1}}}}`), 0o644)
	r = syctl(t, cp, nil, "", "apply", "-f", p)
	wantCode(t, r, exitError, "spec.traffic.wieghts: unknown field")

	// Nothing was stored.
	wantCode(t, syctl(t, cp, nil, "", "get", "model", "recommender"), exitNotFound)

	// No name: a local error naming the field.
	r = syctl(t, cp, nil, "kind: Model\nspec: {}\n", "apply", "-f", "-")
	wantCode(t, r, exitError, "metadata.name: required")
}

func TestWeightsHistoryRollbackWithProxy(t *testing.T) {
	cp := startCP(t, false)
	mustOK(t, syctl(t, cp, nil, "", "apply", "-f", exampleJSON))

	// A real proxy connected over xDS, so rollback reports its ACK.
	p, err := proxy.New(proxy.Config{HTTPAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", XDSAddr: cp.XDSAddr(),
		NodeID: "proxy-test", StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	rec, _ := cp.Store().Get(context.Background(), "recommender")
	waitProxyApplied(t, cp, rec.Revision)
	r := mustOK(t, syctl(t, cp, nil, "", "weights", "set", "recommender", "v1=50", "v2=50", "--reason", "A/B even"))
	if !strings.HasPrefix(r.stdout, "model/recommender weights v1=50 v2=50 (revision ") {
		t.Fatalf("weights set: %q", r.stdout)
	}
	abRev := revisionOf(t, r.stdout)
	r = mustOK(t, syctl(t, cp, nil, "", "weights", "set", "recommender", "v1=100", "v2=0"))
	if !strings.Contains(r.stdout, "weights v1=100 (revision") {
		t.Fatalf("weights set: %q", r.stdout)
	}

	r = mustOK(t, syctl(t, cp, nil, "", "history", "recommender"))
	for _, want := range []string{"REVISION", "(current)", "weights", "v1=50 v2=50", "A/B even", "v1=80 v2=20", "put"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("history lacks %q:\n%s", want, r.stdout)
		}
	}

	// Rollback to the previous revision, confirmed by the proxy.
	r = mustOK(t, syctl(t, cp, nil, "", "rollback", "recommender", "--reason", "v2 regressed"))
	want := "model/recommender rolled back to revision " + strconv.FormatInt(abRev, 10) + " (now revision "
	if !strings.HasPrefix(r.stdout, want) || !strings.Contains(r.stdout, "weights v1=50 v2=50") ||
		!strings.Contains(r.stdout, "applied on 1/1 proxies in ") {
		t.Fatalf("rollback:\n%s\nwant prefix %q", r.stdout, want)
	}
	rec, _ = cp.Store().Get(context.Background(), "recommender")
	if rec.Model.Spec.Traffic.Weights["v2"] != 50 {
		t.Fatalf("stored weights after rollback: %v", rec.Model.Spec.Traffic.Weights)
	}

	// The proxy reports it in `proxies`, and describe reads its breakers.
	r = mustOK(t, syctl(t, cp, nil, "", "proxies"))
	if !strings.Contains(r.stdout, "proxy-test") || !strings.Contains(r.stdout, strconv.FormatInt(rec.Revision, 10)) {
		t.Fatalf("proxies:\n%s", r.stdout)
	}
	r = mustOK(t, syctl(t, cp, nil, "", "proxies", "-o", "json"))
	var px struct {
		Proxies []struct{ Node string } `json:"proxies"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &px); err != nil || len(px.Proxies) != 1 || px.Proxies[0].Node != "proxy-test" {
		t.Fatalf("proxies -o json: %v\n%s", err, r.stdout)
	}
	r = mustOK(t, syctl(t, cp, nil, "", "describe", "model", "recommender", "--proxy-admin", "http://"+p.AdminAddr()))
	for _, want := range []string{"Name:        recommender", "VERSION", "serving", "backup", "closed", "1/1 proxies have applied revision"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("describe lacks %q:\n%s", want, r.stdout)
		}
	}
	// Without a stats source the live columns say n/a.
	r = mustOK(t, syctl(t, cp, nil, "", "describe", "model", "recommender"))
	if !strings.Contains(r.stdout, "n/a") {
		t.Errorf("describe without stats lacks n/a:\n%s", r.stdout)
	}
	r = mustOK(t, syctl(t, cp, nil, "", "describe", "model", "recommender", "-o", "json"))
	var dv describeView
	if err := json.Unmarshal([]byte(r.stdout), &dv); err != nil || len(dv.Variants) != 3 || dv.Variants[1].Weight != 50 {
		t.Fatalf("describe -o json: %v\n%s", err, r.stdout)
	}

	// Rollback to a named revision; an unknown one is not found.
	r = mustOK(t, syctl(t, cp, nil, "", "rollback", "recommender", "--to", strconv.FormatInt(abRev-1, 10), "--wait", "0"))
	if !strings.Contains(r.stdout, "weights v1=80 v2=20") {
		t.Fatalf("rollback --to: %q", r.stdout)
	}
	wantCode(t, syctl(t, cp, nil, "", "rollback", "recommender", "--to", "999"), exitNotFound, "no revision 999")

	// The audit log names every change.
	r = mustOK(t, syctl(t, cp, nil, "", "audit", "--model", "recommender"))
	for _, want := range []string{"anonymous", "rollback", "v2 regressed", "weights v1=50 v2=50 → v1=100", "created:"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("audit lacks %q:\n%s", want, r.stdout)
		}
	}
	r = mustOK(t, syctl(t, cp, nil, "", "audit", "-o", "json"))
	var au struct {
		Items []struct{ Action string } `json:"items"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &au); err != nil || len(au.Items) != 5 {
		t.Fatalf("audit -o json: %v (%d items)\n%s", err, len(au.Items), r.stdout)
	}
}

func TestStaleRevisionIsAConflict(t *testing.T) {
	cp := startCP(t, false)
	rev := revisionOf(t, mustOK(t, syctl(t, cp, nil, "", "apply", "-f", exampleJSON)).stdout)
	mustOK(t, syctl(t, cp, nil, "", "weights", "set", "recommender", "v1=90", "v2=10", "--revision", strconv.FormatInt(rev, 10)))

	// rev is stale now: every write pinned to it is refused with exit 4.
	stale := strconv.FormatInt(rev, 10)
	wantCode(t, syctl(t, cp, nil, "", "weights", "set", "recommender", "v1=1", "--revision", stale), exitConflict, "HTTP 409", "current revision")
	wantCode(t, syctl(t, cp, nil, "", "apply", "-f", exampleYAML, "--revision", stale), exitConflict)
	wantCode(t, syctl(t, cp, nil, "", "shadow", "set", "recommender", "--version", "v2", "--percent", "5", "--revision", stale), exitConflict)
	wantCode(t, syctl(t, cp, nil, "", "delete", "model", "recommender", "--revision", stale), exitConflict)
	rec, _ := cp.Store().Get(context.Background(), "recommender")
	if rec.Model.Spec.Traffic.Weights["v1"] != 90 || rec.Model.Spec.Shadow != nil {
		t.Fatalf("a stale write changed the model: %+v", rec.Model.Spec)
	}
}

func TestAuth(t *testing.T) {
	cp := startCP(t, true)
	// No token: 401 → exit 5.
	wantCode(t, syctl(t, cp, nil, "", "get", "models"), exitUnauthorized, "HTTP 401")
	// A wrong token.
	wantCode(t, syctl(t, cp, nil, "", "get", "models", "--token", "not-a-valid-token-at-all"), exitUnauthorized)
	// Editor from the environment applies.
	mustOK(t, syctl(t, cp, map[string]string{"SYCTL_TOKEN": editorToken}, "", "apply", "-f", exampleJSON))
	// Viewer may read but not write: 403 → exit 5.
	mustOK(t, syctl(t, cp, nil, "", "--token", viewerToken, "get", "models"))
	wantCode(t, syctl(t, cp, nil, "", "--token", viewerToken, "weights", "set", "recommender", "v1=1"), exitUnauthorized, "HTTP 403", "vera has role viewer")
	// Editor may not roll back (operator only).
	wantCode(t, syctl(t, cp, map[string]string{"SYCTL_TOKEN": editorToken}, "", "rollback", "recommender"), exitUnauthorized, "needs operator")

	// Server and token from the config file (~/.config/syctl/config.yaml).
	home := t.TempDir()
	os.MkdirAll(filepath.Join(home, ".config", "syctl"), 0o755)
	os.WriteFile(filepath.Join(home, ".config", "syctl", "config.yaml"),
		[]byte("server: "+cp.APIURL()+"\ntoken: "+operatorToken+"\n"), 0o600)
	r := mustOK(t, syctl(t, nil, map[string]string{"HOME": home}, "", "weights", "set", "recommender", "v1=70", "v2=30"))
	if !strings.Contains(r.stdout, "v1=70 v2=30") {
		t.Fatalf("config file: %q", r.stdout)
	}
	// A flag beats the environment, which beats the config file.
	wantCode(t, syctl(t, nil, map[string]string{"HOME": home, "SYCTL_TOKEN": viewerToken}, "", "weights", "set", "recommender", "v1=1"), exitUnauthorized)
	mustOK(t, syctl(t, nil, map[string]string{"HOME": home, "SYCTL_TOKEN": viewerToken}, "", "--token", operatorToken, "weights", "set", "recommender", "v1=1"))
	// A broken config file is a usage error.
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("sever: x\n"), 0o600)
	wantCode(t, syctl(t, cp, nil, "", "--config", bad, "get", "models"), exitUsage, "allowed keys: server, token")
}

func TestNotFoundAndUsage(t *testing.T) {
	cp := startCP(t, false)
	wantCode(t, syctl(t, cp, nil, "", "get", "model", "nope"), exitNotFound, "HTTP 404")
	wantCode(t, syctl(t, cp, nil, "", "describe", "model", "nope"), exitNotFound)
	wantCode(t, syctl(t, cp, nil, "", "history", "nope"), exitNotFound)
	wantCode(t, syctl(t, cp, nil, "", "weights", "set", "nope", "v1=1"), exitNotFound)
	wantCode(t, syctl(t, cp, nil, "", "delete", "model", "nope"), exitNotFound)
	wantCode(t, syctl(t, cp, nil, "", "shadow", "off", "nope"), exitNotFound)

	wantCode(t, syctl(t, cp, nil, ""), exitUsage)
	wantCode(t, syctl(t, cp, nil, "", "frobnicate"), exitUsage, `unknown command "frobnicate"`)
	wantCode(t, syctl(t, cp, nil, "", "weights", "set", "m", "v1:80"), exitUsage, "want VERSION=WEIGHT")
	wantCode(t, syctl(t, cp, nil, "", "weights", "set", "m", "v1=eighty"), exitUsage, "must be an integer")
	wantCode(t, syctl(t, cp, nil, "", "get", "models", "-o", "xml"), exitUsage, "--output: want table, wide, json or yaml")
	wantCode(t, syctl(t, cp, nil, "", "apply"), exitUsage, "-f FILE is required")
	wantCode(t, syctl(t, cp, nil, "", "apply", "-f", "x", "--bogus"), exitUsage, "error: unknown flag --bogus\n")
	wantCode(t, syctl(t, cp, nil, "", "canary", "jump", "m"), exitUsage)
	wantCode(t, syctl(t, cp, nil, "", "rollback", "m", "--wait", "2m"), exitUsage)
	mustOK(t, syctl(t, cp, nil, "", "apply", "-h"))

	// An unreachable server is exit 1 with the address in the message.
	wantCode(t, syctl(t, nil, map[string]string{"SYCTL_SERVER": "http://127.0.0.1:1"}, "", "get", "models"), exitError, "cannot reach the control plane at http://127.0.0.1:1")
}

func TestShadowSetOffAndDelete(t *testing.T) {
	cp := startCP(t, false)
	mustOK(t, syctl(t, cp, nil, "", "apply", "-f", exampleJSON))
	r := mustOK(t, syctl(t, cp, nil, "", "shadow", "set", "recommender", "--version", "v2", "--percent", "10", "--mode", "topk", "--k", "5", "--reason", "try v2"))
	if !strings.HasPrefix(r.stdout, "model/recommender shadow v2 at 10% (revision ") {
		t.Fatalf("shadow set: %q", r.stdout)
	}
	rec, _ := cp.Store().Get(context.Background(), "recommender")
	if sh := rec.Model.Spec.Shadow; sh == nil || sh.Version != "v2" || sh.Percent != 10 || sh.Compare.Mode != "topk" || sh.Compare.K != 5 {
		t.Fatalf("stored shadow: %+v", rec.Model.Spec.Shadow)
	}
	// An invalid shadow is the API's field error.
	wantCode(t, syctl(t, cp, nil, "", "shadow", "set", "recommender", "--version", "v9", "--percent", "10"), exitError, "spec.shadow.version")
	mustOK(t, syctl(t, cp, nil, "", "shadow", "off", "recommender"))
	r = mustOK(t, syctl(t, cp, nil, "", "shadow", "off", "recommender"))
	if !strings.Contains(r.stdout, "unchanged") {
		t.Fatalf("second shadow off: %q", r.stdout)
	}
	r = mustOK(t, syctl(t, cp, nil, "", "audit", "recommender"))
	if !strings.Contains(r.stdout, "shadow v2 10%") || !strings.Contains(r.stdout, "shadow off") || !strings.Contains(r.stdout, "try v2") {
		t.Fatalf("audit after shadow:\n%s", r.stdout)
	}

	r = mustOK(t, syctl(t, cp, nil, "", "delete", "model", "recommender", "--reason", "retired"))
	if !strings.HasPrefix(r.stdout, "model/recommender deleted (revision ") {
		t.Fatalf("delete: %q", r.stdout)
	}
	wantCode(t, syctl(t, cp, nil, "", "get", "model", "recommender"), exitNotFound)
	r = mustOK(t, syctl(t, cp, nil, "", "history", "recommender"))
	if !strings.Contains(r.stdout, "delete") || !strings.Contains(r.stdout, "retired") {
		t.Fatalf("history after delete:\n%s", r.stdout)
	}
}

func TestVersion(t *testing.T) {
	cp := startCP(t, false)
	r := mustOK(t, syctl(t, cp, nil, "", "version"))
	if !strings.HasPrefix(r.stdout, "syctl ") || !strings.Contains(r.stdout, "reachable, config version") {
		t.Fatalf("version: %q", r.stdout)
	}
	r = mustOK(t, syctl(t, cp, nil, "", "version", "-o", "json"))
	var v struct {
		Server struct{ Reachable bool } `json:"server"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil || !v.Server.Reachable {
		t.Fatalf("version -o json: %v %s", err, r.stdout)
	}
}

func TestJSONToYAMLQuotesAmbiguousStrings(t *testing.T) {
	b, err := jsonToYAML([]byte(`{"b":"80","a":true,"s":"yes","n":80,"nested":{"x":[1,"2"]}}`))
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := yaml.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if got["b"] != "80" || got["s"] != "yes" || got["n"] != 80 || got["a"] != true {
		t.Fatalf("round trip changed types: %#v\n%s", got, b)
	}
	if !strings.HasPrefix(string(b), "b: ") {
		t.Fatalf("key order not kept:\n%s", b)
	}
}

// A route the server lacks (an older control plane) is told apart from a
// missing model: describe and the canary/shadow commands rely on it.
func TestClientTellsMissingEndpointFromMissingModel(t *testing.T) {
	cp := startCP(t, false)
	c := client.New(cp.APIURL(), "")
	ctx := context.Background()
	_, err := c.Raw(ctx, http.MethodGet, "/v1/models/recommender/no-such-endpoint", nil)
	if !client.IsNoEndpoint(err) || client.IsStatus(err, http.StatusNotFound) {
		t.Fatalf("unknown route: %v (no endpoint %v)", err, client.IsNoEndpoint(err))
	}
	_, _, err = c.GetModel(ctx, "recommender")
	if client.IsNoEndpoint(err) || !client.IsStatus(err, http.StatusNotFound) {
		t.Fatalf("missing model: %v", err)
	}
	// A command hitting a missing endpoint exits 1 and names it.
	wantCode(t, syctl(t, cp, nil, "", "apply", "-f", exampleJSON), exitOK)
	var ae *client.APIError
	_, err = c.Raw(ctx, http.MethodPost, "/v1/models/recommender/no-such-endpoint", map[string]any{})
	if !errors.As(err, &ae) || !ae.NoEndpoint || !strings.Contains(ae.Error(), "does not offer POST /v1/models/recommender/no-such-endpoint") {
		t.Fatalf("POST unknown route: %v", err)
	}
}

func TestHistogramQuantile(t *testing.T) {
	inf := math.Inf(1)
	tests := map[string]struct {
		q       float64
		buckets []bucket
		want    float64
		ok      bool
	}{
		"empty":             {0.99, nil, 0, false},
		"no observations":   {0.99, []bucket{{0.01, 0}, {inf, 0}}, 0, false},
		"interpolates":      {0.5, []bucket{{0.01, 0}, {0.02, 100}, {inf, 100}}, 0.015, true},
		"first bucket":      {0.5, []bucket{{0.01, 10}, {inf, 10}}, 0.005, true},
		"p99 in the tail":   {0.99, []bucket{{0.001, 90}, {0.002, 98}, {0.005, 100}, {inf, 100}}, 0.0035, true},
		"rank in +Inf":      {0.99, []bucket{{0.001, 50}, {inf, 100}}, 0.001, true},
		"unsorted input":    {0.5, []bucket{{inf, 100}, {0.02, 100}, {0.01, 0}}, 0.015, true},
		"quantile too high": {1.5, []bucket{{0.01, 1}, {inf, 1}}, 0, false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, ok := histogramQuantile(tc.q, tc.buckets)
			if ok != tc.ok || math.Abs(got-tc.want) > 1e-12 {
				t.Fatalf("histogramQuantile(%v) = %v, %v; want %v, %v", tc.q, got, ok, tc.want, tc.ok)
			}
		})
	}
}

func TestParseProxyMetrics(t *testing.T) {
	text := `# TYPE switchyard_proxy_requests_total counter
switchyard_proxy_requests_total{code="200",model="recommender",variant="v1"} 96
switchyard_proxy_requests_total{code="503",model="recommender",variant="v1"} 4
switchyard_proxy_requests_total{code="200",model="recommender",variant="v2"} 10
switchyard_proxy_requests_total{code="404",model="recommender",variant="v2"} 10
switchyard_proxy_requests_total{code="200",model="other",variant="v1"} 1000
# TYPE switchyard_proxy_request_duration_seconds histogram
switchyard_proxy_request_duration_seconds_bucket{model="recommender",variant="v1",le="0.001"} 50
switchyard_proxy_request_duration_seconds_bucket{model="recommender",variant="v1",le="0.002"} 100
switchyard_proxy_request_duration_seconds_bucket{model="recommender",variant="v1",le="+Inf"} 100
switchyard_proxy_request_duration_seconds_sum{model="recommender",variant="v1"} 0.1
switchyard_proxy_request_duration_seconds_count{model="recommender",variant="v1"} 100
`
	got, err := parseProxyMetrics(strings.NewReader(text), "recommender")
	if err != nil {
		t.Fatal(err)
	}
	v1, v2 := got["v1"], got["v2"]
	if v1 == nil || v1.Requests != 100 || v1.Errors != 4 || v1.P99MS == nil || math.Abs(*v1.P99MS-1.98) > 1e-9 {
		t.Fatalf("v1: %+v", v1)
	}
	if v2 == nil || v2.Requests != 20 || v2.Errors != 0 || v2.P99MS != nil {
		t.Fatalf("v2: %+v (4xx are not errors of the version)", v2)
	}
	if _, err := parseProxyMetrics(strings.NewReader("not { metrics"), "recommender"); err == nil {
		t.Fatal("garbage parsed")
	}
}

// describe --proxy-admin shows live numbers for real traffic: a real
// backend (ONNX Runtime), a real proxy fed over xDS, requests over HTTP.
func TestDescribeLiveNumbersFromAProxy(t *testing.T) {
	be := backendtest.Start(t, backendtest.Options{})
	cp := startCP(t, false)
	doc := `apiVersion: switchyard.dev/v1
kind: Model
metadata: {name: recommender}
spec:
  versions:
    - {name: v1, endpoints: ["` + be.HTTPAddr + `"], backendModel: recommender-v1}
    - {name: v2, endpoints: ["` + be.HTTPAddr + `"], backendModel: recommender-v2}
  traffic: {weights: {v1: 100}}
`
	rev := revisionOf(t, mustOK(t, syctl(t, cp, nil, doc, "apply", "-f", "-")).stdout)
	p := startXDSProxy(t, cp, rev, 0)
	const n = 20
	for i := 0; i < n; i++ {
		resp, err := http.Post("http://"+p.HTTPAddr()+"/v2/models/recommender/infer", "application/json", strings.NewReader(demoBody))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("x-switchyard-variant") != "v1" {
			t.Fatalf("infer %d: %d %q", i, resp.StatusCode, resp.Header.Get("x-switchyard-variant"))
		}
	}
	r := mustOK(t, syctl(t, cp, nil, "", "describe", "model", "recommender", "--proxy-admin", p.AdminAddr(), "-o", "json"))
	var dv describeView
	if err := json.Unmarshal([]byte(r.stdout), &dv); err != nil {
		t.Fatal(err)
	}
	v1 := dv.Variants[0]
	if v1.Version != "v1" || v1.Requests == nil || *v1.Requests != n || v1.ErrorRate == nil || *v1.ErrorRate != 0 ||
		v1.P99MS == nil || *v1.P99MS <= 0 || v1.Breaker == nil || *v1.Breaker != "closed" {
		t.Fatalf("v1 live numbers: %s", r.stdout)
	}
	if v2 := dv.Variants[1]; v2.Requests != nil && *v2.Requests != 0 {
		t.Fatalf("v2 got traffic at weight 0: %d", *v2.Requests)
	}
	r = mustOK(t, syctl(t, cp, nil, "", "describe", "model", "recommender", "--proxy-admin", p.AdminAddr()))
	if !strings.Contains(r.stdout, "since it started") || !regexp.MustCompile(`v1 .* closed +20 +0\.00% +\d+\.\dms`).MatchString(r.stdout) {
		t.Fatalf("describe table:\n%s", r.stdout)
	}
}

// startCanaryCP starts a control plane with its canary controller, which
// ticks only when the test calls TickOnce.
func startCanaryCP(t *testing.T) (*cptest.CP, *canaryctl.Controller) {
	t.Helper()
	cp := cptest.Start(t, controlplane.Config{InsecureLoopbackNoAuth: true}, &controlplane.CanaryOptions{Interval: time.Hour})
	return cp, cp.Canary
}

const canaryDoc = `{"metadata": {"name": "rec"}, "spec": {
  "versions": [{"name": "v1", "endpoints": ["127.0.0.1:1"]}, {"name": "v2", "endpoints": ["127.0.0.1:2"]}],
  "traffic": {"weights": {"v1": 100, "v2": 0}},
  "canary": {"version": "v2", "stepDuration": "1h"}}}`

// TestCanaryRefusalsNameTheCommand: during a canary `weights set` exits 4
// and says which commands resolve it; --force aborts the canary first;
// rollback then avoids the failed version and `canary start` says how to
// reset it; a rollback during a canary aborts it first; re-applying the
// document that started a canary is unchanged (issue 15).
func TestCanaryRefusalsNameTheCommand(t *testing.T) {
	cp, cc := startCanaryCP(t)
	ctx := context.Background()
	mustOK(t, syctl(t, cp, nil, canaryDoc, "apply", "-f", "-"))
	cc.TickOnce(ctx)
	if rec, _ := cp.Store().Get(ctx, "rec"); rec.Action != canaryctl.ActionStart {
		t.Fatalf("canary not started: %s", rec.Action)
	}
	if r := mustOK(t, syctl(t, cp, nil, canaryDoc, "apply", "-f", "-")); !strings.Contains(r.stdout, "unchanged") {
		t.Fatalf("re-apply during the canary: %q", r.stdout)
	}

	wantCode(t, syctl(t, cp, nil, "", "weights", "set", "rec", "v1=50", "v2=50", "--reason", "A/B test"), exitConflict,
		`canary of v2 in progress`, "(HTTP 409)", "to resolve it, run one of:",
		"\n  syctl canary abort rec\n", "\n  syctl weights set rec v1=50 v2=50 --reason \"A/B test\" --force\n")

	r := mustOK(t, syctl(t, cp, nil, "", "weights", "set", "rec", "v1=50", "v2=50", "--force"))
	if !regexp.MustCompile(`^model/rec canary of v2 aborted first \(v2 marked failed; revision \d+\)\nmodel/rec weights v1=50 v2=50 \(revision \d+\)\nno proxies connected \(nothing to apply it yet\)\n$`).MatchString(r.stdout) {
		t.Fatalf("weights set --force:\n%s", r.stdout)
	}
	r = mustOK(t, syctl(t, cp, nil, "", "rollback", "rec", "--wait", "0"))
	if !strings.Contains(r.stdout, "weights v1=100\n") || strings.Contains(r.stdout, "aborted") {
		t.Fatalf("rollback after the forced change:\n%s", r.stdout)
	}
	wantCode(t, syctl(t, cp, nil, "", "canary", "start", "rec", "--version", "v2"), exitConflict, "\n  syctl canary reset rec --version v2\n")
	mustOK(t, syctl(t, cp, nil, "", "canary", "reset", "rec", "--version", "v2"))

	cc.TickOnce(ctx) // spec.canary still names v2: it starts again
	r = mustOK(t, syctl(t, cp, nil, "", "rollback", "rec", "--wait", "0", "--reason", "pager"))
	if !regexp.MustCompile(`^model/rec canary of v2 aborted \(v2 marked failed\): the split from before the canary, v2 gets no traffic \(revision (\d+)\)\nmodel/rec rolled back \(now revision (\d+)\): weights v1=100\n`).MatchString(r.stdout) {
		t.Fatalf("rollback during a canary:\n%s", r.stdout)
	}
	rec, _ := cp.Store().Get(ctx, "rec")
	if rec.Action != canaryctl.ActionAbort || rec.Model.Spec.Traffic.Weights["v2"] != 0 {
		t.Fatalf("after the rollback: %s %v", rec.Action, rec.Model.Spec.Traffic.Weights)
	}
}

// demoBody is one recommender request (32 features).
const demoBody = `{"inputs":[{"name":"features","datatype":"FP32","shape":[1,32],"data":[0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5]}]}`

// startXDSProxy starts a real proxy fed by cp over xDS (stats reported
// every statsInterval; 0: the default) and waits until it applied rev.
func startXDSProxy(t *testing.T, cp *cptest.CP, rev int64, statsInterval time.Duration) *proxy.Proxy {
	t.Helper()
	p, err := proxy.New(proxy.Config{HTTPAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", XDSAddr: cp.XDSAddr(), NodeID: "p1", StatsInterval: statsInterval})
	if err != nil {
		t.Fatal(err)
	}
	// Not a bounded ctx: cancelling Start's ctx drains the proxy.
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	waitProxyApplied(t, cp, rev)
	return p
}

// TestDescribeCountsWhatReallyHappened: with v1 down and its backup
// answering, describe (from the control plane's stats window, fed by a
// real proxy's stats stream) shows v1's failures although its clients got
// no error, and the backup's answers on the backup.
func TestDescribeCountsWhatReallyHappened(t *testing.T) {
	be := backendtest.Start(t, backendtest.Options{})
	cp, cc := startCanaryCP(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()
	doc := `apiVersion: switchyard.dev/v1
kind: Model
metadata: {name: recommender}
spec:
  versions:
    - {name: v1, endpoints: ["` + dead + `"], backendModel: recommender-v1}
    - {name: lite, endpoints: ["` + be.HTTPAddr + `"], backendModel: recommender-lite}
  traffic: {weights: {v1: 100}}
  fallback: {chain: [backup], backup: lite}
`
	rev := revisionOf(t, mustOK(t, syctl(t, cp, nil, doc, "apply", "-f", "-", "--wait=0")).stdout)
	p := startXDSProxy(t, cp, rev, 50*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const n = 4 // under the default breaker's 5 consecutive failures
	for i := range n {
		resp, err := http.Post("http://"+p.HTTPAddr()+"/v2/models/recommender/infer", "application/json", strings.NewReader(demoBody))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("x-switchyard-fallback") != "backup" {
			t.Fatalf("infer %d: %d fallback %q", i, resp.StatusCode, resp.Header.Get("x-switchyard-fallback"))
		}
	}
	// Bounded wait for the reports to reach the control plane's window.
	for i := 0; ; i++ {
		st, _ := cc.Stats().Stats(ctx, "recommender", "lite", time.Now().Add(-time.Minute), time.Now().Add(time.Second))
		v1, _ := cc.Stats().Stats(ctx, "recommender", "v1", time.Now().Add(-time.Minute), time.Now().Add(time.Second))
		if st.BackupAnswers == n && v1.Requests == n {
			break
		}
		if i == 1000 {
			t.Fatalf("stats never reached the control plane: v1 %+v, lite %+v", v1, st)
		}
		time.Sleep(10 * time.Millisecond)
	}
	r := mustOK(t, syctl(t, cp, nil, "", "describe", "model", "recommender", "-o", "json"))
	var dv describeView
	if err := json.Unmarshal([]byte(r.stdout), &dv); err != nil {
		t.Fatal(err)
	}
	v1, lite := dv.Variants[0], dv.Variants[1]
	if v1.ErrorRate == nil || *v1.ErrorRate != 0 || v1.FailureRate == nil || *v1.FailureRate != 1 || v1.UpstreamFailures["connect_error"] != n ||
		v1.Fallbacks == nil || *v1.Fallbacks != n {
		t.Fatalf("v1 (down, answered by its backup): %s", r.stdout)
	}
	if lite.BackupAnswers == nil || *lite.BackupAnswers != n || lite.Requests == nil || *lite.Requests != 0 {
		t.Fatalf("lite (the backup): %s", r.stdout)
	}
	r = mustOK(t, syctl(t, cp, nil, "", "describe", "model", "recommender"))
	if !regexp.MustCompile(`(?m)^ +v1 .* +4 +0\.00% +\S+ +4 +0 +100\.00% +0 +0 +failed:connect_error=4$`).MatchString(r.stdout) ||
		!regexp.MustCompile(`(?m)^ +lite .* +0 +0\.00% +\S+ +0 +0 +0\.00% +4 +0 +-$`).MatchString(r.stdout) {
		t.Fatalf("describe table:\n%s", r.stdout)
	}
}
