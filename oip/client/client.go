// Package client holds OIP v2 clients over REST (HTTPClient) and gRPC
// (GRPCClient) behind one small interface, returning oip types and, for
// protocol errors, *oip.Error with the server's status mapped back to a Code.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/switchyard-dev/switchyard/oip"
	pb "github.com/switchyard-dev/switchyard/oip/inferencepb"
)

// Client is an OIP v2 client. Version "" lets the server choose.
type Client interface {
	Infer(ctx context.Context, req *oip.InferRequest) (*oip.InferResponse, error)
	ModelMetadata(ctx context.Context, name, version string) (*oip.ModelMetadata, error)
	ModelReady(ctx context.Context, name, version string) (bool, error)
	ServerReady(ctx context.Context) (bool, error)
	RepositoryIndex(ctx context.Context, readyOnly bool) ([]oip.RepositoryModel, error)
	LoadModel(ctx context.Context, name string) error
	UnloadModel(ctx context.Context, name string) error
	Close() error
}

var (
	_ Client = (*HTTPClient)(nil)
	_ Client = (*GRPCClient)(nil)
)

// HTTPOptions configures an HTTPClient.
type HTTPOptions struct {
	// Client is the http.Client to use; nil means a dedicated one with a
	// transport keeping up to 64 idle connections per host.
	Client *http.Client
	// Binary sends input data and asks for output data in the binary tensor
	// data extension instead of JSON numbers.
	Binary bool
	// MaxResponseBytes bounds a response body; 0 means 64 MiB.
	MaxResponseBytes int64
}

// HTTPClient speaks OIP v2 REST.
type HTTPClient struct {
	base string
	hc   *http.Client
	opts HTTPOptions
}

// NewHTTP returns a REST client for baseURL, e.g. "http://127.0.0.1:8001".
func NewHTTP(baseURL string, opts HTTPOptions) *HTTPClient {
	hc := opts.Client
	if hc == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = 64
		hc = &http.Client{Transport: tr}
	}
	if opts.MaxResponseBytes <= 0 {
		opts.MaxResponseBytes = oip.DefaultMaxBodyBytes
	}
	return &HTTPClient{base: strings.TrimRight(baseURL, "/"), hc: hc, opts: opts}
}

func modelPath(name, version string) string {
	p := "/v2/models/" + url.PathEscape(name)
	if version != "" {
		p += "/versions/" + url.PathEscape(version)
	}
	return p
}

