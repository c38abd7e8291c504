package loadtest

import (
	"encoding/json"
	"fmt"
	"html"
	"io"
	"math"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/switchyard-dev/switchyard/canary"
)

// Summary is a histogram's percentiles.
type Summary struct {
	Count uint64        `json:"count"`
	Mean  time.Duration `json:"mean_ns"`
	P50   time.Duration `json:"p50_ns"`
	P90   time.Duration `json:"p90_ns"`
	P95   time.Duration `json:"p95_ns"`
	P99   time.Duration `json:"p99_ns"`
	Max   time.Duration `json:"max_ns"`
}

// Summarize reads the percentiles from h (pure).
func Summarize(h *canary.Histogram) Summary {
	return Summary{
		Count: h.Total, Mean: h.Mean(), P50: h.Quantile(0.5), P90: h.Quantile(0.9), P95: h.Quantile(0.95),
		P99: h.Quantile(0.99), Max: time.Duration(h.MaxNS),
	}
}

// Report is everything one `syctl loadtest` invocation measured.
type Report struct {
	Target    string      `json:"target"`
	Protocol  string      `json:"protocol"`
	Model     string      `json:"model"`
	Inputs    string      `json:"inputs"` // "file PATH (N requests)" or "generated (seed S)"
	Mode      string      `json:"mode"`   // "fixed" or "ramp"
	Run       *RunReport  `json:"run,omitempty"`
	Ramp      *RampResult `json:"ramp,omitempty"`
	Process   *ProcStats  `json:"process,omitempty"`
	ColdStart *ColdStart  `json:"cold_start,omitempty"`
	Started   time.Time   `json:"started"`
	result    *Result     // for the HTML plots
}

// RunReport is a fixed-rate run in the report.
type RunReport struct {
	TargetRate   float64        `json:"target_rate"`
	AchievedRate float64        `json:"achieved_rate"`
	Scheduled    int            `json:"scheduled"`
	Completed    int            `json:"completed"`
	OK           int            `json:"ok"`
	Errors       map[string]int `json:"errors,omitempty"`
	Unsent       int            `json:"unsent"`
	Seconds      float64        `json:"seconds"`
	Latency      Summary        `json:"latency"`    // every completed request, from its scheduled send time
	OKLatency    Summary        `json:"ok_latency"` // successful ones
	Service      Summary        `json:"service"`    // actual send to answer (no generator lag)
	SendLag      Summary        `json:"send_lag"`   // scheduled to actual send (the generator's own lag)
	PerSecond    []SecondStats  `json:"per_second"`
}

// SetRun fills the report from a fixed-rate result.
func (r *Report) SetRun(res *Result) {
	r.result = res
	r.Run = &RunReport{
		TargetRate: res.TargetRate, AchievedRate: res.AchievedRate(), Scheduled: res.Scheduled,
		Completed: res.Completed, OK: res.OK, Errors: res.Errors, Unsent: res.Unsent,
		Seconds: res.Elapsed.Seconds(), Latency: Summarize(&res.Hist), OKLatency: Summarize(&res.OKHist), PerSecond: res.Seconds,
		Service: Summarize(&res.ServiceHist), SendLag: Summarize(&res.LagHist),
	}
}

