package deploy

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

const promtoolPath = "/usr/bin/promtool"

// ruleFile is a Prometheus rule file.
type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Record      string            `yaml:"record"`
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func ruleFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("prometheus/rules/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no rule files under prometheus/rules: %v", err)
	}
	return files
}

func loadRules(t *testing.T) map[string]ruleFile {
	t.Helper()
	out := map[string]ruleFile{}
	for _, f := range ruleFiles(t) {
		var rf ruleFile
		readYAMLStrict(t, f, &rf)
		out[f] = rf
	}
	return out
}

func readYAMLStrict(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// promExpr is one PromQL expression and where it is used.
type promExpr struct {
	Where string
	Expr  string
}

// allExpressions gathers every PromQL expression the deployment uses:
// recording and alerting rules, the rule tests' expressions, the Grafana
// dashboard (targets and variable queries) and the KEDA scalers.
func allExpressions(t *testing.T) (exprs []promExpr, records map[string]string) {
	t.Helper()
	records = map[string]string{}
	for f, rf := range loadRules(t) {
		for _, g := range rf.Groups {
			for _, r := range g.Rules {
				name := r.Record + r.Alert
				exprs = append(exprs, promExpr{fmt.Sprintf("%s: %s", f, name), r.Expr})
				if r.Record != "" {
					records[r.Record] = r.Expr
				}
			}
		}
	}
	for _, f := range globT(t, "prometheus/tests/*.yaml") {
		var tf ruleTestFile
		readYAMLStrict(t, f, &tf)
		for i, tc := range tf.Tests {
			for _, e := range tc.PromQLExprTest {
				exprs = append(exprs, promExpr{fmt.Sprintf("%s: test %d", f, i), e.Expr})
			}
		}
	}
	for _, f := range globT(t, "grafana/*.json") {
		for _, e := range dashboardExprs(t, f) {
			exprs = append(exprs, e)
		}
	}
	for _, obj := range renderDir(t, "k8s/overlays/example") {
		if obj.kind() != "ScaledObject" {
			continue
		}
		for _, tr := range asSlice(dig(obj, "spec", "triggers")) {
			if dig(tr, "type") == "prometheus" {
				q, _ := dig(tr, "metadata", "query").(string)
				exprs = append(exprs, promExpr{"ScaledObject " + obj.name(), q})
			}
		}
	}
	return exprs, records
}

func globT(t *testing.T, pattern string) []string {
	t.Helper()
	m, err := filepath.Glob(pattern)
	if err != nil || len(m) == 0 {
		t.Fatalf("nothing matches %s: %v", pattern, err)
	}
	return m
}

type ruleTestFile struct {
	RuleFiles          []string `yaml:"rule_files"`
	EvaluationInterval string   `yaml:"evaluation_interval"`
	Tests              []struct {
		Interval    string `yaml:"interval"`
		InputSeries []struct {
			Series string `yaml:"series"`
			Values string `yaml:"values"`
		} `yaml:"input_series"`
		PromQLExprTest []struct {
			Expr       string `yaml:"expr"`
			EvalTime   string `yaml:"eval_time"`
			ExpSamples []struct {
				Labels string  `yaml:"labels"`
				Value  float64 `yaml:"value"`
			} `yaml:"exp_samples"`
		} `yaml:"promql_expr_test"`
		AlertRuleTest []struct {
			EvalTime  string `yaml:"eval_time"`
			Alertname string `yaml:"alertname"`
			ExpAlerts []struct {
				ExpLabels      map[string]string `yaml:"exp_labels"`
				ExpAnnotations map[string]string `yaml:"exp_annotations"`
			} `yaml:"exp_alerts"`
		} `yaml:"alert_rule_test"`
	} `yaml:"tests"`
}

// dashboardExprs returns a Grafana dashboard's target expressions and its
// query variables.
func dashboardExprs(t *testing.T, path string) []promExpr {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Type    string `json:"type"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Name  string `json:"name"`
				Type  string `json:"type"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var out []promExpr
	for _, p := range d.Panels {
		if p.Type != "row" && len(p.Targets) == 0 {
			t.Errorf("%s: panel %q has no query", path, p.Title)
		}
		for _, tg := range p.Targets {
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("%s: panel %q has an empty query", path, p.Title)
			}
			out = append(out, promExpr{fmt.Sprintf("%s: panel %q", path, p.Title), tg.Expr})
		}
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		q, _ := v.Query.(map[string]any)["query"].(string)
		m := regexp.MustCompile(`^label_values\(\s*([^,]+?)\s*,\s*(\w+)\s*\)$`).FindStringSubmatch(q)
		if m == nil {
			t.Errorf("%s: variable %s: want label_values(metric, label), got %q", path, v.Name, q)
			continue
		}
		// Checked as a selector whose label must exist: metric{label=~".+"}.
		out = append(out, promExpr{fmt.Sprintf("%s: variable %s", path, v.Name), fmt.Sprintf(`%s{%s=~".+"}`, m[1], m[2])})
	}
	return out
}

