// Package client is syctl's small client of the control plane's REST API
// (controlplane/rest). The request and response bodies are package api's,
// the types the control plane answers with; the CLI links no server code.
//
// Every non-2xx answer is an *APIError carrying the HTTP status, the API's
// message and its field errors as they were sent. A 404 from a route the
// server does not have (an older control plane) is told apart from a 404 for
// a missing model: APIError.NoEndpoint is true.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/switchyard-dev/switchyard/api"
)

// Client calls one control plane.
type Client struct {
	// BaseURL is e.g. "http://127.0.0.1:7070".
	BaseURL string
	// Token is the bearer token ("" sends none).
	Token string
	// HTTP is the transport (nil: a client with a 30s timeout).
	HTTP *http.Client
	// UserAgent is sent on every request.
	UserAgent string
}

// New returns a client of baseURL with token.
func New(baseURL, token string) *Client {
	return &Client{BaseURL: strings.TrimRight(baseURL, "/"), Token: token,
		HTTP: &http.Client{Timeout: 75 * time.Second}, UserAgent: "syctl"}
}

// APIError is a non-2xx answer.
type APIError struct {
	Method, Path string
	Status       int
	Message      string
	Fields       []api.FieldError
	// Revision is the current revision the API reported with a 409.
	Revision int64
	// Hints name the actions that resolve a refusal (a 409 during a
	// canary: abort it, or repeat with force).
	Hints []api.Hint
	// NoEndpoint: the server has no such route (a plain 404/405 without
	// the API's JSON error body).
	NoEndpoint bool
}

func (e *APIError) Error() string {
	if e.NoEndpoint {
		return fmt.Sprintf("the control plane does not offer %s %s yet (HTTP %d)", e.Method, e.Path, e.Status)
	}
	msg := e.Message
	if msg == "" {
		msg = http.StatusText(e.Status)
	}
	return msg
}

// IsStatus reports whether err is an APIError with this HTTP status (and
// from an existing endpoint).
func IsStatus(err error, status int) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.Status == status && !ae.NoEndpoint
}

// IsNoEndpoint reports whether err says the server lacks the endpoint.
func IsNoEndpoint(err error) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.NoEndpoint
}

// Precondition of a write, and its audited reason.
type Precondition struct {
	// IfRevision sends If-Match: "N".
	IfRevision int64
	// MustNotExist sends If-None-Match: *.
	MustNotExist bool
	// Reason is sent as X-Switchyard-Reason (recorded in the audit log).
	Reason string
}

