package pipeline

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"

	"github.com/switchyard-dev/switchyard/oip"
	"github.com/switchyard-dev/switchyard/routing"
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
	p *Pipeline
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
		WriteError(w, http.StatusMethodNotAllowed, fmt.Sprintf("%s %s: method not allowed (use %s)", r.Method, path, rt.Kind.Method()))
		return
	}
	switch rt.Kind {
	case oip.RouteHealthLive:
		writeRaw(w, http.StatusOK, `{"live":true}`)
	case oip.RouteHealthReady:
		if h.p.snap.Load() == nil {
			writeRaw(w, http.StatusServiceUnavailable, `{"ready":false}`)
			return
		}
		writeRaw(w, http.StatusOK, `{"ready":true}`)
	case oip.RouteServerMetadata:
		b, _ := json.Marshal(serverMetadata)
		writeRaw(w, http.StatusOK, string(b))
	case oip.RouteModelMetadata, oip.RouteModelReady, oip.RouteModelConfig, oip.RouteModelStats:
		h.describe(w, r, rt)
	case oip.RouteRepositoryIndex, oip.RouteRepositoryLoad, oip.RouteRepositoryUnload:
		WriteError(w, http.StatusNotFound, NoRepository)
	default:
		WriteError(w, http.StatusNotFound, fmt.Sprintf("unknown path %q: the proxy serves OIP v2 (/v2, /v2/health/{live,ready}, /v2/models/{name}[/versions/{v}][/ready|/infer|/config|/stats], /v2/models/stats)", path))
	}
}

func writeRaw(w http.ResponseWriter, status int, body string) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	io.WriteString(w, body)
}

// WriteError answers status with {"error": msg}.
func WriteError(w http.ResponseWriter, status int, msg string) {
	b, _ := json.Marshal(struct {
		Error string `json:"error"`
	}{msg})
	writeRaw(w, status, string(b))
}

func first(vs []string) string {
	if len(vs) == 0 {
		return ""
	}
	return vs[0]
}

// resolve finds the route and picks the variant of a request. A version in
// the path (/v2/models/{name}/versions/{v}/...) pins that version.
func (p *Pipeline) resolve(s *snapshot, model, pathVersion, override, key string) (*Route, routing.Choice, *oip.Error) {
	if s == nil {
		return nil, routing.Choice{}, oip.Errorf(oip.Unavailable, "no configuration yet: the proxy has not reached its control plane and has no persisted configuration")
	}
	r := s.routes[model]
	if r == nil {
		return nil, routing.Choice{}, oip.Errorf(oip.NotFound, "unknown model %q; known models: %s", model, s.names)
	}
	if pathVersion != "" {
		// Pinned: like the override header (any version, whatever its
		// weight), counted as pinned.
		i := r.Picker.Index(pathVersion)
		if i < 0 {
			return nil, routing.Choice{}, noSuchVersion(r, pathVersion)
		}
		return r, routing.Choice{Index: i, Reason: routing.ReasonPinned}, nil
	}
	return r, r.Picker.Pick(override, key, rand.Uint64()), nil
}

// describe answers model metadata, configuration, statistics and
// readiness by the virtual model rule (describe.go).
func (h *httpFront) describe(w http.ResponseWriter, r *http.Request, rt oip.HTTPRoute) {
	p := h.p
	s := p.snap.Load()
	if rt.Kind == oip.RouteModelStats && rt.Model == "" {
		h.allStats(w, r)
		return
	}
	override := ""
	if s != nil {
		if route := s.routes[rt.Model]; route != nil {
			override = first(r.Header[route.overrideHTTP])
		}
	}
	_, v, oerr := p.describeTarget(s, rt.Model, rt.Version, override)
	if oerr != nil {
		WriteError(w, oerr.HTTPStatus(), oerr.Msg)
		return
	}
	w.Header()[hdrVariant] = v.headerValue
	var out any
	var err error
	switch rt.Kind {
	case oip.RouteModelReady:
		ok, err := p.ready(r.Context(), v)
		switch {
		case err != nil:
			oe := oip.AsError(err)
			WriteError(w, oe.HTTPStatus(), oe.Msg)
		case ok:
			writeRaw(w, http.StatusOK, `{"ready":true}`)
		default:
			writeRaw(w, http.StatusServiceUnavailable, `{"ready":false}`)
		}
		return
	case oip.RouteModelMetadata:
		out, err = p.metadata(r.Context(), v)
	case oip.RouteModelConfig:
		out, err = p.config(r.Context(), v)
	case oip.RouteModelStats:
		var st []oip.ModelStatistics
		st, err = p.statistics(r.Context(), v)
		out = statsBody{st}
	}
	if err != nil {
		oe := oip.AsError(err)
		WriteError(w, oe.HTTPStatus(), oe.Msg)
		return
	}
	b, _ := json.Marshal(out)
	writeRaw(w, http.StatusOK, string(b))
}

// statsBody is the REST form of statistics (Triton's).
type statsBody struct {
	ModelStats []oip.ModelStatistics `json:"model_stats"`
}

// allStats answers GET /v2/models/stats (Proxy.allStatistics).
func (h *httpFront) allStats(w http.ResponseWriter, r *http.Request) {
	b, _ := json.Marshal(statsBody{h.p.allStatistics(r.Context())})
	writeRaw(w, http.StatusOK, string(b))
}

// WriteJSON answers status with v, indented.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		WriteError(w, http.StatusInternalServerError, err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}
