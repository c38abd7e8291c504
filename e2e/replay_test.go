//go:build linux

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// This file is the docs replay's pure part: reading the shell sessions out
// of the README and docs/walkthrough.md, the masks, and comparing what a
// command printed with what the docs show. The runner (a shell, the stack)
// is in replay_run_test.go; docs/testing.md ("The docs replay") is the
// user's side of the same rules.
//
// # Markup
//
// A fenced block with no language tag is a shell session when it has lines
// that begin with "$ ": each such line is a command (a line ending in "\"
// goes on on the next one), the lines after it, up to the next command,
// are what it prints (stdout and stderr together, as a terminal shows
// them). Sessions are replayed in the order of the file, in one shell, so
// a variable set by one command is there for the next.
//
// An HTML comment right before the fence (blank lines between are fine)
// says what else a block is; the rendered docs do not show it:
//
//	<!-- replay: skip REASON -->    not replayed; REASON says why
//	<!-- replay: up -->             the block's `bin/switchyard up ...` is the
//	                                stack: the test starts it (adding
//	                                --any-ports) and compares its terminal
//	                                output with the block; `make build`
//	                                before it is the test's own build
//	<!-- replay: output of up -->   a block of what `switchyard up` printed
//	                                since the last such block (waited for,
//	                                bounded)
//	<!-- replay: background NAME --> the block's one command runs in the
//	                                background (another terminal)
//	<!-- replay: output of NAME --> a block of what background command NAME
//	                                printed, compared once it ended (waited
//	                                for, bounded)
//	<!-- replay: ctrl-c up -->      the block is what Ctrl-C in up's terminal
//	                                shows: the test interrupts up and
//	                                compares (a line "^C" is the keystroke)
//
// Every other fenced block without a language tag must carry one of these
// (a diagram: "skip not a command"), so no block is left unchecked by
// accident. Blocks with a language tag (```yaml, ```sh) are not replayed.
//
// In the expected output, "..." stands for any text within a line, and a
// line that is only "..." (after tree or indentation characters such as
// "├── ") for any number of lines, none included: the docs' "trimmed where
// marked ...".

// docBlock is one fenced block of a replayed file.
type docBlock struct {
	file    string // as shown in messages: README.md, docs/walkthrough.md
	line    int    // 1-based line of the opening fence
	section string // the heading above it
	verb    string // "", "skip", "up", "output", "background", "ctrl-c"
	arg     string // skip: the reason; output, background: the name
	cmds    []docCmd
	want    []docLine // output blocks: the whole block
}

// docCmd is one "$ " command of a session and what the docs show it print.
type docCmd struct {
	line int
	text string // without "$ ", continuation lines joined with "\n"
	want []docLine
}

// docLine is one expected line and where it is in its file.
type docLine struct {
	line int
	text string
}

var (
	markerRe  = regexp.MustCompile(`^<!--\s*replay:\s*(.*?)\s*-->\s*$`)
	headingRe = regexp.MustCompile(`^#{1,6}\s+(.*)$`)
	fenceRe   = regexp.MustCompile("^```\\s*(\\S*)\\s*$")
)

// readDoc reads the blocks of one replayed file.
func readDoc(path, name string) ([]docBlock, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return parseDoc(name, string(b))
}

