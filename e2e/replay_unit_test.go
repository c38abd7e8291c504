//go:build linux

package e2e

import (
	"strings"
	"testing"
)

// The docs replay's pure part, table-tested: it runs under -short too, so
// a markup mistake in the README or the walkthrough fails fast.

func TestReplayMarkupOfTheDocs(t *testing.T) {
	for _, f := range []string{"README.md", "docs/walkthrough.md"} {
		blocks, err := readDoc(docPath(f), f)
		if err != nil {
			t.Fatal(err)
		}
		cmds := 0
		for _, b := range blocks {
			cmds += len(b.cmds)
		}
		if cmds < 5 {
			t.Errorf("%s: only %d commands to replay", f, cmds)
		}
	}
}

func TestReplayParse(t *testing.T) {
	doc := strings.Join([]string{
		"# Title",
		"## 1. First",
		"```",
		"$ echo a \\",
		"    b",
		"a b",
		"",
		"$ true",
		"```",
		"<!-- replay: skip it kills things -->",
		"```",
		"$ kill -9 1",
		"```",
		"```yaml",
		"not: replayed",
		"```",
		"<!-- replay: background bg -->",
		"",
		"```",
		"$ sleep 1",
		"```",
		"<!-- replay: output of bg -->",
		"```",
		"  5  HTTP 200",
		"```",
	}, "\n")
	blocks, err := parseDoc("x.md", doc)
	if err != nil {
		t.Fatal(err)
	}
	if len(blocks) != 4 {
		t.Fatalf("%d blocks: %+v", len(blocks), blocks)
	}
	b := blocks[0]
	if b.section != "1. First" || b.line != 3 || len(b.cmds) != 2 {
		t.Fatalf("first block: %+v", b)
	}
	if c := b.cmds[0]; c.text != "echo a \\\n    b" || c.line != 4 || len(c.want) != 1 || c.want[0].text != "a b" || c.want[0].line != 6 {
		t.Errorf("first command: %+v", c)
	}
	if c := b.cmds[1]; c.text != "true" || len(c.want) != 0 {
		t.Errorf("second command: %+v", c)
	}
	if b := blocks[1]; b.verb != "skip" || b.arg != "it kills things" {
		t.Errorf("skip block: %+v", b)
	}
	if b := blocks[2]; b.verb != "background" || b.arg != "bg" || b.cmds[0].text != "sleep 1" {
		t.Errorf("background block: %+v", b)
	}
	if b := blocks[3]; b.verb != "output" || b.arg != "bg" || len(b.want) != 1 {
		t.Errorf("output block: %+v", b)
	}
}

func TestReplayParseRefuses(t *testing.T) {
	for _, tc := range []struct {
		name, doc, want string
	}{
		{"unmarked output block", "```\nHTTP 200\n```", "needs a replay marker"},
		{"output before a command", "```\nhello\n$ echo\n```", "x.md:2: output before the first"},
		{"unknown verb", "<!-- replay: maybe -->\n```\n$ true\n```", `unknown replay verb "maybe"`},
		{"skip without a reason", "<!-- replay: skip -->\n```\n$ true\n```", "skip needs a reason"},
		{"marker far from its block", "<!-- replay: skip why -->\ntext\n```\n$ true\n```", "right before its code block"},
		{"marker at the end", "```\n$ true\n```\n<!-- replay: skip why -->", "no code block after it"},
		{"background with output", "<!-- replay: background x -->\n```\n$ a\nout\n```", "one command and no output"},
		{"output block with a command", "<!-- replay: output of x -->\n```\n$ a\n```", "has commands"},
		{"unclosed", "```\n$ true\n", "never closed"},
		{"not a marker", "<!-- replay skip why -->\n```\n$ true\n```", "not a replay marker"},
		{"up without up", "<!-- replay: up -->\n```\n$ make build\n```", "one `bin/switchyard up`"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseDoc("x.md", tc.doc)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to say %q", err, tc.want)
			}
		})
	}
}