// Infer runs one inference. req.ModelName and req.ModelVersion pick the URL.
func (c *HTTPClient) Infer(ctx context.Context, req *oip.InferRequest) (*oip.InferResponse, error) {
	if c.opts.Binary {
		req = req.WithBinaryOutput()
	}
	body, hl, err := oip.AppendInferRequest(nil, req, c.opts.Binary)
	if err != nil {
		return nil, err
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+modelPath(req.ModelName, req.ModelVersion)+"/infer", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	if hl < len(body) {
		hreq.Header.Set("Content-Type", "application/octet-stream")
		hreq.Header.Set(oip.HeaderContentLength, strconv.Itoa(hl))
	} else {
		hreq.Header.Set("Content-Type", "application/json")
	}
	status, hdr, data, err := c.do(hreq)
	if err != nil {
		return nil, err
	}
	if status != http.StatusOK {
		return nil, httpError(status, data)
	}
	rhl := 0
	if v := hdr.Get(oip.HeaderContentLength); v != "" {
		if rhl, err = strconv.Atoi(v); err != nil {
			return nil, oip.Errorf(oip.Internal, "response %s %q: %v", oip.HeaderContentLength, v, err)
		}
	}
	return oip.DecodeInferResponse(data, rhl)
}

// ModelMetadata fetches a model's metadata.
func (c *HTTPClient) ModelMetadata(ctx context.Context, name, version string) (*oip.ModelMetadata, error) {
	var md oip.ModelMetadata
	if err := c.getJSON(ctx, modelPath(name, version), &md); err != nil {
		return nil, err
	}
	return &md, nil
}

// ModelReady reports a model's readiness (a 503 answer is "not ready").
func (c *HTTPClient) ModelReady(ctx context.Context, name, version string) (bool, error) {
	return c.ready(ctx, modelPath(name, version)+"/ready")
}

// ServerReady reports the server's readiness.
func (c *HTTPClient) ServerReady(ctx context.Context) (bool, error) {
	return c.ready(ctx, "/v2/health/ready")
}

// ServerLive reports whether the server is live.
func (c *HTTPClient) ServerLive(ctx context.Context) (bool, error) {
	return c.ready(ctx, "/v2/health/live")
}

// ServerMetadata fetches the server's metadata.
func (c *HTTPClient) ServerMetadata(ctx context.Context) (oip.ServerMetadata, error) {
	var md oip.ServerMetadata
	err := c.getJSON(ctx, "/v2", &md)
	return md, err
}

// RepositoryIndex lists the repository's models.
func (c *HTTPClient) RepositoryIndex(ctx context.Context, readyOnly bool) ([]oip.RepositoryModel, error) {
	body := `{"ready":` + strconv.FormatBool(readyOnly) + `}`
	status, _, data, err := c.post(ctx, "/v2/repository/index", body)
	if err != nil {
		return nil, err
	}
	if status != http.StatusOK {
		return nil, httpError(status, data)
	}
	var out []oip.RepositoryModel
	if err := json.Unmarshal(data, &out); err != nil {
		return nil, oip.Errorf(oip.Internal, "decoding repository index: %v", err)
	}
	return out, nil
}

// LoadModel loads (or reloads) a model.
func (c *HTTPClient) LoadModel(ctx context.Context, name string) error {
	return c.repoAction(ctx, name, "load")
}

// UnloadModel unloads a model.
func (c *HTTPClient) UnloadModel(ctx context.Context, name string) error {
	return c.repoAction(ctx, name, "unload")
}

// Close releases idle connections.
func (c *HTTPClient) Close() error {
	c.hc.CloseIdleConnections()
	return nil
}

func (c *HTTPClient) repoAction(ctx context.Context, name, action string) error {
	status, _, data, err := c.post(ctx, "/v2/repository/models/"+url.PathEscape(name)+"/"+action, "")
	if err != nil {
		return err
	}
	if status != http.StatusOK {
		return httpError(status, data)
	}
	return nil
}

func (c *HTTPClient) ready(ctx context.Context, path string) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path, nil)
	if err != nil {
		return false, err
	}
	status, _, data, err := c.do(req)
	if err != nil {
		return false, err
	}
	switch status {
	case http.StatusOK:
		return true, nil
	case http.StatusServiceUnavailable:
		return false, nil
	}
	return false, httpError(status, data)
}

func (c *HTTPClient) getJSON(ctx context.Context, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path, nil)
	if err != nil {
		return err
	}
	status, _, data, err := c.do(req)
	if err != nil {
		return err
	}
	if status != http.StatusOK {
		return httpError(status, data)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return oip.Errorf(oip.Internal, "decoding %s: %v", path, err)
	}
	return nil
}

func (c *HTTPClient) post(ctx context.Context, path, body string) (int, http.Header, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+path, strings.NewReader(body))
	if err != nil {
		return 0, nil, nil, err
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	return c.do(req)
}

// do sends req and reads the whole (bounded) response. Transport failures
// are Unavailable (DeadlineExceeded/Canceled when the context ended).
func (c *HTTPClient) do(req *http.Request) (int, http.Header, []byte, error) {
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctxErr := req.Context().Err(); ctxErr != nil {
			return 0, nil, nil, &oip.Error{Code: oip.CodeOf(ctxErr), Msg: err.Error()}
		}
		return 0, nil, nil, oip.Errorf(oip.Unavailable, "%v", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, c.opts.MaxResponseBytes+1))
	if err != nil {
		return 0, nil, nil, oip.Errorf(oip.Unavailable, "reading response: %v", err)
	}
	if int64(len(data)) > c.opts.MaxResponseBytes {
		return 0, nil, nil, oip.Errorf(oip.TooLarge, "response exceeds %d bytes", c.opts.MaxResponseBytes)
	}
	return resp.StatusCode, resp.Header, data, nil
}

// httpError turns a non-200 answer into an *oip.Error, taking the message
// from a JSON {"error": "..."} body when there is one.
func httpError(status int, body []byte) error {
	var e struct {
		Error string `json:"error"`
	}
	msg := ""
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		msg = e.Error
	} else {
		msg = strings.TrimSpace(string(body))
		if len(msg) > 200 {
			msg = msg[:200]
		}
		msg = fmt.Sprintf("HTTP %d: %s", status, msg)
	}
	return &oip.Error{Code: oip.CodeFromHTTPStatus(status), Msg: msg}
}

// GRPCClient speaks OIP v2 gRPC.
type GRPCClient struct {
	conn   *grpc.ClientConn // nil when built by NewGRPC
	client pb.GRPCInferenceServiceClient
}