// parseDoc splits a markdown file into its fenced blocks with their
// markers, and sessions into commands with their expected output.
func parseDoc(name, src string) ([]docBlock, error) {
	lines := strings.Split(strings.ReplaceAll(src, "\r\n", "\n"), "\n")
	var out []docBlock
	section := ""
	var pending *docBlock // marker seen, waiting for its fence
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		if m := markerRe.FindStringSubmatch(l); m != nil {
			mb := docBlock{file: name, line: i + 1}
			if err := parseMarker(&mb, m[1]); err != nil {
				return nil, fmt.Errorf("%s:%d: %v", name, i+1, err)
			}
			if pending != nil {
				return nil, fmt.Errorf("%s:%d: a replay marker with no code block after it", name, pending.line)
			}
			pending = &mb
			continue
		}
		if strings.HasPrefix(l, "<!--") && strings.Contains(l, "replay") {
			return nil, fmt.Errorf("%s:%d: not a replay marker (want <!-- replay: VERB ... --> on one line): %s", name, i+1, l)
		}
		if m := headingRe.FindStringSubmatch(l); m != nil {
			section = m[1]
		}
		fm := fenceRe.FindStringSubmatch(l)
		if fm == nil {
			if strings.TrimSpace(l) != "" && pending != nil {
				return nil, fmt.Errorf("%s:%d: a replay marker must come right before its code block", name, pending.line)
			}
			continue
		}
		// A fenced block: find its end.
		start := i
		var body []docLine
		for i++; i < len(lines) && !strings.HasPrefix(lines[i], "```"); i++ {
			body = append(body, docLine{line: i + 1, text: lines[i]})
		}
		if i == len(lines) {
			return nil, fmt.Errorf("%s:%d: code block never closed", name, start+1)
		}
		blk := docBlock{file: name, line: start + 1, section: section}
		if pending != nil {
			blk.verb, blk.arg = pending.verb, pending.arg
			pending = nil
		}
		if fm[1] != "" {
			if blk.verb != "" && blk.verb != "skip" {
				return nil, fmt.Errorf("%s:%d: replay %s on a ```%s block (only plain ``` blocks are replayed)", name, start+1, blk.verb, fm[1])
			}
			continue
		}
		if err := splitSession(&blk, body); err != nil {
			return nil, err
		}
		out = append(out, blk)
	}
	if pending != nil {
		return nil, fmt.Errorf("%s:%d: a replay marker with no code block after it", name, pending.line)
	}
	return out, nil
}

func parseMarker(b *docBlock, s string) error {
	verb, rest, _ := strings.Cut(s, " ")
	rest = strings.TrimSpace(rest)
	switch verb {
	case "skip":
		if rest == "" {
			return fmt.Errorf("replay: skip needs a reason")
		}
		b.verb, b.arg = "skip", rest
	case "up":
		b.verb = "up"
	case "ctrl-c":
		if rest != "up" {
			return fmt.Errorf("replay: ctrl-c goes with up, got %q", rest)
		}
		b.verb = "ctrl-c"
	case "background":
		if !regexp.MustCompile(`^[a-z0-9-]+$`).MatchString(rest) {
			return fmt.Errorf("replay: background NAME (a-z, 0-9, -), got %q", rest)
		}
		b.verb, b.arg = "background", rest
	case "output":
		n, ok := strings.CutPrefix(rest, "of ")
		if !ok || n == "" {
			return fmt.Errorf("replay: output of NAME, got %q", s)
		}
		b.verb, b.arg = "output", strings.TrimSpace(n)
	default:
		return fmt.Errorf("unknown replay verb %q (want skip, up, output of, background, ctrl-c)", verb)
	}
	return nil
}