var (
	reString    = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	reIdent     = regexp.MustCompile(`(?:^|[^a-zA-Z0-9_:.$])([a-zA-Z_:][a-zA-Z0-9_:]*)`)
	reSelector  = regexp.MustCompile(`([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^{}]*)\}`)
	reMatcher   = regexp.MustCompile(`^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"(?:[^"\\]|\\.)*"\s*$`)
	reGrouping  = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)`)
	reLabelRepl = regexp.MustCompile(`label_replace\((?:[^"]*?),\s*"([a-zA-Z_][a-zA-Z0-9_]*)"`)
	reGrafVar   = regexp.MustCompile(`\$\{?[a-zA-Z_]+\}?`)
)

// metricNames returns the metric names an expression references: names
// with a colon (recording rules) and names containing "switchyard", plus up.
func metricNames(expr string) []string {
	s := reString.ReplaceAllString(expr, `""`)
	s = reGrafVar.ReplaceAllString(s, "5m")
	seen := map[string]bool{}
	var out []string
	for _, m := range reIdent.FindAllStringSubmatch(s, -1) {
		id := m[1]
		if (strings.Contains(id, ":") || strings.Contains(id, "switchyard") || id == "up") && !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out
}

// splitMatchers splits a selector body on commas outside quotes.
func splitMatchers(body string) []string {
	var out []string
	inQ, esc, start := false, false, 0
	for i, c := range body {
		switch {
		case esc:
			esc = false
		case c == '\\':
			esc = true
		case c == '"':
			inQ = !inQ
		case c == ',' && !inQ:
			out = append(out, body[start:i])
			start = i + 1
		}
	}
	if strings.TrimSpace(body[start:]) != "" {
		out = append(out, body[start:])
	}
	return out
}

// TestPromQLUsesRealMetrics: every metric, label matcher and grouping label
// in the rules, rule tests, dashboard and scalers exists in the code.
func TestPromQLUsesRealMetrics(t *testing.T) {
	idx := newSeriesIndex(codeMetrics(t))
	exprs, records := allExpressions(t)
	if len(exprs) < 40 {
		t.Fatalf("only %d expressions found; the collection is broken", len(exprs))
	}
	// rawOf: the code metrics an expression reads, through recording rules.
	var rawOf func(expr string, depth int) map[string]bool
	rawOf = func(expr string, depth int) map[string]bool {
		out := map[string]bool{}
		if depth > 10 {
			return out
		}
		for _, n := range metricNames(expr) {
			if def, ok := records[n]; ok {
				for r := range rawOf(def, depth+1) {
					out[r] = true
				}
			} else {
				out[n] = true
			}
		}
		return out
	}
	isTarget := map[string]bool{}
	for _, l := range targetLabels {
		isTarget[l] = true
	}
	for _, e := range exprs {
		// 1. Every name is a code metric or a recording rule.
		for _, n := range metricNames(e.Expr) {
			if strings.Contains(n, ":") {
				if _, ok := records[n]; !ok {
					t.Errorf("%s: %s is no recording rule in prometheus/rules", e.Where, n)
				}
				continue
			}
			if _, ok := idx[n]; !ok {
				t.Errorf("%s: metric %s is not exported by the code", e.Where, n)
			}
		}
		// 2. Label matchers on code metrics name their labels.
		for _, m := range reSelector.FindAllStringSubmatch(reGrafVar.ReplaceAllString(e.Expr, "5m"), -1) {
			name, body := m[1], m[2]
			labels, isCode := idx[name]
			for _, part := range splitMatchers(body) {
				mm := reMatcher.FindStringSubmatch(part)
				if mm == nil {
					t.Errorf("%s: cannot read matcher %q of %s", e.Where, part, name)
					continue
				}
				l := mm[1]
				if !isCode || isTarget[l] || contains(labels, l) {
					continue
				}
				if _, rec := records[name]; rec {
					continue // checked through its grouping below
				}
				t.Errorf("%s: %s has no label %q (labels: %v)", e.Where, name, l, labels)
			}
		}
		// 3. Grouping labels exist on a metric the expression reads.
		raws := rawOf(e.Expr, 0)
		made := map[string]bool{}
		for _, m := range reLabelRepl.FindAllStringSubmatch(e.Expr, -1) {
			made[m[1]] = true
		}
		for r := range rawOf(e.Expr, 0) {
			if def, ok := records[r]; ok {
				for _, m := range reLabelRepl.FindAllStringSubmatch(def, -1) {
					made[m[1]] = true
				}
			}
		}
		for n := range recordNamesIn(e.Expr, records) {
			for _, m := range reLabelRepl.FindAllStringSubmatch(records[n], -1) {
				made[m[1]] = true
			}
		}
		for _, m := range reGrouping.FindAllStringSubmatch(e.Expr, -1) {
			for _, l := range strings.Split(m[2], ",") {
				l = strings.TrimSpace(l)
				if l == "" || isTarget[l] || l == "le" || made[l] {
					continue
				}
				ok := false
				for r := range raws {
					if contains(idx[r], l) {
						ok = true
						break
					}
				}
				if !ok {
					t.Errorf("%s: %s (%s) names label %q that none of %v has", e.Where, m[1], m[2], l, keys(raws))
				}
			}
		}
	}
}

func recordNamesIn(expr string, records map[string]string) map[string]bool {
	out := map[string]bool{}
	for _, n := range metricNames(expr) {
		if _, ok := records[n]; ok {
			out[n] = true
		}
	}
	return out
}

// TestRuleTestSeriesAreReal: the unit tests' input series are the code's
// metrics with the code's labels (plus target labels).
func TestRuleTestSeriesAreReal(t *testing.T) {
	idx := newSeriesIndex(codeMetrics(t))
	reSeries := regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)\{(.*)\}$`)
	n := 0
	for _, f := range globT(t, "prometheus/tests/*.yaml") {
		var tf ruleTestFile
		readYAMLStrict(t, f, &tf)
		for i, tc := range tf.Tests {
			for _, s := range tc.InputSeries {
				n++
				m := reSeries.FindStringSubmatch(strings.TrimSpace(s.Series))
				if m == nil {
					t.Errorf("%s test %d: series %q: want name{labels}", f, i, s.Series)
					continue
				}
				labels, ok := idx[m[1]]
				if !ok {
					t.Errorf("%s test %d: %s is not exported by the code", f, i, m[1])
					continue
				}
				for _, part := range splitMatchers(m[2]) {
					l := strings.TrimSpace(strings.SplitN(part, "=", 2)[0])
					if !contains(labels, l) && !contains(targetLabels, l) {
						t.Errorf("%s test %d: %s has no label %q (labels: %v)", f, i, m[1], l, labels)
					}
				}
				if m[1] != "up" {
					for _, l := range labels {
						if l != "le" && !strings.Contains(m[2], l+"=") {
							t.Errorf("%s test %d: %s lacks label %q the code always sets", f, i, s.Series, l)
						}
					}
				}
			}
		}
	}
	if n == 0 {
		t.Fatal("no input series found")
	}
}

// TestAlertsHaveRunbooks: every alert has a severity and a runbook_url
// whose anchor is a heading of docs/runbooks.md.
func TestAlertsHaveRunbooks(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "docs", "runbooks.md"))
	if err != nil {
		t.Fatal(err)
	}
	anchors := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "#") {
			anchors[githubAnchor(strings.TrimLeft(line, "# "))] = true
		}
	}
	n := 0
	for f, rf := range loadRules(t) {
		for _, g := range rf.Groups {
			for _, r := range g.Rules {
				if r.Alert == "" {
					continue
				}
				n++
				if r.Labels["severity"] == "" {
					t.Errorf("%s: %s has no severity label", f, r.Alert)
				}
				for _, a := range []string{"summary", "description", "runbook_url"} {
					if r.Annotations[a] == "" {
						t.Errorf("%s: %s has no %s annotation", f, r.Alert, a)
					}
				}
				u := r.Annotations["runbook_url"]
				_, anchor, ok := strings.Cut(u, "docs/runbooks.md#")
				if !ok {
					t.Errorf("%s: %s: runbook_url %q does not point into docs/runbooks.md", f, r.Alert, u)
					continue
				}
				if !anchors[anchor] {
					t.Errorf("%s: %s: docs/runbooks.md has no heading for #%s", f, r.Alert, anchor)
				}
			}
		}
	}
	if n < 10 {
		t.Fatalf("only %d alerts", n)
	}
}

// githubAnchor is GitHub's heading slug: lower case, spaces to hyphens,
// punctuation other than - and _ dropped.
func githubAnchor(h string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(h)) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '_':
			b.WriteRune(r)
		case r == ' ':
			b.WriteByte('-')
		}
	}
	return b.String()
}

// TestPromtool runs promtool over the rules and their unit tests, and
// checks the syntax of the dashboard's and scalers' expressions by wrapping
// them in a throw-away rule file.
func TestPromtool(t *testing.T) {
	if _, err := os.Stat(promtoolPath); err != nil {
		t.Skipf("%s not installed (scripts/setup.sh installs Debian's prometheus package): %v", promtoolPath, err)
	}
	run := func(args ...string) {
		t.Helper()
		out, err := exec.Command(promtoolPath, args...).CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run(append([]string{"check", "rules"}, ruleFiles(t)...)...)
	run(append([]string{"test", "rules"}, globT(t, "prometheus/tests/*.yaml")...)...)

	exprs, _ := allExpressions(t)
	type rule struct {
		Record string `yaml:"record"`
		Expr   string `yaml:"expr"`
	}
	var rules []rule
	for i, e := range exprs {
		if !strings.HasPrefix(e.Where, "grafana/") && !strings.HasPrefix(e.Where, "ScaledObject") {
			continue
		}
		x := strings.NewReplacer("$__rate_interval", "5m", "$model", "recommender", "$backend_model", "recommender-v1").Replace(e.Expr)
		rules = append(rules, rule{Record: fmt.Sprintf("deploy_test:expr_%d", i), Expr: x})
	}
	if len(rules) < 15 {
		t.Fatalf("only %d dashboard/scaler expressions", len(rules))
	}
	b, err := yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboard-and-scalers", "rules": rules}}})
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "exprs.yaml")
	if err := os.WriteFile(f, b, 0o644); err != nil {
		t.Fatal(err)
	}
	run("check", "rules", f)
}

func contains(s []string, x string) bool {
	for _, v := range s {
		if v == x {
			return true
		}
	}
	return false
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