// Do sends a request with an optional JSON body (a []byte is sent as is)
// and decodes a 2xx JSON answer into out (when non-nil). It returns the raw
// answer body too, for -o json.
func (c *Client) Do(ctx context.Context, method, path string, body any, pre Precondition, out any) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		b, ok := body.([]byte)
		if !ok {
			var err error
			if b, err = json.Marshal(body); err != nil {
				return nil, fmt.Errorf("encode request: %w", err)
			}
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.BaseURL+path, rd)
	if err != nil {
		return nil, fmt.Errorf("request %s %s: %w", method, path, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if c.UserAgent != "" {
		req.Header.Set("User-Agent", c.UserAgent)
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	if pre.IfRevision > 0 {
		req.Header.Set("If-Match", `"`+strconv.FormatInt(pre.IfRevision, 10)+`"`)
	}
	if pre.MustNotExist {
		req.Header.Set("If-None-Match", "*")
	}
	if pre.Reason != "" {
		req.Header.Set("X-Switchyard-Reason", pre.Reason)
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach the control plane at %s: %w", c.BaseURL, unwrapURLError(err))
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("read answer of %s %s: %w", method, path, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return raw, decodeError(method, path, resp, raw)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return raw, fmt.Errorf("decode answer of %s %s: %w", method, path, err)
		}
	}
	return raw, nil
}

func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

func decodeError(method, path string, resp *http.Response, raw []byte) error {
	e := &APIError{Method: method, Path: path, Status: resp.StatusCode}
	var body api.ErrorResponse
	// The control plane marks "no such route" (vs "no such model").
	e.NoEndpoint = resp.Header.Get("X-Switchyard-Unknown-Route") == "true"
	isJSON := strings.Contains(resp.Header.Get("Content-Type"), "json")
	if isJSON && json.Unmarshal(raw, &body) == nil && body.Error != "" {
		e.Message, e.Fields, e.Revision, e.Hints = body.Error, body.Fields, body.Revision, body.Hints
		return e
	}
	if resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusMethodNotAllowed {
		// An older server's net/http mux answers an unknown route in plain text.
		e.NoEndpoint = true
		return e
	}
	e.Message = strings.TrimSpace(string(raw))
	if len(e.Message) > 500 {
		e.Message = e.Message[:500] + "…"
	}
	return e
}

func modelPath(name string) string { return "/v1/models/" + url.PathEscape(name) }

// ListModels is GET /v1/models.
func (c *Client) ListModels(ctx context.Context) (api.ModelList, []byte, error) {
	var out api.ModelList
	raw, err := c.Do(ctx, http.MethodGet, "/v1/models", nil, Precondition{}, &out)
	return out, raw, err
}

// GetModel is GET /v1/models/{name}.
func (c *Client) GetModel(ctx context.Context, name string) (api.ModelResponse, []byte, error) {
	var out api.ModelResponse
	raw, err := c.Do(ctx, http.MethodGet, modelPath(name), nil, Precondition{}, &out)
	return out, raw, err
}

// PutModel is PUT /v1/models/{name} with a JSON document (sent as is, so the
// API validates exactly what the user wrote). A wait > 0 asks the answer to
// wait that long for the proxies' ACKs (Proxies).
func (c *Client) PutModel(ctx context.Context, name string, doc []byte, wait time.Duration, pre Precondition) (api.ModelResponse, []byte, error) {
	var out api.ModelResponse
	p := modelPath(name)
	if wait > 0 {
		p += "?waitForAck=" + url.QueryEscape(wait.String())
	}
	raw, err := c.Do(ctx, http.MethodPut, p, doc, pre, &out)
	return out, raw, err
}

// DeleteModel is DELETE /v1/models/{name}; it returns the deletion's
// revision.
func (c *Client) DeleteModel(ctx context.Context, name string, pre Precondition) (int64, []byte, error) {
	var out struct {
		Revision int64 `json:"revision"`
	}
	raw, err := c.Do(ctx, http.MethodDelete, modelPath(name), nil, pre, &out)
	return out.Revision, raw, err
}

// History is GET /v1/models/{name}/history.
func (c *Client) History(ctx context.Context, name string, limit int) (api.History, []byte, error) {
	var out api.History
	p := modelPath(name) + "/history"
	if limit > 0 {
		p += "?limit=" + strconv.Itoa(limit)
	}
	raw, err := c.Do(ctx, http.MethodGet, p, nil, Precondition{}, &out)
	return out, raw, err
}

// SetWeights is PUT /v1/models/{name}/weights. force goes through a
// running canary (the API aborts it first); without it such a change is
// refused (409 with hints). A wait > 0 waits for the proxies' ACKs.
func (c *Client) SetWeights(ctx context.Context, name string, weights map[string]int, reason string, force bool, wait time.Duration, pre Precondition) (api.ModelResponse, []byte, error) {
	var out api.ModelResponse
	body := map[string]any{"weights": weights}
	if reason != "" {
		body["reason"] = reason
	}
	if force {
		body["force"] = true
	}
	if wait > 0 {
		body["waitForAck"] = wait.String()
	}
	raw, err := c.Do(ctx, http.MethodPut, modelPath(name)+"/weights", body, pre, &out)
	return out, raw, err
}

// Rollback is POST /v1/models/{name}/rollback.
func (c *Client) Rollback(ctx context.Context, name string, req api.RollbackRequest, pre Precondition) (api.ModelResponse, []byte, error) {
	var out api.ModelResponse
	raw, err := c.Do(ctx, http.MethodPost, modelPath(name)+"/rollback", req, pre, &out)
	return out, raw, err
}

// AuditQuery selects audit entries.
type AuditQuery struct {
	Model  string
	Before int64
	Limit  int
}

// Audit is GET /v1/audit.
func (c *Client) Audit(ctx context.Context, q AuditQuery) (api.Audit, []byte, error) {
	v := url.Values{}
	if q.Model != "" {
		v.Set("model", q.Model)
	}
	if q.Before > 0 {
		v.Set("before", strconv.FormatInt(q.Before, 10))
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	p := "/v1/audit"
	if len(v) > 0 {
		p += "?" + v.Encode()
	}
	var out api.Audit
	raw, err := c.Do(ctx, http.MethodGet, p, nil, Precondition{}, &out)
	return out, raw, err
}

// Proxies is GET /v1/proxies.
func (c *Client) Proxies(ctx context.Context) (api.ProxyList, []byte, error) {
	var out api.ProxyList
	raw, err := c.Do(ctx, http.MethodGet, "/v1/proxies", nil, Precondition{}, &out)
	return out, raw, err
}

// Health is GET /healthz.
func (c *Client) Health(ctx context.Context) (api.Health, error) {
	var out api.Health
	_, err := c.Do(ctx, http.MethodGet, "/healthz", nil, Precondition{}, &out)
	return out, err
}

// Raw GETs path and returns the 2xx body (for endpoints whose shape the
// CLI only passes through, e.g. canary status or the shadow report).
func (c *Client) Raw(ctx context.Context, method, path string, body any) ([]byte, error) {
	return c.Do(ctx, method, path, body, Precondition{}, nil)
}

// ModelPath is the API path of a model ("/v1/models/NAME").
func ModelPath(name string) string { return modelPath(name) }
