package loadtest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// ColdStartConfig measures a model's load on a backend (REST repository
// extension).
type ColdStartConfig struct {
	Addr     string // backend host:port (REST)
	Model    string
	Requests int           // first requests after ready to time (sequential)
	Timeout  time.Duration // bound of unload + load + ready (e.g. 2m)
	Poll     time.Duration // ready poll interval (default 5ms)
	// Token is the backend's repository credential (its
	// --repository-token-file / $SWITCHYARD_REPOSITORY_TOKEN), sent as
	// "Authorization: Bearer" on unload and load ("": none).
	Token string
}

// ColdStart is the measurement.
type ColdStart struct {
	Model        string          `json:"model"`
	LoadCall     time.Duration   `json:"load_call_ns"`     // the POST .../load round trip
	LoadToReady  time.Duration   `json:"load_to_ready_ns"` // load request sent -> ready answered true
	ReadyPolls   int             `json:"ready_polls"`
	FirstLatency []time.Duration `json:"first_latencies_ns"`
	FirstErrors  []string        `json:"first_errors,omitempty"` // error kind per request ("" ok)
}

// MeasureColdStart unloads the model, loads it again, polls
// /v2/models/{m}/ready until true, then sends the first Requests
// requests one at a time (body round robin) and times each.
func MeasureColdStart(ctx context.Context, hc *http.Client, cfg ColdStartConfig, bodies []Body) (*ColdStart, error) {
	if cfg.Requests < 0 || cfg.Requests > 10000 {
		return nil, fmt.Errorf("cold-start requests must be 0..10000, got %d", cfg.Requests)
	}
	if cfg.Requests > 0 && len(bodies) == 0 {
		return nil, fmt.Errorf("no request bodies")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Minute
	}
	if cfg.Poll <= 0 {
		cfg.Poll = 5 * time.Millisecond
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	base := "http://" + cfg.Addr
	repo := base + "/v2/repository/models/" + urlEscape(cfg.Model)
	if err := postOK(ctx, hc, repo+"/unload", cfg.Token); err != nil {
		return nil, fmt.Errorf("unload %q: %w", cfg.Model, err)
	}
	out := &ColdStart{Model: cfg.Model}
	t0 := time.Now()
	if err := postOK(ctx, hc, repo+"/load", cfg.Token); err != nil {
		return nil, fmt.Errorf("load %q: %w", cfg.Model, err)
	}
	out.LoadCall = time.Since(t0)
	readyURL := base + ModelPath(cfg.Model, "") + "/ready"
	for {
		out.ReadyPolls++
		ready, err := getReady(ctx, hc, readyURL)
		if err != nil {
			return nil, fmt.Errorf("ready %q: %w", cfg.Model, err)
		}
		if ready {
			out.LoadToReady = time.Since(t0)
			break
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("model %q not ready within %s", cfg.Model, cfg.Timeout)
		case <-time.After(cfg.Poll):
		}
	}
	s := &RESTSender{Client: hc, URL: base + ModelPath(cfg.Model, "") + "/infer", Bodies: bodies}
	for i := range cfg.Requests {
		t := time.Now()
		kind := s.Send(ctx, i)
		out.FirstLatency = append(out.FirstLatency, time.Since(t))
		out.FirstErrors = append(out.FirstErrors, kind)
	}
	if !hasNonEmpty(out.FirstErrors) {
		out.FirstErrors = nil
	}
	return out, nil
}

func hasNonEmpty(ss []string) bool {
	for _, s := range ss {
		if s != "" {
			return true
		}
	}
	return false
}

func urlEscape(s string) string {
	p := ModelPath(s, "")
	return strings.TrimPrefix(p, "/v2/models/")
}

func postOK(ctx context.Context, hc *http.Client, u, token string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader([]byte("{}")))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(b)))
	}
	return nil
}

func getReady(ctx context.Context, hc *http.Client, u string) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return false, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	switch resp.StatusCode {
	case http.StatusOK:
		return true, nil
	case http.StatusServiceUnavailable, http.StatusNotFound:
		// 404 while the model is (re)loading on some servers.
		return false, nil
	}
	return false, fmt.Errorf("HTTP %d", resp.StatusCode)
}
