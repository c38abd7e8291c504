package compare

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"strings"
)

// Machine describes this machine: CPU model, cores, memory, kernel, load.
func Machine() string {
	cpu := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		if _, err := fmt.Sscanf(string(b), "MemTotal: %d kB", &kb); err == nil {
			mem = fmt.Sprintf(", %.1f GiB RAM", float64(kb)/(1<<20))
		}
	}
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	load, _ := os.ReadFile("/proc/loadavg")
	la := strings.Fields(string(load))
	if len(la) > 3 {
		la = la[:3]
	}
	return fmt.Sprintf("%s, %d CPUs%s, Linux %s, load average at start %s", cpu, runtime.NumCPU(), mem,
		strings.TrimSpace(string(kernel)), strings.Join(la, " "))
}

// WriteJSON writes the results (every sample and the summary rows).
func (r *Results) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(jsonSafe(r))
}

// jsonSafe replaces NaN spreads (no value) so encoding/json accepts them.
func jsonSafe(r *Results) *Results {
	c := *r
	c.Rows = make([]Row, len(r.Rows))
	for i, row := range r.Rows {
		for _, sp := range []*Spread{&row.Achieved, &row.P50, &row.P99, &row.ServiceP50, &row.AddedP50, &row.AddedP99, &row.ReqPerCPU,
			&row.RSSMiB, &row.ReqPerBackendCPU, &row.VsNginxCPU, &row.VsNginxAddedP99, &row.OverInProcessP50us} {
			if sp.N == 0 {
				*sp = Spread{}
			}
		}
		c.Rows[i] = row
	}
	return &c
}

// fmtSpread is "median [min–max]" or "–" when there is no value.
func fmtSpread(s Spread, prec int, unit string) string {
	if s.N == 0 || math.IsNaN(s.Median) {
		return "–"
	}
	f := func(v float64) string { return fmt.Sprintf("%.*f", prec, v) }
	if s.N == 1 || (f(s.Min) == f(s.Max)) {
		return f(s.Median) + unit
	}
	return fmt.Sprintf("%s%s [%s–%s]", f(s.Median), unit, f(s.Min), f(s.Max))
}

func isIn(p string, ps []string) bool {
	for _, x := range ps {
		if x == p {
			return true
		}
	}
	return false
}

// WriteMarkdown writes the tables: proxies (added latency, requests per
// proxy CPU-second, RSS, ratios against nginx), the backend (batching on
// and off against in-process ONNX Runtime), the cold start, the skipped
// pieces and the notes.
func (r *Results) WriteMarkdown(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "Run %s on %s.\n%s.\nVersions: %s.\n\n", r.Started.Format("2006-01-02 15:04 UTC"), r.Machine, r.Config, strings.Join(r.Versions, "; "))
	b.WriteString("Values are the median [min–max] over the repetitions; added latency and ratios are computed pair by pair " +
		"(same repetition, same rate) and then summarised.\n\n")

	b.WriteString("### Proxies\n\n")
	b.WriteString("| piece | rate | achieved rps | p50 ms | p99 ms | added p50 ms | added p99 ms | req / proxy CPU-s | proxy RSS MiB | req/CPU-s vs nginx | added p99 vs nginx | errors |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, row := range r.Rows {
		if row.Piece != Direct && !isIn(row.Piece, ProxyPieces) {
			continue
		}
		fmt.Fprintf(&b, "| %s | %.0f | %s | %s | %s | %s | %s | %s | %s | %s | %s | %d |\n", row.Piece, row.Rate,
			fmtSpread(row.Achieved, 0, ""), fmtSpread(row.P50, 3, ""), fmtSpread(row.P99, 3, ""),
			fmtSpread(row.AddedP50, 3, ""), fmtSpread(row.AddedP99, 3, ""), fmtSpread(row.ReqPerCPU, 0, ""),
			fmtSpread(row.RSSMiB, 1, ""), fmtSpread(row.VsNginxCPU, 2, "×"), fmtSpread(row.VsNginxAddedP99, 2, "×"), row.Errors+row.Unsent)
	}

	b.WriteString("\n### Backend: dynamic batching on / off against in-process ONNX Runtime\n\n")
	b.WriteString("| piece | rate | achieved rps | p50 ms | p99 ms | service p50 ms | service p50 over in-process µs | req / backend CPU-s | errors |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|\n")
	for _, row := range r.Rows {
		name := row.Piece
		switch row.Piece {
		case Direct:
			name = "backend, batching on (direct)"
		case BatchingOff:
			name = "backend, batching off (direct)"
		case InProcess:
			name = "in-process ONNX Runtime"
		default:
			continue
		}
		fmt.Fprintf(&b, "| %s | %.0f | %s | %s | %s | %s | %s | %s | %d |\n", name, row.Rate, fmtSpread(row.Achieved, 0, ""),
			fmtSpread(row.P50, 3, ""), fmtSpread(row.P99, 3, ""), fmtSpread(row.ServiceP50, 3, ""), fmtSpread(row.OverInProcessP50us, 0, ""),
			fmtSpread(row.ReqPerBackendCPU, 0, ""), row.Errors+row.Unsent)
	}

	if len(r.Cold) > 0 {
		b.WriteString("\n### Cold start (recommender-v1, unload → load → ready → first requests one at a time)\n\n")
		b.WriteString("| warm-up requests | load to ready ms | first request ms | later requests ms | errors |\n|---|---|---|---|---|\n")
		for _, warm := range []int{0, 1} {
			var ltr, first, rest []float64
			errs := 0
			for _, c := range r.Cold {
				if c.Warmup == warm {
					ltr, first, rest = append(ltr, c.LoadToReady), append(first, c.FirstMs), append(rest, c.RestMs)
					errs += c.Errors
				}
			}
			if len(ltr) == 0 {
				continue
			}
			fmt.Fprintf(&b, "| %d | %s | %s | %s | %d |\n", warm, fmtSpread(SpreadOf(ltr), 2, ""), fmtSpread(SpreadOf(first), 3, ""),
				fmtSpread(SpreadOf(rest), 3, ""), errs)
		}
	}
	if len(r.Samples) > 0 {
		var l50, l99 []float64
		for _, s := range r.Samples {
			l50, l99 = append(l50, s.LagP50ms), append(l99, s.LagP99ms)
		}
		fmt.Fprintf(&b, "\nLoad generator send lag (scheduled → actual send, included in every latency above; all runs): p50 %s ms, p99 %s ms.\n",
			fmtSpread(SpreadOf(l50), 3, ""), fmtSpread(SpreadOf(l99), 3, ""))
	}
	if len(r.Skipped) > 0 {
		b.WriteString("\nSkipped:\n\n")
		for _, s := range r.Skipped {
			fmt.Fprintf(&b, "- %s: %s\n", s.Piece, s.Reason)
		}
	}
	if len(r.Notes) > 0 {
		b.WriteString("\nNotes:\n\n")
		for _, n := range r.Notes {
			fmt.Fprintf(&b, "- %s\n", n)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
