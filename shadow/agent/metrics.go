package agent

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/encoding/protodelim"
)

// metricPrefix names the agent's families the proxy serves (the agent's
// engine may have series of its own, such as a headless proxy's
// switchyard_proxy_*, which are not the proxy's).
const metricPrefix = "switchyard_shadow_"

// collector gathers the agent's switchyard_shadow_* metric families into
// the proxy's registry at scrape time (an unchecked collector: the
// families are known only once asked). An agent that does not answer
// within metricsTimeout (starved at SCHED_IDLE, restarting) gets its last
// answer served again, so its series never drop out of a scrape (rates
// stay continuous), with switchyard_shadow_agent_metrics_age_seconds
// saying how old they are.
type collector struct{ c *Client }

// metricsTimeout bounds a scrape's wait for the agent.
const metricsTimeout = 2 * time.Second

var ageDesc = prometheus.NewDesc("switchyard_shadow_agent_metrics_age_seconds",
	"Age of the shadow agent's series in this scrape: 0 when the agent answered it, more when it did not answer in time and its last answer is served again.", nil, nil)

func (collector) Describe(chan<- *prometheus.Desc) {}

func (col collector) Collect(ch chan<- prometheus.Metric) {
	c := col.c
	ctx, cancel := context.WithTimeout(context.Background(), metricsTimeout)
	defer cancel()
	b, err := c.call(ctx, callMetrics, nil)
	var mfs []*dto.MetricFamily
	if err == nil {
		mfs, err = decodeMetricFamilies(b)
	}
	now := time.Now()
	c.lastMu.Lock()
	if err == nil {
		c.lastMetrics, c.lastAt = constMetrics(mfs), now
	}
	ms, at := c.lastMetrics, c.lastAt
	c.lastMu.Unlock()
	switch {
	case at.IsZero(): // never answered yet
		c.log.Warn("shadow agent metrics not gathered", "error", err)
		return
	case err != nil:
		c.log.Warn("shadow agent metrics not gathered; serving its last answer", "error", err, "age", now.Sub(at).Round(time.Millisecond))
	}
	for _, m := range ms {
		ch <- m
	}
	ch <- prometheus.MustNewConstMetric(ageDesc, prometheus.GaugeValue, now.Sub(at).Seconds())
}

// encodeMetricFamilies writes the families whose name starts with prefix
// as length-delimited protobuf.
func encodeMetricFamilies(mfs []*dto.MetricFamily, prefix string) ([]byte, error) {
	var b bytes.Buffer
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), prefix) {
			continue
		}
		if _, err := protodelim.MarshalTo(&b, mf); err != nil {
			return nil, err
		}
	}
	return b.Bytes(), nil
}

func decodeMetricFamilies(b []byte) ([]*dto.MetricFamily, error) {
	r := bufio.NewReader(bytes.NewReader(b))
	var out []*dto.MetricFamily
	for {
		mf := &dto.MetricFamily{}
		err := protodelim.UnmarshalFrom(r, mf)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("shadow agent metrics: %w", err)
		}
		out = append(out, mf)
	}
}

// constMetrics turns gathered families back into metrics a collector can
// emit (counters, gauges, histograms; other types are skipped).
func constMetrics(mfs []*dto.MetricFamily) []prometheus.Metric {
	var out []prometheus.Metric
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			names := make([]string, 0, len(m.GetLabel()))
			values := make([]string, 0, len(m.GetLabel()))
			for _, l := range m.GetLabel() {
				names = append(names, l.GetName())
				values = append(values, l.GetValue())
			}
			desc := prometheus.NewDesc(mf.GetName(), mf.GetHelp(), names, nil)
			var (
				pm  prometheus.Metric
				err error
			)
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				pm, err = prometheus.NewConstMetric(desc, prometheus.CounterValue, m.GetCounter().GetValue(), values...)
			case dto.MetricType_GAUGE:
				pm, err = prometheus.NewConstMetric(desc, prometheus.GaugeValue, m.GetGauge().GetValue(), values...)
			case dto.MetricType_HISTOGRAM:
				h := m.GetHistogram()
				buckets := make(map[float64]uint64, len(h.GetBucket()))
				for _, bk := range h.GetBucket() {
					buckets[bk.GetUpperBound()] = bk.GetCumulativeCount()
				}
				pm, err = prometheus.NewConstHistogram(desc, h.GetSampleCount(), h.GetSampleSum(), buckets, values...)
			default:
				continue
			}
			if err == nil {
				out = append(out, pm)
			}
		}
	}
	return out
}