// DialGRPC connects (lazily, as grpc.NewClient does) to target, e.g.
// "127.0.0.1:9001", without TLS unless opts say otherwise. Receive size is
// raised to oip.DefaultMaxBodyBytes.
func DialGRPC(target string, opts ...grpc.DialOption) (*GRPCClient, error) {
	opts = append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(oip.DefaultMaxBodyBytes), grpc.MaxCallSendMsgSize(oip.DefaultMaxBodyBytes)),
	}, opts...)
	conn, err := grpc.NewClient(target, opts...)
	if err != nil {
		return nil, err
	}
	return &GRPCClient{conn: conn, client: pb.NewGRPCInferenceServiceClient(conn)}, nil
}

// NewGRPC wraps an existing connection (Close then leaves it open).
func NewGRPC(cc grpc.ClientConnInterface) *GRPCClient {
	return &GRPCClient{client: pb.NewGRPCInferenceServiceClient(cc)}
}

// Raw is the generated client, for callers that want the messages.
func (c *GRPCClient) Raw() pb.GRPCInferenceServiceClient { return c.client }

// Infer runs one inference; inputs travel in raw_input_contents.
func (c *GRPCClient) Infer(ctx context.Context, req *oip.InferRequest) (*oip.InferResponse, error) {
	m, err := c.client.ModelInfer(ctx, oip.InferRequestToProto(req))
	if err != nil {
		return nil, oip.ErrorFromGRPC(err)
	}
	return oip.InferResponseFromProto(m)
}

// ModelMetadata fetches a model's metadata.
func (c *GRPCClient) ModelMetadata(ctx context.Context, name, version string) (*oip.ModelMetadata, error) {
	m, err := c.client.ModelMetadata(ctx, &pb.ModelMetadataRequest{Name: name, Version: version})
	if err != nil {
		return nil, oip.ErrorFromGRPC(err)
	}
	return oip.ModelMetadataFromProto(m), nil
}

// ModelReady reports a model's readiness.
func (c *GRPCClient) ModelReady(ctx context.Context, name, version string) (bool, error) {
	m, err := c.client.ModelReady(ctx, &pb.ModelReadyRequest{Name: name, Version: version})
	if err != nil {
		return false, oip.ErrorFromGRPC(err)
	}
	return m.GetReady(), nil
}

// ServerReady reports the server's readiness.
func (c *GRPCClient) ServerReady(ctx context.Context) (bool, error) {
	m, err := c.client.ServerReady(ctx, &pb.ServerReadyRequest{})
	if err != nil {
		return false, oip.ErrorFromGRPC(err)
	}
	return m.GetReady(), nil
}

// ServerLive reports whether the server is live.
func (c *GRPCClient) ServerLive(ctx context.Context) (bool, error) {
	m, err := c.client.ServerLive(ctx, &pb.ServerLiveRequest{})
	if err != nil {
		return false, oip.ErrorFromGRPC(err)
	}
	return m.GetLive(), nil
}

// ServerMetadata fetches the server's metadata.
func (c *GRPCClient) ServerMetadata(ctx context.Context) (oip.ServerMetadata, error) {
	m, err := c.client.ServerMetadata(ctx, &pb.ServerMetadataRequest{})
	if err != nil {
		return oip.ServerMetadata{}, oip.ErrorFromGRPC(err)
	}
	return oip.ServerMetadataFromProto(m), nil
}

// RepositoryIndex lists the repository's models.
func (c *GRPCClient) RepositoryIndex(ctx context.Context, readyOnly bool) ([]oip.RepositoryModel, error) {
	m, err := c.client.RepositoryIndex(ctx, &pb.RepositoryIndexRequest{Ready: readyOnly})
	if err != nil {
		return nil, oip.ErrorFromGRPC(err)
	}
	return oip.RepositoryIndexFromProto(m), nil
}

// LoadModel loads (or reloads) a model.
func (c *GRPCClient) LoadModel(ctx context.Context, name string) error {
	_, err := c.client.RepositoryModelLoad(ctx, &pb.RepositoryModelLoadRequest{ModelName: name})
	return oip.ErrorFromGRPC(err)
}

// UnloadModel unloads a model.
func (c *GRPCClient) UnloadModel(ctx context.Context, name string) error {
	_, err := c.client.RepositoryModelUnload(ctx, &pb.RepositoryModelUnloadRequest{ModelName: name})
	return oip.ErrorFromGRPC(err)
}

// Close closes the connection DialGRPC opened.
func (c *GRPCClient) Close() error {
	if c.conn == nil {
		return nil
	}
	return c.conn.Close()
}