// splitSession fills cmds (lines after "$ ") or want (output blocks), and
// checks the block is what its marker says.
func splitSession(b *docBlock, body []docLine) error {
	where := fmt.Sprintf("%s:%d", b.file, b.line)
	for j := 0; j < len(body); j++ {
		t := body[j].text
		if !strings.HasPrefix(t, "$ ") {
			if len(b.cmds) == 0 {
				b.want = append(b.want, body[j])
			} else {
				c := &b.cmds[len(b.cmds)-1]
				c.want = append(c.want, body[j])
			}
			continue
		}
		c := docCmd{line: body[j].line, text: t[2:]}
		for strings.HasSuffix(c.text, `\`) && j+1 < len(body) {
			j++
			c.text += "\n" + body[j].text
		}
		b.cmds = append(b.cmds, c)
	}
	for i := range b.cmds {
		b.cmds[i].want = trimBlank(b.cmds[i].want)
	}
	b.want = trimBlank(b.want)
	switch b.verb {
	case "skip":
	case "":
		if len(b.cmds) == 0 {
			return fmt.Errorf("%s: a code block that is not a shell session (no \"$ \" line) needs a replay marker, e.g. <!-- replay: skip not a command -->", where)
		}
		if len(b.want) > 0 {
			return fmt.Errorf("%s:%d: output before the first \"$ \" command", b.file, b.want[0].line)
		}
	case "output", "ctrl-c":
		if len(b.cmds) > 0 {
			return fmt.Errorf("%s: replay: %s marks output, but the block has commands", where, b.verb)
		}
	case "background":
		if len(b.cmds) != 1 || len(b.cmds[0].want) > 0 || len(b.want) > 0 {
			return fmt.Errorf("%s: replay: background wants a block with one command and no output", where)
		}
	case "up":
		n := 0
		for _, c := range b.cmds {
			if isUpCommand(c.text) {
				n++
			} else if c.text != "make build" {
				return fmt.Errorf("%s:%d: replay: up blocks hold `make build` and `bin/switchyard up ...` only", b.file, c.line)
			}
		}
		if n != 1 {
			return fmt.Errorf("%s: replay: up wants one `bin/switchyard up` command", where)
		}
	}
	return nil
}

func isUpCommand(s string) bool {
	return s == "bin/switchyard up" || strings.HasPrefix(s, "bin/switchyard up ")
}

func trimBlank(ls []docLine) []docLine {
	for len(ls) > 0 && strings.TrimSpace(ls[len(ls)-1].text) == "" {
		ls = ls[:len(ls)-1]
	}
	return ls
}

// mask is one thing that must vary between runs, replaced by a
// placeholder in both the docs' line and the actual one.
type mask struct {
	name string
	why  string
	re   *regexp.Regexp
	repl string
}

// masks are applied in order to every expected and actual line (after
// the ports were mapped back to the documented defaults). Keep this list
// and docs/testing.md ("The docs replay") in step.
var masks = []mask{
	{"timestamps", "wall-clock times of revisions, audit entries, windows, failed marks",
		regexp.MustCompile(`\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)?`), "<time>"},
	{"clock times", "the times in canary histories and --watch headers",
		regexp.MustCompile(`\b\d\d:\d\d:\d\d\b`), "<time>"},
	{"pids", "process ids in up's banner and messages",
		regexp.MustCompile(`\bpid \d+\b`), "pid <pid>"},
	{"request ids", "shadow records' ids (random per request)",
		regexp.MustCompile(`\b[0-9a-f]{16,}\b`), "<id>"},
	{"latencies", "anything measured in ms or finer: p99s, ACK times",
		regexp.MustCompile(`\b\d+(\.\d+)?\s?(ns|µs|us|ms)\b`), "<latency>"},
	{"ages", "AGE and CONNECTED columns (time since creation, connection)",
		regexp.MustCompile(`\s\d+[smhd]$`), " <age>"},
	{"window figures", "a canary gate's rate and counts over its window, and their 95% interval: how many requests fell in a window depends on the machine's speed",
		regexp.MustCompile(`\d+(\.\d+)?% \(\d+/\d+(, 95% interval \d+(\.\d+)?%\.\.\d+(\.\d+)?%)?\)`), "<rate> (<n>/<n>)"},
	{"p99 ratios", "a canary gate's p99 ratio (timing)",
		regexp.MustCompile(`(ratio )\d+(\.\d+)?|\b\d+(\.\d+)?×`), "${1}<ratio>"},
	{"describe's live figures", "REQUESTS, ERROR RATE, FALLBACKS, NaN and what follows (FAILED, AS BACKUP, AS SHADOW, ERRORS) of `describe`'s Versions table: the control plane's last-minute window, which trails the traffic by up to a second",
		regexp.MustCompile(`^(\s+\S+\s+\d+\s+\d+%\s+\S+\s+\S+\s+\S+\s+\S+\s+\S+\s+)\d+(\s+)\d+(\.\d+)?%(\s+\S+\s+)\d+(\s+)\d+(\s+).*$`), "${1}<n>${2}<rate>${4}<n>${5}<n>${6}<errors>"},
	{"shadow figures", "COMPARED to SHADOW NaN of `shadow report` (RECORDS kept: --min-records waits for them): on a starved machine some shadow calls outlast the model's timeout and are errors, not comparisons",
		regexp.MustCompile(`^(shadow vs primary\s+\d+\s+)\d+\s+\d+\s+\d+(\.\d+)?%\s+\d+\s+\d+`), "${1}<n> <n> <rate> <n> <n>"},
	{"breaker's open spells", "a breaker that is open shows half-open once its open spell (1 s at first) is over, until the next call",
		regexp.MustCompile(`\bhalf-open\b`), "open"},
	{"reporting proxies", "how many proxies sent `describe`'s window a stats report: none yet in the first second after a start",
		regexp.MustCompile(`reports of \d+ proxies`), "reports of <n> proxies"},
}

// backgroundMasks apply to the output of a background command on top of
// masks: traffic.sh run for some seconds sends as many requests as the
// machine manages.
var backgroundMasks = []mask{
	{"traffic.sh counts", "counts of a traffic.sh -d run (requests sent in so many seconds)",
		regexp.MustCompile(`^\s*\d+  HTTP `), "<n>  HTTP "},
}

var spaces = regexp.MustCompile(`[ \t]+`)

// normalize masks a line and collapses runs of blanks (table columns are
// as wide as their widest value, masked or not).
func normalize(s string, extra []mask) string {
	s = strings.TrimRight(s, "\r")
	for _, m := range masks {
		s = m.re.ReplaceAllString(s, m.repl)
	}
	for _, m := range extra {
		s = m.re.ReplaceAllString(s, m.repl)
	}
	return strings.TrimSpace(spaces.ReplaceAllString(s, " "))
}

// isElision: a line that stands for any number of lines.
func isElision(s string) bool {
	return strings.Trim(s, " │├└─") == "..."
}

// globMatch matches a normalized line against a normalized expected line
// in which "..." stands for any text.
func globMatch(want, got string) bool {
	parts := strings.Split(want, "...")
	if len(parts) == 1 {
		return want == got
	}
	// "a, ..." and "a,..." are the same elision: the blank is the docs'.
	for i := range parts {
		if i > 0 {
			parts[i] = strings.TrimLeft(parts[i], " ")
		}
		if i < len(parts)-1 {
			parts[i] = strings.TrimRight(parts[i], " ")
		}
	}
	if !strings.HasPrefix(got, parts[0]) {
		return false
	}
	got = got[len(parts[0]):]
	last := parts[len(parts)-1]
	for _, p := range parts[1 : len(parts)-1] {
		i := strings.Index(got, p)
		if i < 0 {
			return false
		}
		got = got[i+len(p):]
	}
	return strings.HasSuffix(got, last)
}

// matchOutput compares expected lines (with elisions) with actual lines,
// both normalized. It returns -1 on a match, else the index of the first
// expected line that could not be matched (len(want) when actual lines are
// left over) and the index of the actual line it was compared with.
func matchOutput(want, got []string) (int, int) {
	// memo[i][j]: want[i:] matches got[j:]
	memo := map[[2]int]bool{}
	best := [2]int{0, 0} // furthest point reached: for the message
	var m func(i, j int) bool
	m = func(i, j int) bool {
		if i > best[0] || (i == best[0] && j > best[1]) {
			best = [2]int{i, j}
		}
		k := [2]int{i, j}
		if v, ok := memo[k]; ok {
			return v
		}
		var r bool
		switch {
		case i == len(want):
			r = j == len(got)
		case isElision(want[i]):
			r = m(i+1, j) || (j < len(got) && m(i, j+1))
		default:
			r = j < len(got) && globMatch(want[i], got[j]) && m(i+1, j+1)
		}
		memo[k] = r
		return r
	}
	if m(0, 0) {
		return -1, -1
	}
	return best[0], best[1]
}

// compareOutput normalizes both sides and returns "" on a match, else a
// readable report: the first difference (doc file:line against the actual
// line), then the docs' block and the actual output, numbered.
//
// anyOrder compares the lines as sets: for traffic.sh's background runs,
// whose lines come most first and whose counts are masked, so their order
// is too.
func compareOutput(file string, want []docLine, got string, extra []mask, anyOrder ...bool) string {
	gotLines := strings.Split(strings.TrimRight(strings.ReplaceAll(got, "\r\n", "\n"), "\n"), "\n")
	if got == "" || strings.TrimSpace(got) == "" {
		gotLines = nil
	}
	for len(gotLines) > 0 && strings.TrimSpace(gotLines[len(gotLines)-1]) == "" {
		gotLines = gotLines[:len(gotLines)-1]
	}
	nw := make([]string, len(want))
	for i, l := range want {
		nw[i] = normalize(l.text, extra)
	}
	ng := make([]string, len(gotLines))
	for i, l := range gotLines {
		ng[i] = normalize(l, extra)
	}
	if len(anyOrder) > 0 && anyOrder[0] {
		want = append([]docLine(nil), want...) // the block's own stays in file order
		sortBy(want, nw)
		sortBy(gotLines, ng)
	}
	wi, gi := matchOutput(nw, ng)
	if wi < 0 {
		return ""
	}
	var b strings.Builder
	switch {
	case wi < len(want) && gi < len(gotLines):
		fmt.Fprintf(&b, "first difference:\n  doc    %s:%d: %s\n  actual line %d:  %s\n  (masked: doc %q, actual %q)\n",
			file, want[wi].line, want[wi].text, gi+1, gotLines[gi], nw[wi], ng[gi])
	case wi < len(want):
		fmt.Fprintf(&b, "first difference: the output ended before\n  doc    %s:%d: %s\n", file, want[wi].line, want[wi].text)
	default:
		fmt.Fprintf(&b, "first difference: the docs' block ended, the output goes on:\n  actual line %d:  %s\n", gi+1, gotLines[gi])
	}
	b.WriteString("the docs show:\n")
	for _, l := range want {
		fmt.Fprintf(&b, "  %s:%d | %s\n", file, l.line, l.text)
	}
	b.WriteString("the command printed:\n")
	for i, l := range gotLines {
		fmt.Fprintf(&b, "  %4d | %s\n", i+1, strings.TrimRight(l, "\r"))
	}
	return b.String()
}

// sortBy sorts lines and their normalized forms by the latter.
func sortBy[T any](lines []T, norm []string) {
	idx := make([]int, len(norm))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return norm[idx[a]] < norm[idx[b]] })
	l2, n2 := make([]T, len(lines)), make([]string, len(norm))
	for i, j := range idx {
		l2[i], n2[i] = lines[j], norm[j]
	}
	copy(lines, l2)
	copy(norm, n2)
}

// portMap pairs the documented default addresses (`switchyard up`'s
// defaults, cmd/switchyard/up.go) with the stack's actual ones (--any-ports).
type portMap struct{ doc, actual []string }

func newPortMap(info upInfo, xds string) portMap {
	strip := func(s string) string { return strings.TrimPrefix(s, "http://") }
	var p portMap
	add := func(doc, actual string) {
		if actual != "" {
			p.doc = append(p.doc, doc)
			p.actual = append(p.actual, strip(actual))
		}
	}
	add("127.0.0.1:7070", info.API)
	add("127.0.0.1:18000", xds)
	add("127.0.0.1:8080", info.ProxyHTTP)
	add("127.0.0.1:8081", info.ProxyGRPC)
	add("127.0.0.1:9901", info.ProxyAdmin)
	docHTTP := map[string]string{"v1": "8001", "v2": "8002", "v3": "8003", "lite": "8004"}
	docGRPC := map[string]string{"v1": "9001", "v2": "9002", "v3": "9003", "lite": "9004"}
	for _, b := range info.Backends {
		add("127.0.0.1:"+docHTTP[b.Version], b.HTTP)
		add("127.0.0.1:"+docGRPC[b.Version], b.GRPC)
	}
	return p
}

// replace maps each address in from to the same index in to, whole
// addresses only (127.0.0.1:8080 is not a part of 127.0.0.1:80801).
func replaceAddrs(s string, from, to []string) string {
	if len(from) == 0 {
		return s
	}
	alts := make([]string, len(from))
	idx := map[string]string{}
	for i, f := range from {
		alts[i] = regexp.QuoteMeta(f)
		idx[f] = to[i]
	}
	re := regexp.MustCompile(`(` + strings.Join(alts, "|") + `)\b`)
	return re.ReplaceAllStringFunc(s, func(m string) string { return idx[m] })
}

func (p portMap) toActual(s string) string { return replaceAddrs(s, p.doc, p.actual) }
func (p portMap) toDoc(s string) string    { return replaceAddrs(s, p.actual, p.doc) }

// docPath is a replayed file's path from the e2e package directory.
func docPath(name string) string { return filepath.Join("..", filepath.FromSlash(name)) }
