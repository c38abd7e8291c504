package main

import (
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/switchyard-dev/switchyard/api"

	"github.com/switchyard-dev/switchyard/canary"
)

// branches writes items as the children of a tree node:
//
//	├── first
//	└── last
func branches(w io.Writer, indent string, items []string) {
	for i, it := range items {
		mark := "├── "
		if i == len(items)-1 {
			mark = "└── "
		}
		fmt.Fprintf(w, "%s%s%s\n", indent, mark, it)
	}
}

// columns aligns the cells of rows (a small tabwriter for tree items).
func columns(rows [][]string) []string {
	width := map[int]int{}
	for _, r := range rows {
		for i, c := range r {
			width[i] = max(width[i], len([]rune(c)))
		}
	}
	out := make([]string, len(rows))
	for j, r := range rows {
		var b strings.Builder
		for i, c := range r {
			b.WriteString(c)
			if i < len(r)-1 {
				b.WriteString(strings.Repeat(" ", width[i]-len([]rune(c))+2))
			}
		}
		out[j] = strings.TrimRight(b.String(), " ")
	}
	return out
}

// gateValue formats a gate's figure: a rate in percent, the p99 ratio as
// a factor.
func gateValue(name string, x float64) string {
	if name == "p99_ratio" {
		return fmtFloat(x, 2) + "×"
	}
	return pctPrec(x, 2)
}

func pctPrec(x float64, prec int) string { return fmtFloat(x*100, prec) + "%" }

func gateMark(s canary.GateStatus) string {
	switch s {
	case canary.Pass:
		return "✔ pass"
	case canary.Fail:
		return "✖ fail"
	}
	return "… wait"
}

// printCanaryStatus writes a canary's status as a tree: where the ramp
// is, the newest decision and why, every gate with its numbers, the steps,
// the window's figures and the history.
func printCanaryStatus(w io.Writer, s api.CanaryStatus) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	p("Name:        %s", s.Model)
	if s.Canary != "" {
		c := s.Canary
		if s.Baseline != "" {
			c += " (baseline " + s.Baseline + ")"
		}
		p("Canary:      %s", c)
	}
	phase := s.Phase
	if s.Step > 0 {
		phase += fmt.Sprintf(", step %d of %d (%s at %d%%)", s.Step, len(s.Steps), s.Canary, s.StepWeight)
	}
	p("Phase:       %s", phase)
	p("Weights:     %s", weightMapString(s.Weights))
	if s.TimeInStep != "" && (s.Phase == "progressing" || s.Phase == "paused") {
		p("In step:     %s (at least %s and %d canary requests per step)", roundDuration(s.TimeInStep), s.StepDuration, s.MinRequests)
	}
	reason := restToCommands(s.Reason, s.Model, s.Canary)
	if s.Decision != "" {
		p("Decision:    %s: %s", s.Decision, reason)
	} else {
		p("Status:      %s", reason)
	}
	if s.StateError != "" {
		p("State error: %s", s.StateError)
	}
	if len(s.Gates) > 0 {
		p("Gates:")
		rows := make([][]string, len(s.Gates))
		for i, g := range s.Gates {
			detail := g.Detail // the figures and the threshold, in the analysis's words
			if detail == "" {
				detail = gateValue(g.Name, g.Value) + ", max " + gateValue(g.Name, g.Threshold)
			}
			rows[i] = []string{gateMark(g.Status), g.Name, detail}
		}
		branches(w, "", columns(rows))
	}
	if len(s.Steps) > 0 {
		p("Steps:")
		var items []string
		for i, st := range s.Steps {
			mark := "○"
			switch {
			case i+1 < s.Step || (s.Phase == "promoted"):
				mark = "✔"
			case i+1 == s.Step:
				mark = "●"
			}
			it := fmt.Sprintf("%s %d%%", mark, st)
			if i+1 == s.Step && s.Phase != "promoted" {
				it += "  (current)"
			}
			items = append(items, it)
		}
		branches(w, "", items)
	}
	if win := s.Window; win != nil {
		p("Window:      %s .. %s", win.From.Local().Format("15:04:05"), win.To.Local().Format("15:04:05"))
		branches(w, "", columns([][]string{statsRow("baseline", win.Baseline), statsRow("canary", win.Canary)}))
	}
	if s.FailuresToRollback > 0 {
		p("Failures:    %d of %d consecutive failed analyses before a rollback", s.ConsecutiveFailures, s.FailuresToRollback)
	}
	if len(s.History) > 0 {
		p("History:")
		rows := make([][]string, len(s.History))
		for i, e := range s.History {
			by := ""
			if e.Manual {
				by = "(by hand)"
			}
			rows[i] = []string{e.Time.Local().Format("15:04:05"), e.Kind, "step " + strconv.Itoa(e.Step), weightMapString(e.Weights), by, e.Reason}
		}
		branches(w, "", columns(rows))
	}
	if len(s.FailedVersions) > 0 {
		p("Failed versions:")
		var items []string
		for _, v := range sortedKeys(s.FailedVersions) {
			items = append(items, fmt.Sprintf("%s: %s (to ramp it again: syctl canary reset %s --version %s)", v, s.FailedVersions[v], s.Model, v))
		}
		branches(w, "", items)
	}
	proxies := "none"
	if len(s.ReportingProxies) > 0 {
		proxies = strings.Join(s.ReportingProxies, ", ")
	}
	p("Reporting:   %s", proxies)
	p("Revision:    %d", s.Revision)
}

func statsRow(role string, v api.VariantStatsView) []string {
	row := []string{role, v.Version, fmt.Sprintf("%d requests", v.Requests), "errors " + pctPrec(v.ErrorRate, 2)}
	if v.UpstreamFailureRate > 0 {
		// Failures a fallback answered for: the error rate alone hides them.
		row = append(row, "failed "+pctPrec(v.UpstreamFailureRate, 2))
	}
	return append(row, fmt.Sprintf("fallbacks %d", v.Fallbacks), fmt.Sprintf("NaN %d", v.NaNOutputs), "p99 "+fmtFloat(v.P99Ms, 1)+"ms")
}

// roundDuration shortens a Go duration string to seconds ("3m12.345s" →
// "3m12s").
func roundDuration(s string) string {
	d, err := time.ParseDuration(s)
	if err != nil {
		return s
	}
	return d.Round(time.Second).String()
}

var reRESTCanary = regexp.MustCompile(`POST (?:/v1/models/[^/ ]+|\.\.\.)/canary/(start|pause|resume|promote|abort|reset)(?: with a version)?`)

// restToCommands replaces the API requests a control-plane message names
// ("POST .../canary/reset") with the syctl command that sends them.
func restToCommands(msg, model, version string) string {
	return reRESTCanary.ReplaceAllStringFunc(msg, func(m string) string {
		action := reRESTCanary.FindStringSubmatch(m)[1]
		cmd := "syctl canary " + action + " " + model
		if (action == "reset" || action == "start") && version != "" {
			cmd += " --version " + version
		} else if action == "start" {
			cmd += " --version VERSION"
		}
		return "`" + cmd + "`"
	})
}