// SetRamp fills the report from a ramp; the plots show its last step.
func (r *Report) SetRamp(rr *RampResult) {
	r.Ramp = rr
	if n := len(rr.Steps); n > 0 {
		r.result = rr.Steps[n-1].Result
	}
}

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteTable writes the human-readable report.
func (r *Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "target\t%s %s model %s\n", r.Protocol, r.Target, r.Model)
	fmt.Fprintf(tw, "inputs\t%s\n", r.Inputs)
	if rr := r.Run; rr != nil {
		fmt.Fprintf(tw, "rate\t%.1f rps target, %.1f rps achieved over %.2fs\n", rr.TargetRate, rr.AchievedRate, rr.Seconds)
		fmt.Fprintf(tw, "requests\t%d scheduled, %d completed, %d ok, %d errors, %d unsent\n", rr.Scheduled, rr.Completed, rr.OK, rr.Completed-rr.OK, rr.Unsent)
		l := rr.Latency
		fmt.Fprintf(tw, "latency\tp50 %s  p90 %s  p95 %s  p99 %s  max %s  mean %s\n", fmtDur(l.P50), fmtDur(l.P90), fmtDur(l.P95), fmtDur(l.P99), fmtDur(l.Max), fmtDur(l.Mean))
		fmt.Fprintf(tw, "  service time\tp50 %s  p99 %s  (from the actual send)\n", fmtDur(rr.Service.P50), fmtDur(rr.Service.P99))
		fmt.Fprintf(tw, "  send lag\tp50 %s  p99 %s  (scheduled to actual send; included in latency)\n", fmtDur(rr.SendLag.P50), fmtDur(rr.SendLag.P99))
		writeErrors(tw, rr.Errors)
	}
	if ra := r.Ramp; ra != nil {
		fmt.Fprintf(tw, "p99 budget\t%s\n", fmtDur(ra.Budget))
		tw.Flush()
		t2 := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(t2, "STEP\tRATE\tACHIEVED\tP50\tP99\tERRORS\tUNSENT\tVERDICT")
		for i, s := range ra.Steps {
			v := "ok"
			if !s.OK {
				v = "FAIL: " + s.Reason
			}
			fmt.Fprintf(t2, "%d\t%.0f\t%.1f\t%s\t%s\t%d\t%d\t%s\n", i+1, s.Rate, s.Achieved, fmtDur(s.P50), fmtDur(s.P99), s.Errors, s.Unsent, v)
		}
		t2.Flush()
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		if n := len(ra.Steps); n > 0 && ra.Steps[n-1].Result != nil {
			writeErrors(tw, ra.Steps[n-1].Result.Errors)
		}
		fmt.Fprintf(tw, "stopped\t%s\n", ra.StopReason)
		if ra.Capacity > 0 {
			bound := ""
			if n := len(ra.Steps); n > 0 && ra.Steps[n-1].OK {
				bound = " (lower bound: no step failed)"
			}
			fmt.Fprintf(tw, "capacity\t%.0f rps per replica within p99 %s%s\n", ra.Capacity, fmtDur(ra.Budget), bound)
		} else {
			fmt.Fprintf(tw, "capacity\tunknown: no step passed\n")
		}
		if ra.TargetRate > 0 && ra.Replicas > 0 {
			fmt.Fprintf(tw, "replicas\t%d for %.0f rps with %.0f%% headroom\n", ra.Replicas, ra.TargetRate, ra.Headroom*100)
		}
	}
	if p := r.Process; p != nil {
		fmt.Fprintf(tw, "backend pid %d\tcpu %.2fs, rss start %s peak %s end %s (growth %+d KiB)\n", p.PID, p.CPUSeconds,
			fmtBytes(p.RSSStart), fmtBytes(p.RSSPeak), fmtBytes(p.RSSEnd), p.RSSGrowth/1024)
	}
	if c := r.ColdStart; c != nil {
		fmt.Fprintf(tw, "cold start\tload call %s, load to ready %s (%d polls)\n", fmtDur(c.LoadCall), fmtDur(c.LoadToReady), c.ReadyPolls)
		var parts []string
		for i, d := range c.FirstLatency {
			s := fmtDur(d)
			if c.FirstErrors != nil && c.FirstErrors[i] != "" {
				s += "(" + c.FirstErrors[i] + ")"
			}
			parts = append(parts, s)
		}
		fmt.Fprintf(tw, "first requests\t%s\n", strings.Join(parts, " "))
	}
	return tw.Flush()
}

func writeErrors(tw io.Writer, errs map[string]int) {
	if len(errs) == 0 {
		return
	}
	r := &Result{Errors: errs}
	var parts []string
	for _, k := range r.ErrorKinds() {
		parts = append(parts, fmt.Sprintf("%s=%d", k, errs[k]))
	}
	fmt.Fprintf(tw, "errors\t%s\n", strings.Join(parts, " "))
}

func fmtBytes(b int64) string {
	return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
}

