package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/switchyard-dev/switchyard/api"
)

// structured reports whether -o asks for json or yaml.
func (a *app) structured() bool { return a.output == "json" || a.output == "yaml" }

// printRaw prints an API answer body (JSON) in the -o format: json is
// re-indented, yaml is the same object in YAML (same keys, same order).
func (a *app) printRaw(raw []byte) error {
	return printRawTo(a.stdout, a.output, raw)
}

func printRawTo(w io.Writer, format string, raw []byte) error {
	switch format {
	case "yaml":
		b, err := jsonToYAML(raw)
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	default:
		var buf bytes.Buffer
		if err := json.Indent(&buf, bytes.TrimSpace(raw), "", "  "); err != nil {
			return fmt.Errorf("the API answered invalid JSON: %w", err)
		}
		buf.WriteByte('\n')
		_, err := w.Write(buf.Bytes())
		return err
	}
}

// printValue prints a Go value as -o json or yaml.
func (a *app) printValue(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return a.printRaw(b)
}

// jsonToYAML converts JSON to block-style YAML keeping key order; strings
// that would read back as another type are quoted.
func jsonToYAML(raw []byte) ([]byte, error) {
	var n yaml.Node
	if err := yaml.Unmarshal(raw, &n); err != nil {
		return nil, fmt.Errorf("convert to YAML: %w", err)
	}
	plain(&n)
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&n); err != nil {
		return nil, fmt.Errorf("convert to YAML: %w", err)
	}
	enc.Close()
	return buf.Bytes(), nil
}

// plain clears the flow and quoting styles the JSON source gave the nodes.
func plain(n *yaml.Node) {
	n.Style &^= yaml.FlowStyle | yaml.DoubleQuotedStyle | yaml.SingleQuotedStyle
	for _, c := range n.Content {
		plain(c)
	}
}

// table writes aligned columns.
type table struct{ tw *tabwriter.Writer }

func newTable(w io.Writer, header ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)}
	t.row(toAny(header)...)
	return t
}

func toAny(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

func (t *table) row(cells ...any) {
	parts := make([]string, len(cells))
	for i, c := range cells {
		s := fmt.Sprint(c)
		if s == "" {
			s = "-"
		}
		parts[i] = strings.ReplaceAll(s, "\t", " ")
	}
	fmt.Fprintln(t.tw, strings.Join(parts, "\t"))
}

func (t *table) flush() error { return t.tw.Flush() }

// weightsString writes weights in the document's version order, then any
// others sorted ("v1=80 v2=20").
func weightsString(m *api.Model) string {
	w := m.Spec.Traffic.Weights
	if len(w) == 0 {
		return ""
	}
	seen := map[string]bool{}
	var parts []string
	for _, v := range m.Spec.Versions {
		if x, ok := w[v.Name]; ok && x > 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", v.Name, x))
		}
		seen[v.Name] = true
	}
	var rest []string
	for k := range w {
		if !seen[k] && w[k] > 0 {
			rest = append(rest, k)
		}
	}
	sort.Strings(rest)
	for _, k := range rest {
		parts = append(parts, fmt.Sprintf("%s=%d", k, w[k]))
	}
	return strings.Join(parts, " ")
}

func weightMapString(w map[string]int) string {
	keys := make([]string, 0, len(w))
	for k := range w {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%d", k, w[k])
	}
	return strings.Join(parts, " ")
}

// age formats how long ago t was, like kubectl (45s, 3m, 5h, 2d).
func age(now, t time.Time) string {
	if t.IsZero() {
		return ""
	}
	d := now.Sub(t)
	switch {
	case d < 0:
		return "0s"
	case d < 2*time.Minute:
		return strconv.Itoa(int(d.Seconds())) + "s"
	case d < 2*time.Hour:
		return strconv.Itoa(int(d.Minutes())) + "m"
	case d < 48*time.Hour:
		return strconv.Itoa(int(d.Hours())) + "h"
	}
	return strconv.Itoa(int(d.Hours()/24)) + "d"
}

func timeString(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

func pct(x float64) string {
	return strconv.FormatFloat(x*100, 'f', -1, 64) + "%"
}

func fmtFloat(x float64, prec int) string { return strconv.FormatFloat(x, 'f', prec, 64) }

// watchOpts are --watch, --interval and --count.
type watchOpts struct {
	on       *bool
	interval *time.Duration
	count    *int
}

func watchFlags(fs *flag.FlagSet) watchOpts {
	return watchOpts{
		on:       watchBool(fs),
		interval: fs.Duration("interval", 2*time.Second, "with --watch: `DURATION` between refreshes"),
		count:    fs.Int("count", 0, "with --watch: stop after `N` refreshes (0: until Ctrl-C)"),
	}
}

// watch runs show once, or with --watch every interval, each refresh under
// a line naming its time, until Ctrl-C (a clean exit) or --count refreshes.
func (a *app) watch(w watchOpts, show func(ctx context.Context) error) error {
	if !*w.on {
		ctx, cancel := a.cctx()
		defer cancel()
		return show(ctx)
	}
	if *w.interval <= 0 || *w.count < 0 {
		return usagef("--interval: want > 0, --count: want >= 0")
	}
	for i := 1; ; i++ {
		if i > 1 && !a.structured() {
			fmt.Fprintf(a.stdout, "\n--- %s ---\n", time.Now().Format("15:04:05"))
		}
		ctx, cancel := a.cctx()
		err := show(ctx)
		cancel()
		if err != nil {
			if a.ctx.Err() != nil {
				return nil
			}
			return err
		}
		if *w.count > 0 && i >= *w.count {
			return nil
		}
		select {
		case <-a.ctx.Done():
			return nil
		case <-time.After(*w.interval):
		}
	}
}

func watchBool(fs *flag.FlagSet) *bool {
	on := fs.Bool("watch", false, "print again every --interval until Ctrl-C (or --count times)")
	fs.BoolVar(on, "w", false, "same as --watch")
	return on
}
