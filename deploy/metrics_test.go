package deploy

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// metricDef is one Prometheus metric the code defines.
type metricDef struct {
	Name   string
	Kind   string // counter, gauge, histogram, summary
	Labels []string
	Where  string // file:line
}

// codeMetrics reads every metric definition out of the repository's
// non-test Go sources: calls of prometheus.New{Counter,Gauge,Histogram,
// Summary}[Vec|Func](Opts{Name: "..."}, labels). Label lists are resolved
// from []string literals, local variables holding them, and append(...).
func codeMetrics(t *testing.T) map[string]metricDef {
	t.Helper()
	root := repoRoot(t)
	fset := token.NewFileSet()
	out := map[string]metricDef{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			name := d.Name()
			if path != root && (strings.HasPrefix(name, ".") || name == "third_party" || name == "deploy" || name == "testdata" || name == "node_modules") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		for _, decl := range f.Decls {
			fn, ok := decl.(*ast.FuncDecl)
			if !ok || fn.Body == nil {
				continue
			}
			ast.Inspect(fn.Body, func(n ast.Node) bool {
				call, ok := n.(*ast.CallExpr)
				if !ok {
					return true
				}
				sel, ok := call.Fun.(*ast.SelectorExpr)
				if !ok {
					return true
				}
				pkg, ok := sel.X.(*ast.Ident)
				if !ok || pkg.Name != "prometheus" {
					return true
				}
				kind, vec := metricCtor(sel.Sel.Name)
				if kind == "" || len(call.Args) == 0 {
					return true
				}
				name, ok := optsName(t, call.Args[0], fset)
				if !ok {
					return true
				}
				def := metricDef{Name: name, Kind: kind, Where: fset.Position(call.Pos()).String()}
				if vec {
					if len(call.Args) < 2 {
						t.Fatalf("%s: %s without labels", def.Where, sel.Sel.Name)
					}
					labels, ok := stringList(call.Args[1], fn.Body)
					if !ok {
						t.Fatalf("%s: cannot resolve the label list of %s; teach stringList this form", def.Where, name)
					}
					def.Labels = labels
				}
				if old, dup := out[name]; dup && old.Kind != def.Kind {
					t.Fatalf("metric %s defined as %s at %s and %s at %s", name, old.Kind, old.Where, def.Kind, def.Where)
				}
				out[name] = def
				return true
			})
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) < 20 {
		t.Fatalf("found only %d metric definitions in the code; the extraction is broken", len(out))
	}
	return out
}

func metricCtor(fn string) (kind string, vec bool) {
	switch fn {
	case "NewCounter", "NewCounterFunc":
		return "counter", false
	case "NewCounterVec":
		return "counter", true
	case "NewGauge", "NewGaugeFunc":
		return "gauge", false
	case "NewGaugeVec":
		return "gauge", true
	case "NewHistogram":
		return "histogram", false
	case "NewHistogramVec":
		return "histogram", true
	case "NewSummary":
		return "summary", false
	case "NewSummaryVec":
		return "summary", true
	}
	return "", false
}

// optsName reads Name from a prometheus.XxxOpts{...} literal; Namespace and
// Subsystem would change the exported name, so they are refused.
func optsName(t *testing.T, e ast.Expr, fset *token.FileSet) (string, bool) {
	lit, ok := e.(*ast.CompositeLit)
	if !ok {
		return "", false
	}
	name := ""
	for _, el := range lit.Elts {
		kv, ok := el.(*ast.KeyValueExpr)
		if !ok {
			continue
		}
		key, _ := kv.Key.(*ast.Ident)
		if key == nil {
			continue
		}
		switch key.Name {
		case "Namespace", "Subsystem":
			t.Fatalf("%s: metric opts with %s; extend codeMetrics to join the name", fset.Position(kv.Pos()), key.Name)
		case "Name":
			bl, ok := kv.Value.(*ast.BasicLit)
			if !ok || bl.Kind != token.STRING {
				t.Fatalf("%s: metric Name is not a string literal", fset.Position(kv.Pos()))
			}
			s, err := strconv.Unquote(bl.Value)
			if err != nil {
				t.Fatal(err)
			}
			name = s
		}
	}
	return name, name != ""
}

// stringList evaluates a label list expression inside body.
func stringList(e ast.Expr, body *ast.BlockStmt) ([]string, bool) {
	switch e := e.(type) {
	case *ast.CompositeLit:
		var out []string
		for _, el := range e.Elts {
			bl, ok := el.(*ast.BasicLit)
			if !ok || bl.Kind != token.STRING {
				return nil, false
			}
			s, err := strconv.Unquote(bl.Value)
			if err != nil {
				return nil, false
			}
			out = append(out, s)
		}
		return out, true
	case *ast.Ident:
		var found ast.Expr
		ast.Inspect(body, func(n ast.Node) bool {
			if as, ok := n.(*ast.AssignStmt); ok && len(as.Lhs) == len(as.Rhs) {
				for i, l := range as.Lhs {
					if id, ok := l.(*ast.Ident); ok && id.Name == e.Name && found == nil {
						found = as.Rhs[i]
					}
				}
			}
			return true
		})
		if found == nil {
			return nil, false
		}
		return stringList(found, body)
	case *ast.CallExpr:
		if id, ok := e.Fun.(*ast.Ident); !ok || id.Name != "append" || len(e.Args) == 0 {
			return nil, false
		}
		base, ok := stringList(e.Args[0], body)
		if !ok {
			return nil, false
		}
		out := append([]string(nil), base...)
		for _, a := range e.Args[1:] {
			bl, ok := a.(*ast.BasicLit)
			if !ok || bl.Kind != token.STRING {
				return nil, false
			}
			s, _ := strconv.Unquote(bl.Value)
			out = append(out, s)
		}
		return out, true
	}
	return nil, false
}

// exported returns the series names a metric exposes.
func (d metricDef) exported() []string {
	switch d.Kind {
	case "histogram":
		return []string{d.Name + "_bucket", d.Name + "_sum", d.Name + "_count"}
	case "summary":
		return []string{d.Name, d.Name + "_sum", d.Name + "_count"}
	}
	return []string{d.Name}
}

// seriesIndex maps every exported series name to its labels.
type seriesIndex map[string][]string

func newSeriesIndex(defs map[string]metricDef) seriesIndex {
	idx := seriesIndex{}
	for _, d := range defs {
		for _, n := range d.exported() {
			labels := append([]string(nil), d.Labels...)
			if strings.HasSuffix(n, "_bucket") && d.Kind == "histogram" {
				labels = append(labels, "le")
			}
			if d.Kind == "summary" && n == d.Name {
				labels = append(labels, "quantile")
			}
			idx[n] = labels
		}
	}
	// Prometheus' own per-target series.
	idx["up"] = nil
	return idx
}

// targetLabels are attached by Prometheus (scrape config, Kubernetes SD).
var targetLabels = []string{"job", "instance", "namespace", "pod", "container", "service", "endpoint"}

func TestCodeMetricsExtraction(t *testing.T) {
	defs := codeMetrics(t)
	// A few anchors that the extraction must find with their labels, so a
	// broken parser cannot pass the PromQL checks vacuously.
	want := map[string][]string{
		"switchyard_proxy_requests_total":           {"model", "variant", "code"},
		"switchyard_backend_queue_seconds":          {"model", "version"},
		"switchyard_shadow_outputs_compared_total":  {"model", "version", "kind", "mode", "result"},
		"switchyard_shadow_dropped_total":           {"model", "version", "kind", "reason"},
		"switchyard_controlplane_connected_proxies": nil,
	}
	for name, labels := range want {
		d, ok := defs[name]
		if !ok {
			t.Errorf("%s not found in the code", name)
			continue
		}
		if strings.Join(d.Labels, ",") != strings.Join(labels, ",") {
			t.Errorf("%s labels = %v, want %v", name, d.Labels, labels)
		}
	}
	if testing.Verbose() {
		names := make([]string, 0, len(defs))
		for n := range defs {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			t.Logf("%-50s %-9s %v", n, defs[n].Kind, defs[n].Labels)
		}
	}
}

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("repository root: %v", err)
	}
	return root
}