// WriteHTML writes a self-contained HTML report with two inline SVG plots:
// per-second p50/p99 latency over the run and the latency histogram.
func (r *Report) WriteHTML(w io.Writer) error {
	var b strings.Builder
	b.WriteString("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"/><title>syctl loadtest</title>\n")
	b.WriteString("<style>body{font-family:sans-serif;margin:2em}pre{background:#f6f6f6;padding:1em}svg{border:1px solid #ccc;margin:1em 0}</style></head><body>\n")
	fmt.Fprintf(&b, "<h1>Load test: %s</h1>\n", html.EscapeString(r.Model))
	var tbl strings.Builder
	_ = r.WriteTable(&tbl)
	fmt.Fprintf(&b, "<pre>%s</pre>\n", html.EscapeString(tbl.String()))
	if r.result != nil {
		b.WriteString("<h2>Latency over time (by scheduled second)</h2>\n")
		b.WriteString(latencySVG(r.result.Seconds))
		b.WriteString("<h2>Latency histogram</h2>\n")
		b.WriteString(histogramSVG(&r.result.Hist))
	}
	b.WriteString("</body></html>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

const svgW, svgH, svgPad = 720.0, 300.0, 50.0

func latencySVG(secs []SecondStats) string {
	var b strings.Builder
	fmt.Fprintf(&b, `<svg id="latency-over-time" xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f">`+"\n", svgW, svgH, svgW, svgH)
	maxY := 0.0
	maxX := 1
	for _, s := range secs {
		maxY = math.Max(maxY, ms(s.P99))
		maxX = max(maxX, s.Second+1)
	}
	if maxY == 0 {
		maxY = 1
	}
	axes(&b, fmt.Sprintf("seconds (0..%d)", maxX), fmt.Sprintf("ms (max %.2f)", maxY))
	x := func(sec int) float64 { return svgPad + float64(sec)/float64(maxX)*(svgW-2*svgPad) }
	y := func(v float64) float64 { return svgH - svgPad - v/maxY*(svgH-2*svgPad) }
	for _, line := range []struct {
		name, color string
		get         func(SecondStats) time.Duration
	}{{"p50", "#1f77b4", func(s SecondStats) time.Duration { return s.P50 }}, {"p99", "#d62728", func(s SecondStats) time.Duration { return s.P99 }}} {
		var pts []string
		for _, s := range secs {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(s.Second), y(ms(line.get(s)))))
		}
		fmt.Fprintf(&b, `<polyline class="%s" fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", line.name, line.color, strings.Join(pts, " "))
	}
	fmt.Fprintf(&b, `<text x="%.0f" y="20" fill="#1f77b4">p50</text><text x="%.0f" y="20" fill="#d62728">p99</text>`+"\n", svgW-120, svgW-80)
	b.WriteString("</svg>\n")
	return b.String()
}

func histogramSVG(h *canary.Histogram) string {
	var b strings.Builder
	fmt.Fprintf(&b, `<svg id="latency-histogram" xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f">`+"\n", svgW, svgH, svgW, svgH)
	lo, hi := -1, -1
	var maxC uint64
	for i, c := range h.Counts {
		if c == 0 {
			continue
		}
		if lo < 0 {
			lo = i
		}
		hi = i
		maxC = max(maxC, c)
	}
	if lo < 0 {
		axes(&b, "latency", "requests")
		b.WriteString("</svg>\n")
		return b.String()
	}
	l0, _ := canary.BucketBounds(lo)
	_, h1 := canary.BucketBounds(hi)
	if hi == canary.NumBuckets-1 {
		h1 = h.MaxNS
	}
	axes(&b, fmt.Sprintf("latency %s .. %s (log-linear buckets)", fmtDur(time.Duration(l0)), fmtDur(time.Duration(h1))), fmt.Sprintf("requests (max %d)", maxC))
	n := hi - lo + 1
	bw := (svgW - 2*svgPad) / float64(n)
	for i := lo; i <= hi; i++ {
		c := h.Counts[i]
		bh := float64(c) / float64(maxC) * (svgH - 2*svgPad)
		bl, bu := canary.BucketBounds(i)
		fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="#1f77b4"><title>%s-%s: %d</title></rect>`+"\n",
			svgPad+float64(i-lo)*bw, svgH-svgPad-bh, math.Max(bw-1, 0.5), bh, fmtDur(time.Duration(bl)), fmtDur(time.Duration(bu)), c)
	}
	b.WriteString("</svg>\n")
	return b.String()
}

func axes(b *strings.Builder, xl, yl string) {
	fmt.Fprintf(b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="black"/>`+"\n", svgPad, svgH-svgPad, svgW-svgPad, svgH-svgPad)
	fmt.Fprintf(b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="black"/>`+"\n", svgPad, svgPad, svgPad, svgH-svgPad)
	fmt.Fprintf(b, `<text x="%.0f" y="%.0f">%s</text>`+"\n", svgPad, svgH-15, html.EscapeString(xl))
	fmt.Fprintf(b, `<text x="5" y="%.0f">%s</text>`+"\n", svgPad-15, html.EscapeString(yl))
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }
