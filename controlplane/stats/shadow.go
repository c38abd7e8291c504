package stats

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/switchyard-dev/switchyard/api"
	"github.com/switchyard-dev/switchyard/shadow"
)

// Shadow reports across proxies.
//
// Each proxy compares shadow answers itself and keeps its recent
// comparisons in memory (and a JSON-lines record file). It announces its
// admin address in its xDS node metadata (key "switchyard.admin"); the ACK
// tracker (controlplane/xds) keeps it (ProxyStatus.Admin). The report of
// GET /v1/models/{name}/shadow/report (ShadowReport) fans out to every
// connected proxy's admin endpoint /shadow/records?model=NAME&window=W
// with a bounded timeout, merges the
// records and summarises them with shadow.Summary, so rates and latency
// percentiles are exact over all proxies (not averages of averages). The
// answer lists the proxies asked, how many records each gave, and those
// that did not answer (or have no admin address).

// Shadow report limits.
const (
	// DefaultShadowWindow and MaxShadowWindow bound ?window= of the
	// report.
	DefaultShadowWindow   = 5 * time.Minute
	MaxShadowWindow       = 24 * time.Hour
	shadowFanoutTimeout   = 3 * time.Second
	maxShadowRecordsBytes = 64 << 20
	shadowWorstExamples   = 10
)

// ShadowGatherer asks the proxies' admin pages for their shadow records.
type ShadowGatherer struct {
	// Token is presented to the proxies' admin pages ("": none), over
	// TLS with TLS (nil: the system roots, no client certificate).
	Token string
	TLS   *tls.Config
}

// ShadowReport is model's shadow report over the window: the records of
// every proxy in proxies (the connected ones, with their admin addresses)
// merged and summarised; shadowVersion is the model's spec.shadow.version
// ("": none). The fan-out is bounded by a timeout of its own.
func (g ShadowGatherer) ShadowReport(ctx context.Context, proxies []api.ProxyStatus, model, shadowVersion string, window time.Duration) api.ShadowReportResponse {
	resp := api.ShadowReportResponse{Model: model, Window: window.String(), Proxies: []api.ShadowProxy{}, ShadowVersion: shadowVersion}
	ctx, cancel := context.WithTimeout(ctx, shadowFanoutTimeout)
	defer cancel()
	recs := g.gather(ctx, proxies, model, window, &resp)
	now := time.Now()
	resp.Report = shadow.Summary(recs, now.Add(-window), now, shadowWorstExamples)
	return resp
}

// gather asks every connected proxy (once per admin address) for its
// records in the window, concurrently, until ctx ends.
func (g ShadowGatherer) gather(ctx context.Context, proxies []api.ProxyStatus, model string, window time.Duration, resp *api.ShadowReportResponse) []shadow.Record {
	byAdmin := map[string]string{} // admin -> node
	for _, p := range proxies {
		if p.Admin == "" {
			resp.Proxies = append(resp.Proxies, api.ShadowProxy{Node: p.Node, Error: "no admin address in its node metadata"})
			resp.Missing = append(resp.Missing, p.Node)
			continue
		}
		byAdmin[p.Admin] = p.Node
	}
	admins := make([]string, 0, len(byAdmin))
	for ad := range byAdmin {
		admins = append(admins, ad)
	}
	sort.Strings(admins)
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true, TLSClientConfig: g.TLS}}
	defer client.CloseIdleConnections()
	results := make([]api.ShadowProxy, len(admins))
	parts := make([][]shadow.Record, len(admins))
	var wg sync.WaitGroup
	for i, ad := range admins {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = api.ShadowProxy{Node: byAdmin[ad], Admin: ad}
			recs, err := fetchShadowRecords(ctx, client, ad, g.Token, model, window)
			if err != nil {
				results[i].Error = err.Error()
				return
			}
			results[i].Records = len(recs)
			parts[i] = recs
		}()
	}
	wg.Wait()
	var all []shadow.Record
	for i, res := range results {
		resp.Proxies = append(resp.Proxies, res)
		if res.Error != "" {
			resp.Missing = append(resp.Missing, res.Node)
		}
		all = append(all, parts[i]...)
	}
	sort.Strings(resp.Missing)
	return all
}

// proxyShadowRecords is the part of a proxy's /shadow/records answer used
// here.
type proxyShadowRecords struct {
	Records []shadow.Record `json:"records"`
}

func fetchShadowRecords(ctx context.Context, client *http.Client, admin, token, model string, window time.Duration) ([]shadow.Record, error) {
	base := admin // host:port, or https://host:port from a proxy whose admin serves TLS
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	u := base + "/shadow/records?model=" + url.QueryEscape(model) + "&window=" + url.QueryEscape(window.String())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("no answer: %v", err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, maxShadowRecordsBytes))
	if err != nil {
		return nil, fmt.Errorf("read answer: %v", err)
	}
	switch {
	case res.StatusCode == http.StatusNotFound:
		return nil, nil // this proxy does not shadow the model (yet): nothing to add
	case res.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("answered %d: %s", res.StatusCode, b)
	}
	var out proxyShadowRecords
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("bad answer: %v", err)
	}
	return out.Records, nil
}
