package proxy

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/switchyard-dev/switchyard/oip"
	"github.com/switchyard-dev/switchyard/proxy/upstream"
	"github.com/switchyard-dev/switchyard/routing"
)

// ServerName and ServerVersion answer GET /v2.
const (
	ServerName    = "switchyard-proxy"
	ServerVersion = "0.1.0"
)

// httpFront serves the REST requests the lean front-end (fastfront.go)
// leaves to net/http: health, server and model metadata, readiness, and
// the errors for everything else. Every infer is the lean front-end's.
type httpFront struct {
	p *Proxy
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
		writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("%s %s: method not allowed (use %s)", r.Method, path, rt.Kind.Method()))
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
		b, _ := json.Marshal(oip.ServerMetadata{Name: ServerName, Version: ServerVersion, Extensions: []string{}})
		writeRaw(w, http.StatusOK, string(b))
	case oip.RouteModelMetadata, oip.RouteModelReady:
		h.modelGet(w, r, rt)
	case oip.RouteRepositoryIndex, oip.RouteRepositoryLoad, oip.RouteRepositoryUnload:
		writeError(w, http.StatusNotFound, "the proxy does not serve the model repository extension; manage models through the control plane")
	default:
		writeError(w, http.StatusNotFound, fmt.Sprintf("unknown path %q: the proxy serves OIP v2 (/v2, /v2/health/{live,ready}, /v2/models/{name}[/ready|/infer])", path))
	}
}

func writeRaw(w http.ResponseWriter, status int, body string) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	io.WriteString(w, body)
}

func writeError(w http.ResponseWriter, status int, msg string) {
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
func (p *Proxy) resolve(s *snapshot, model, pathVersion, override, key string) (*Route, routing.Choice, *oip.Error) {
	if s == nil {
		return nil, routing.Choice{}, oip.Errorf(oip.Unavailable, "no configuration yet: the proxy has not reached its control plane and has no persisted configuration")
	}
	r := s.routes[model]
	if r == nil {
		return nil, routing.Choice{}, oip.Errorf(oip.NotFound, "unknown model %q; known models: %s", model, s.names)
	}
	if pathVersion != "" {
		i := r.Picker.Index(pathVersion)
		if i < 0 {
			return nil, routing.Choice{}, oip.Errorf(oip.NotFound, "model %q has no version %q; versions: %s", model, pathVersion, strings.Join(r.Model.VersionNames(), ", "))
		}
		return r, routing.Choice{Index: i, Reason: routing.ReasonOverride}, nil
	}
	return r, r.Picker.Pick(override, key, rand.Uint64()), nil
}

// modelGet answers model metadata and readiness from the variant a request
// would be routed to.
func (h *httpFront) modelGet(w http.ResponseWriter, r *http.Request, rt oip.HTTPRoute) {
	p := h.p
	s := p.snap.Load()
	var key, override string
	if s != nil {
		if route := s.routes[rt.Model]; route != nil {
			override = first(r.Header[route.overrideHTTP])
			if route.stickyHTTP != "" {
				key = first(r.Header[route.stickyHTTP])
			}
		}
	}
	route, choice, oerr := p.resolve(s, rt.Model, rt.Version, override, key)
	if oerr != nil {
		writeError(w, oerr.HTTPStatus(), oerr.Msg)
		return
	}
	v := route.Variants[choice.Index]
	w.Header()[hdrVariant] = v.headerValue
	ready := rt.Kind == oip.RouteModelReady
	deadline := time.Now().Add(route.Timeout)
	e := upstream.PickP2C(v.Endpoints, rand.Uint64(), time.Now().UnixNano(), nil)
	if e.HTTP != nil {
		path := v.metadataPath
		if ready {
			path = v.readyPath
		}
		resp := upstream.Response{}
		err := e.HTTP.Do(deadline, &upstream.Request{Method: http.MethodGet, Path: path}, &resp)
		if err != nil {
			writeError(w, http.StatusServiceUnavailable, fmt.Sprintf("model %q version %q: %v", route.Name, v.Name, err))
			return
		}
		if resp.ContentType != "" {
			w.Header().Set("Content-Type", resp.ContentType)
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(resp.Body)))
		w.WriteHeader(resp.Status)
		w.Write(resp.Body)
		return
	}
	ctx, cancel := context.WithDeadline(r.Context(), deadline)
	defer cancel()
	if ready {
		ok, err := grpcModelReady(ctx, v, e)
		if err != nil {
			oe := oip.AsError(err)
			writeError(w, oe.HTTPStatus(), oe.Msg)
			return
		}
		if ok {
			writeRaw(w, http.StatusOK, `{"ready":true}`)
		} else {
			writeRaw(w, http.StatusServiceUnavailable, `{"ready":false}`)
		}
		return
	}
	md, err := grpcModelMetadata(ctx, v, e)
	if err != nil {
		oe := oip.AsError(err)
		writeError(w, oe.HTTPStatus(), oe.Msg)
		return
	}
	b, _ := json.Marshal(md)
	writeRaw(w, http.StatusOK, string(b))
}