func TestReplayCompare(t *testing.T) {
	lines := func(s ...string) []docLine {
		out := make([]docLine, len(s))
		for i, l := range s {
			out[i] = docLine{line: 10 + i, text: l}
		}
		return out
	}
	for _, tc := range []struct {
		name  string
		want  []docLine
		got   string
		extra []mask
		match bool
	}{
		{"same", lines("a", "b"), "a\nb\n", nil, true},
		{"CRLF and table spacing", lines("NAME  AGE", "x     1s"), "NAME      AGE\r\nx         42s\r\n", nil, true},
		{"a line too many", lines("a"), "a\nb\n", nil, false},
		{"a line missing", lines("a", "b"), "a\n", nil, false},
		{"elided lines", lines("a", "...", "z"), "a\nb\nc\nz\n", nil, true},
		{"elision of none", lines("a", "├── ...", "z"), "a\nz\n", nil, true},
		{"elision within a line", lines(`"data":[0.1,0.2, ...]}`), `"data":[0.1,0.2,0.3,0.4]}`, nil, true},
		{"elision at the end", lines("reason: nan_rate ..."), "reason: nan_rate 1% and more", nil, true},
		{"elision keeps the rest", lines("a ... z"), "a b y", nil, false},
		{"timestamps and pids", lines("2026-11-27 01:23:22 (pid 9882) 01:23:31"), "2026-12-03 07:42:51 (pid 15) 07:00:00", nil, true},
		{"latencies", lines("applied on 1/1 proxies in 10 ms", "p99 5.5ms"), "applied on 1/1 proxies in 250 ms\np99 85.9ms\n", nil, true},
		{"revisions are not masked", lines("model/recommender weights v1=80 v2=20 (revision 2)"), "model/recommender weights v1=80 v2=20 (revision 3)", nil, false},
		{"window figures", lines("nan_rate 11.55% (105/909, 95% interval 9.63%..13.79%) > max 0.10%"), "nan_rate 9.1% (98/1077, 95% interval 7.5%..11.0%) > max 0.10%", nil, true},
		{"limits are not masked", lines("nan_rate 11.55% (105/909) > max 0.10%"), "nan_rate 11.55% (105/909) > max 1.00%", nil, false},
		{"traffic counts exact", lines("   1569  HTTP 200  variant v1"), "   1570  HTTP 200  variant v1", nil, false},
		{"traffic counts of a background run", lines("   1569  HTTP 200  variant v1"), "   1570  HTTP 200  variant v1", backgroundMasks, true},
		{"describe's live figures", lines("  v1  80  80%  serving  http  recommender-v1  127.0.0.1:8001  closed  249  0.00%  5.5ms  0  0  -"),
			"  v1  80  80%  serving  http  recommender-v1  127.0.0.1:8001  closed  11970  1.20%  3.1ms  17  2  client_4xx=1 unavailable=1", nil, true},
		{"describe's weights exact", lines("  v1  80  80%  serving  http  recommender-v1  127.0.0.1:8001  closed  249  0.00%  5.5ms  0  0  -"),
			"  v1  20  20%  serving  http  recommender-v1  127.0.0.1:8001  closed  249  0.00%  5.5ms  0  0  -", nil, false},
		{"shadow figures", lines("shadow vs primary  400  400  357  89.2%  0  43  6.19ms  7.14ms"), "shadow vs primary  400  396  353  89.1%  4  43  3.47ms  3.74ms", nil, true},
		{"shadow records exact", lines("shadow vs primary  400  400  357  89.2%  0  43  6.19ms  7.14ms"), "shadow vs primary  387  387  346  89.4%  0  41  3.47ms  3.74ms", nil, false},
		{"empty output", nil, "", nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := compareOutput("x.md", tc.want, tc.got, tc.extra)
			if (d == "") != tc.match {
				t.Fatalf("match %v, want %v:\n%s", d == "", tc.match, d)
			}
		})
	}
	// A background run's lines in any order (its counts, hence its
	// most-first order, vary), but every line there.
	bg := lines("  44601  HTTP 200  variant v2", "   5399  HTTP 200  variant v1")
	if d := compareOutput("x.md", bg, "   9000  HTTP 200  variant v1\n   8000  HTTP 200  variant v2\n", backgroundMasks, true); d != "" {
		t.Errorf("any order: %s", d)
	}
	if d := compareOutput("x.md", bg, "   9000  HTTP 200  variant v1\n   8000  HTTP 200  variant v2\n", backgroundMasks); d == "" {
		t.Errorf("in order: swapped lines match")
	}
	if d := compareOutput("x.md", bg, "   9000  HTTP 200  variant v1\n   8000  HTTP 200  variant v3\n", backgroundMasks, true); d == "" {
		t.Errorf("any order: another line matches")
	}
	for _, tc := range []struct {
		name  string
		want  []docLine
		got   string
		extra []mask
		match bool
	}{} {
		t.Run(tc.name, func(t *testing.T) {
			d := compareOutput("x.md", tc.want, tc.got, tc.extra)
			if (d == "") != tc.match {
				t.Fatalf("match %v, want %v:\n%s", d == "", tc.match, d)
			}
		})
	}
}

// A failed comparison names the doc's file:line and the actual line.
func TestReplayDiffIsReadable(t *testing.T) {
	want := []docLine{{3, "HTTP/1.1 200 OK"}, {4, "X-Switchyard-Variant: v1"}}
	d := compareOutput("README.md", want, "HTTP/1.1 200 OK\nX-Switchyard-Variant: v2\n", nil)
	for _, s := range []string{
		"doc    README.md:4: X-Switchyard-Variant: v1",
		"actual line 2:  X-Switchyard-Variant: v2",
		"README.md:3 | HTTP/1.1 200 OK",
		"   2 | X-Switchyard-Variant: v2",
	} {
		if !strings.Contains(d, s) {
			t.Errorf("diff lacks %q:\n%s", s, d)
		}
	}
}

func TestReplayPortMap(t *testing.T) {
	info := upInfo{API: "http://127.0.0.1:34525", ProxyHTTP: "http://127.0.0.1:8001", ProxyAdmin: "http://127.0.0.1:42999"}
	info.Backends = append(info.Backends, struct {
		Version string `json:"version"`
		Model   string `json:"model"`
		HTTP    string `json:"http"`
		GRPC    string `json:"grpc"`
	}{Version: "v1", HTTP: "http://127.0.0.1:41587"})
	p := newPortMap(info, "127.0.0.1:44913")
	// The proxy got 8001, the documented port of backend v1: one pass each
	// way, so neither is taken for the other.
	if got := p.toActual("curl http://127.0.0.1:8080/x; curl 127.0.0.1:8001 127.0.0.1:80801"); got != "curl http://127.0.0.1:8001/x; curl 127.0.0.1:41587 127.0.0.1:80801" {
		t.Errorf("toActual: %s", got)
	}
	if got := p.toDoc("127.0.0.1:8001 127.0.0.1:41587 http://127.0.0.1:34525 127.0.0.1:44913"); got != "127.0.0.1:8080 127.0.0.1:8001 http://127.0.0.1:7070 127.0.0.1:18000" {
		t.Errorf("toDoc: %s", got)
	}
}
