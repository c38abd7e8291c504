package proxy

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/switchyard-dev/switchyard/oip"
)

// FuzzParseHTTPPath checks the OIP path router the proxy uses on every
// request: no panic, and a model or version it returns is never empty
// when the route needs one.
func FuzzParseHTTPPath(f *testing.F) {
	for _, s := range []string{"/v2", "/v2/models/m/infer", "/v2/models/m/versions/1/infer", "/v2/models/a%2Fb/ready",
		"/v2/models/%zz/infer", "/v2/models//infer", "/v2/models/m/versions//infer", "/v2/repository/models/m/load",
		"/v2/models/m/", "/v2/models/\xff\xfe/infer", "/v2/models/../infer", "/v2/health/live", "/v2/models/m/versions"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, path string) {
		rt := oip.ParseHTTPPath(path)
		switch rt.Kind {
		case oip.RouteUnknown, oip.RouteServerMetadata, oip.RouteHealthLive, oip.RouteHealthReady, oip.RouteRepositoryIndex:
			if rt.Model != "" || rt.Version != "" {
				t.Fatalf("%q: kind %v with model %q version %q", path, rt.Kind, rt.Model, rt.Version)
			}
		default:
			if rt.Model == "" {
				t.Fatalf("%q: kind %v without a model", path, rt.Kind)
			}
		}
		if strings.Contains(path, "/versions/") && rt.Kind == oip.RouteInfer && rt.Version == "" && utf8.ValidString(path) && !strings.Contains(path, "%") {
			// A literal /versions/{v}/infer always yields v (unless the
			// model segment itself was "versions").
			if !strings.HasPrefix(path, "/v2/models/versions/") {
				t.Fatalf("%q: infer without its version", path)
			}
		}
	})
}
