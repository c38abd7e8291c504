package loadtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/switchyard-dev/switchyard/oip"
	pb "github.com/switchyard-dev/switchyard/oip/inferencepb"
)

// Target is where load goes: one OIP v2 endpoint and one model.
type Target struct {
	Protocol string // "rest" or "grpc"
	// Addr is host:port (a REST address may also be a http:// URL).
	Addr    string
	Model   string
	Version string
	// AllowRemote permits a non-loopback address; by default only
	// 127.0.0.1 / ::1 / localhost are accepted.
	AllowRemote bool
}

// Validate checks the target and returns its host:port.
func (t Target) Validate() (string, error) {
	if t.Protocol != "rest" && t.Protocol != "grpc" {
		return "", fmt.Errorf("protocol must be rest or grpc, got %q", t.Protocol)
	}
	if t.Model == "" {
		return "", errors.New("a model name is required")
	}
	addr := t.Addr
	if strings.Contains(addr, "://") {
		u, err := url.Parse(addr)
		if err != nil {
			return "", fmt.Errorf("target %q: %v", t.Addr, err)
		}
		if u.Scheme != "http" {
			return "", fmt.Errorf("target %q: only http:// is supported", t.Addr)
		}
		if u.Path != "" && u.Path != "/" {
			return "", fmt.Errorf("target %q: give the address only (host:port), not a path", t.Addr)
		}
		addr = u.Host
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil || port == "" {
		return "", fmt.Errorf("target %q: want host:port", t.Addr)
	}
	if !t.AllowRemote && !isLoopback(host) {
		return "", fmt.Errorf("target %q is not a loopback address; pass --allow-remote to load a remote endpoint", t.Addr)
	}
	return addr, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// ClassifyHTTP maps a REST outcome to an error kind ("" for 200).
func ClassifyHTTP(status int, err error) string {
	if err != nil {
		return classifyTransport(err)
	}
	if status == http.StatusOK {
		return ""
	}
	return "http_" + strconv.Itoa(status)
}

// ClassifyGRPC maps a gRPC call's error to an error kind ("" for nil).
func ClassifyGRPC(err error) string {
	if err == nil {
		return ""
	}
	st, ok := status.FromError(err)
	if !ok {
		return classifyTransport(err)
	}
	switch st.Code() {
	case codes.DeadlineExceeded:
		return "timeout"
	case codes.Canceled:
		return "canceled"
	case codes.Unavailable:
		m := st.Message()
		if strings.Contains(m, "connection refused") || strings.Contains(m, "connection error") || strings.Contains(m, "dial") {
			return "connect"
		}
	}
	return "grpc_" + st.Code().String()
}

func classifyTransport(err error) string {
	var ne net.Error
	var oe *net.OpError
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, syscall.ECONNREFUSED), errors.As(err, &oe) && oe.Op == "dial":
		return "connect"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, errRedirect):
		return "redirect"
	}
	return "transport"
}

var errRedirect = errors.New("redirect refused: load goes to the given address only")

// NewHTTPClient is the REST client of a run: keep-alive with up to conns
// connections, no compression, no proxy from the environment, redirects
// refused.
func NewHTTPClient(conns int) *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			Proxy:               nil,
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:        conns,
			MaxIdleConnsPerHost: conns,
			MaxConnsPerHost:     conns,
			IdleConnTimeout:     90 * time.Second,
			DisableCompression:  true,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return errRedirect },
	}
}

// RESTSender posts pre-encoded bodies round robin.
type RESTSender struct {
	Client *http.Client
	URL    string
	Bodies []Body
}

// Body is one pre-encoded REST request.
type Body struct {
	Data      []byte
	HeaderLen int // Inference-Header-Content-Length; len(Data) when all JSON
}

// NewRESTSender encodes reqs once for addr (host:port) and model.
func NewRESTSender(client *http.Client, addr, model, version string, reqs []*oip.InferRequest) (*RESTSender, error) {
	if len(reqs) == 0 {
		return nil, errors.New("no requests to send")
	}
	s := &RESTSender{Client: client, URL: "http://" + addr + ModelPath(model, version) + "/infer"}
	for i, r := range reqs {
		b, hl, err := oip.AppendInferRequest(nil, r, false)
		if err != nil {
			return nil, fmt.Errorf("encode request %d: %w", i+1, err)
		}
		s.Bodies = append(s.Bodies, Body{Data: b, HeaderLen: hl})
	}
	return s, nil
}

// ModelPath is /v2/models/{m}[/versions/{v}] with both escaped.
func ModelPath(model, version string) string {
	p := "/v2/models/" + url.PathEscape(model)
	if version != "" {
		p += "/versions/" + url.PathEscape(version)
	}
	return p
}

// Send implements Sender.
func (s *RESTSender) Send(ctx context.Context, i int) string {
	b := &s.Bodies[i%len(s.Bodies)]
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.URL, bytes.NewReader(b.Data))
	if err != nil {
		return "transport"
	}
	req.Header.Set("Content-Type", "application/json")
	if b.HeaderLen < len(b.Data) {
		req.Header.Set("Inference-Header-Content-Length", strconv.Itoa(b.HeaderLen))
	}
	resp, err := s.Client.Do(req)
	if err != nil {
		return ClassifyHTTP(0, err)
	}
	_, cerr := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if cerr != nil && resp.StatusCode == http.StatusOK {
		return classifyTransport(cerr)
	}
	return ClassifyHTTP(resp.StatusCode, nil)
}

// GRPCSender calls ModelInfer with raw input contents, round robin.
type GRPCSender struct {
	Client pb.GRPCInferenceServiceClient
	Reqs   []*pb.ModelInferRequest
}

// DialGRPC connects to addr (lazily) without TLS; message limits match
// oip.DefaultMaxBodyBytes. Load goes to addr only: no proxy from the
// environment (HTTPS_PROXY), no service config from DNS. opts come after
// these (e.g. a default compressor).
func DialGRPC(addr string, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	return grpc.NewClient("passthrough:///"+addr, append([]grpc.DialOption{
		grpc.WithNoProxy(), grpc.WithDisableServiceConfig(),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(oip.DefaultMaxBodyBytes), grpc.MaxCallSendMsgSize(oip.DefaultMaxBodyBytes))}, opts...)...)
}

// NewGRPCSender converts reqs once (raw contents) for model and version.
func NewGRPCSender(cc grpc.ClientConnInterface, model, version string, reqs []*oip.InferRequest) (*GRPCSender, error) {
	if len(reqs) == 0 {
		return nil, errors.New("no requests to send")
	}
	s := &GRPCSender{Client: pb.NewGRPCInferenceServiceClient(cc)}
	for _, r := range reqs {
		m := oip.InferRequestToProto(r)
		m.ModelName, m.ModelVersion = model, version
		s.Reqs = append(s.Reqs, m)
	}
	return s, nil
}

// Send implements Sender.
func (s *GRPCSender) Send(ctx context.Context, i int) string {
	_, err := s.Client.ModelInfer(ctx, s.Reqs[i%len(s.Reqs)])
	return ClassifyGRPC(err)
}
