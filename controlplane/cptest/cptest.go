// Package cptest starts real control planes for tests: on 127.0.0.1, the
// API and xDS on free ports, the state in the test's temporary directory,
// shut down when the test ends. It also speaks to them as the tests do:
// REST calls with the test tokens (Call), a real ADS client (DialADS), and
// the canary's test doubles (Clock, Source) with the documents they judge.
// No mocks: every helper talks over a socket.
package cptest

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/api"
	"github.com/switchyard-dev/switchyard/controlplane"
	"github.com/switchyard-dev/switchyard/controlplane/auth"
	"github.com/switchyard-dev/switchyard/controlplane/canaryctl"
	"github.com/switchyard-dev/switchyard/inference-backend/demomodels"
	"github.com/switchyard-dev/switchyard/oip"
)

// The bearer tokens of Auth's subjects: vera (viewer), eddie (editor) and
// olga (operator).
const (
	ViewerToken   = "viewer-token-0123456789"
	EditorToken   = "editor-token-0123456789"
	OperatorToken = "operator-token-0123456"
)

// Auth authenticates vera, eddie and olga (ViewerToken, EditorToken,
// OperatorToken), plus extra tokens.
func Auth(t testing.TB, extra ...auth.Token) *auth.Authenticator {
	t.Helper()
	a, err := auth.NewAuthenticator(append([]auth.Token{
		{Subject: "vera", Role: "viewer", Token: ViewerToken},
		{Subject: "eddie", Role: "editor", Token: EditorToken},
		{Subject: "olga", Role: "operator", Token: OperatorToken},
	}, extra...))
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// CP is a control plane under test.
type CP struct {
	*controlplane.ControlPlane
	// Canary is the canary controller (nil unless asked for).
	Canary *canaryctl.Controller
}

// New builds (binds, does not start) a control plane from cfg, whose zero
// fields get test values: the state file in t.TempDir(), both listeners
// on 127.0.0.1:0, Auth(t) unless InsecureLoopbackNoAuth. With canary set,
// the canary controller is enabled with those options. It is closed when
// the test ends.
func New(t testing.TB, cfg controlplane.Config, canary *controlplane.CanaryOptions) *CP {
	t.Helper()
	if cfg.StatePath == "" && cfg.Store == nil {
		cfg.StatePath = filepath.Join(t.TempDir(), "state.db")
	}
	if cfg.APIAddr == "" {
		cfg.APIAddr = "127.0.0.1:0"
	}
	if cfg.XDSAddr == "" {
		cfg.XDSAddr = "127.0.0.1:0"
	}
	if cfg.Auth == nil && !cfg.InsecureLoopbackNoAuth {
		cfg.Auth = Auth(t)
	}
	cp, err := controlplane.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cp.Close() })
	c := &CP{ControlPlane: cp}
	if canary != nil {
		if c.Canary, err = cp.EnableCanary(*canary); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// Start is New, then Start: it returns once the first snapshot is
// published.
func Start(t testing.TB, cfg controlplane.Config, canary *controlplane.CanaryOptions) *CP {
	t.Helper()
	c := New(t, cfg, canary)
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return c
}

// Result is the answer to a Call.
type Result struct {
	Code int
	ETag string
	Body []byte
}

// Decode unmarshals the body into v.
func (r Result) Decode(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("decode %s: %v", r.Body, err)
	}
}

// Call sends one REST request to the API of cp (body: nil, a string,
// bytes, or a value sent as JSON; headers: name, value pairs) as the
// caller of token ("": none), on a connection of its own.
func Call(t testing.TB, cp interface{ APIURL() string }, method, path, token string, body any, headers ...string) Result {
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
	return Result{Code: resp.StatusCode, ETag: resp.Header.Get("ETag"), Body: b}
}

// Doc is model name with versions v1 (127.0.0.1:8001) and v2
// (127.0.0.1:8002) at weights w1, w2.
func Doc(name string, w1, w2 int) api.Model {
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

// Revision is the store's revision.
func Revision(t testing.TB, cp *CP) int64 {
	t.Helper()
	_, rev, err := cp.Store().List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return rev
}

// WaitCtx is a context that ends after 20 s or with the test.
func WaitCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// MustJSON is v as indented JSON, for failure messages.
func MustJSON(v any) string {
	b, _ := json.MarshalIndent(v, "", "  ")
	return string(b)
}

// WaitUntil polls cond until it holds, failing the test after limit (the
// diag functions' output is logged then).
func WaitUntil(t testing.TB, what string, limit time.Duration, cond func() bool, diag ...func() string) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			for _, d := range diag {
				t.Log(d())
			}
			t.Fatalf("timed out after %s waiting for %s", limit, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// InferBody is one row of features uniform in [-1, 1) for the demo models
// (OIP JSON): recommender-v3 answers NaN for about one row in eight.
func InferBody(r *rand.Rand) []byte {
	data := make([]float32, demomodels.Features)
	for i := range data {
		data[i] = 2*r.Float32() - 1
	}
	req := &oip.InferRequest{Inputs: []oip.Tensor{oip.NewTensor(demomodels.InputName, []int64{1, demomodels.Features}, data)}}
	b, _, err := oip.AppendInferRequest(nil, req, false)
	if err != nil {
		panic(err)
	}
	return b
}

// Metrics is the control plane's /metrics page.
func Metrics(t testing.TB, cp interface{ APIURL() string }) string {
	t.Helper()
	return string(Call(t, cp, "GET", "/metrics", "", nil).Body)
}
