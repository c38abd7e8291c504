package front

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/switchyard-dev/switchyard/proxy/pipeline"

	"github.com/switchyard-dev/switchyard/oip"
)

// ServerName and ServerVersion answer GET /v2.
const (
	ServerName    = "switchyard-proxy"
	ServerVersion = "0.1.0"
)

// serverMetadata answers GET /v2 and ServerMetadata: the extensions are
// Triton's names of what the proxy serves (docs/protocol.md; the model
// repository is the control plane's).
var serverMetadata = oip.ServerMetadata{Name: ServerName, Version: ServerVersion,
	Extensions: []string{"binary_tensor_data", "model_configuration", "statistics"}}

// httpFront serves the REST requests the lean front-end (fastfront.go)
// leaves to net/http: health, server and model metadata, readiness, and
// the errors for everything else. Every infer is the lean front-end's.
type httpFront struct {
	p *pipeline.Pipeline
}

const (
	hdrVariant     = "X-Switchyard-Variant"
	hdrInferHeader = "Inference-Header-Content-Length"
)

func (h *httpFront) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := r.RequestURI
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	if !strings.HasPrefix(path, "/") {
		path = r.URL.EscapedPath()
	}
	rt := oip.ParseHTTPPath(path)
	if rt.Kind != oip.RouteUnknown && r.Method != rt.Kind.Method() && !(r.Method == http.MethodHead && rt.Kind.Method() == http.MethodGet) {
		w.Header().Set("Allow", rt.Kind.Method())
		pipeline.WriteError(w, http.StatusMethodNotAllowed, fmt.Sprintf("%s %s: method not allowed (use %s)", r.Method, path, rt.Kind.Method()))
		return
	}
	switch rt.Kind {
	case oip.RouteHealthLive:
		pipeline.WriteRaw(w, http.StatusOK, `{"live":true}`)
	case oip.RouteHealthReady:
		if h.p.Snapshot() == nil {
			pipeline.WriteRaw(w, http.StatusServiceUnavailable, `{"ready":false}`)
			return
		}
		pipeline.WriteRaw(w, http.StatusOK, `{"ready":true}`)
	case oip.RouteServerMetadata:
		b, _ := json.Marshal(serverMetadata)
		pipeline.WriteRaw(w, http.StatusOK, string(b))
	case oip.RouteModelMetadata, oip.RouteModelReady, oip.RouteModelConfig, oip.RouteModelStats:
		h.describe(w, r, rt)
	case oip.RouteRepositoryIndex, oip.RouteRepositoryLoad, oip.RouteRepositoryUnload:
		pipeline.WriteError(w, http.StatusNotFound, NoRepository)
	default:
		pipeline.WriteError(w, http.StatusNotFound, fmt.Sprintf("unknown path %q: the proxy serves OIP v2 (/v2, /v2/health/{live,ready}, /v2/models/{name}[/versions/{v}][/ready|/infer|/config|/stats], /v2/models/stats)", path))
	}
}

func first(vs []string) string {
	if len(vs) == 0 {
		return ""
	}
	return vs[0]
}

// describe answers model metadata, configuration, statistics and
// readiness by the virtual model rule (describe.go).
func (h *httpFront) describe(w http.ResponseWriter, r *http.Request, rt oip.HTTPRoute) {
	p := h.p
	s := p.Snapshot()
	if rt.Kind == oip.RouteModelStats && rt.Model == "" {
		h.allStats(w, r)
		return
	}
	override := ""
	if s != nil {
		if route := s.Route(rt.Model); route != nil {
			override = first(r.Header[route.OverrideHeader()])
		}
	}
	_, v, oerr := describeTarget(s, rt.Model, rt.Version, override)
	if oerr != nil {
		pipeline.WriteError(w, oerr.HTTPStatus(), oerr.Msg)
		return
	}
	w.Header()[hdrVariant] = v.HeaderValue()
	var out any
	var err error
	switch rt.Kind {
	case oip.RouteModelReady:
		ok, err := ready(r.Context(), v)
		switch {
		case err != nil:
			oe := oip.AsError(err)
			pipeline.WriteError(w, oe.HTTPStatus(), oe.Msg)
		case ok:
			pipeline.WriteRaw(w, http.StatusOK, `{"ready":true}`)
		default:
			pipeline.WriteRaw(w, http.StatusServiceUnavailable, `{"ready":false}`)
		}
		return
	case oip.RouteModelMetadata:
		out, err = modelMetadata(r.Context(), v)
	case oip.RouteModelConfig:
		out, err = config(r.Context(), v)
	case oip.RouteModelStats:
		var st []oip.ModelStatistics
		st, err = statistics(r.Context(), v)
		out = statsBody{st}
	}
	if err != nil {
		oe := oip.AsError(err)
		pipeline.WriteError(w, oe.HTTPStatus(), oe.Msg)
		return
	}
	b, _ := json.Marshal(out)
	pipeline.WriteRaw(w, http.StatusOK, string(b))
}

// statsBody is the REST form of statistics (Triton's).
type statsBody struct {
	ModelStats []oip.ModelStatistics `json:"model_stats"`
}

// allStats answers GET /v2/models/stats (allStatistics).
func (h *httpFront) allStats(w http.ResponseWriter, r *http.Request) {
	b, _ := json.Marshal(statsBody{allStatistics(r.Context(), h.p)})
	pipeline.WriteRaw(w, http.StatusOK, string(b))
}
