package rest

import (
	"net/http"
	"testing"

	"github.com/switchyard-dev/switchyard/api"
	"github.com/switchyard-dev/switchyard/routing/xdsconv"
)

// FuzzModelDocument runs arbitrary bytes through what PUT /v1/models/{name}
// does before storing (strict JSON decoding, defaults, validation) and
// checks the promise behind storing: a document the API accepts translates
// into xDS resources that pass Envoy's generated Validate() and that the
// proxy reads back (FromResources) without a NACK, as the same model.
// `go test` runs the seeds; `go test -fuzz FuzzModelDocument ./controlplane/rest/`
// explores.
func FuzzModelDocument(f *testing.F) {
	for _, s := range []string{
		`{"metadata":{"name":"a"},"spec":{"versions":[{"name":"v1","endpoints":["127.0.0.1:8001"]},{"name":"v2","endpoints":["127.0.0.1:8002"]}],"traffic":{"weights":{"v1":80,"v2":20}}}}`,
		`{"metadata":{"name":"rec"},"spec":{"versions":[{"name":"v1","endpoints":["h.example:1"],"protocol":"grpc","backendModel":"m"},{"name":"v2","endpoints":["127.0.0.1:2"]}],` +
			`"traffic":{"weights":{"v1":1},"stickyHeader":"x-user-id","overrideHeader":"x-v"},"timeout":"50ms","retries":{"attempts":1,"budgetPercent":20},` +
			`"shadow":{"version":"v2","percent":10,"compare":{"mode":"topk","k":10}},"canary":{"version":"v2","steps":[20,50,100],"stepDuration":"5m","minRequests":5},` +
			`"fallback":{"chain":["cache","backup","static"],"backup":"v2","static":{"outputs":[{"name":"s","datatype":"FP32","shape":[1,2],"data":[1,2]}]},"breaker":{"consecutiveFailures":5,"openFor":"10s"}},` +
			`"cache":{"ttl":"30s","maxEntries":1000}}}`,
		`{"metadata":{"name":"a","labels":{"team":"x"}},"spec":{"versions":[{"name":"v_1.x","endpoints":["[::1]:9"]}],"traffic":{"weights":{"v_1.x":10000}}}}`,
		`{"metadata":{"name":"a"},"spec":{"versions":[{"name":"v1","endpoints":["127.0.0.1:1"]}],"traffic":{"weights":{"v1":-1}}}}`,
		`{"spec":{"timeout":"-5s"}}`,
		`null`, `[]`, `{"metadata":{"name":"a\u0000"}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		m, err := api.DecodeJSON(in)
		if err != nil {
			return
		}
		if m.Metadata.Name == "" {
			m.Metadata.Name = "fuzzed" // the API takes the name from the URL
		}
		if err := api.Normalize(&m); err != nil {
			return
		}
		res, err := xdsconv.Translate([]api.Model{m}, "1")
		if err != nil {
			t.Fatalf("accepted document does not translate: %v\n%s", err, in)
		}
		for typ, rs := range res {
			for _, r := range rs {
				if v, ok := r.(interface{ ValidateAll() error }); ok {
					if err := v.ValidateAll(); err != nil {
						t.Fatalf("accepted document gives an invalid %s: %v\n%s", typ, err, in)
					}
				}
			}
		}
		typed, err := xdsconv.ResourcesFromMap(res)
		if err != nil {
			t.Fatal(err)
		}
		back, err := typed.Models()
		if err != nil {
			t.Fatalf("the proxy would NACK an accepted document: %v\n%s", err, in)
		}
		if len(back) != 1 || back[0].Metadata.Name != m.Metadata.Name {
			t.Fatalf("round trip gave %d models", len(back))
		}
	})
}

// FuzzPrecondition: If-Match / If-None-Match parsing never panics and
// never yields a contradictory or non-positive precondition.
func FuzzPrecondition(f *testing.F) {
	for _, s := range [][2]string{{`"12"`, ""}, {"*", ""}, {"", "*"}, {`W/"3"`, ""}, {`"-1"`, ""}, {`"1", "2"`, ""}, {"garbage", `"3"`}, {`"99999999999999999999"`, ""}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, ifMatch, ifNoneMatch string) {
		r, err := http.NewRequest("PUT", "http://x/v1/models/a", nil)
		if err != nil {
			t.Skip()
		}
		r.Header.Set("If-Match", ifMatch)
		r.Header.Set("If-None-Match", ifNoneMatch)
		p, err := precondition(r)
		if err != nil {
			return
		}
		if p.IfRevision < 0 || (p.IfRevision > 0 && p.MustExist) {
			t.Fatalf("If-Match %q If-None-Match %q gave %+v", ifMatch, ifNoneMatch, p)
		}
	})
}
