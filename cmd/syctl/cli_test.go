package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/switchyard-dev/switchyard/proxy"
)

// startProxy connects a real proxy to cp over xDS.
func startProxy(t *testing.T, cpXDS, node string) *proxy.Proxy {
	t.Helper()
	p, err := proxy.New(proxy.Config{HTTPAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", XDSAddr: cpXDS, NodeID: node, StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// weights set, apply and shadow set wait for the proxies' ACKs by default
// and say so; --wait 0 does not wait; an unchanged document writes and
// waits for nothing (issue 19).
func TestWritesWaitForTheProxies(t *testing.T) {
	cp := startCP(t, false)
	r := mustOK(t, syctl(t, cp, nil, "", "apply", "-f", exampleJSON))
	startProxy(t, cp.XDSAddr(), "proxy-a")
	waitProxyApplied(t, cp, revisionOf(t, r.stdout))

	applied := regexp.MustCompile(`\napplied on 1/1 proxies in \d+ ms\n$`)
	r = mustOK(t, syctl(t, cp, nil, "", "weights", "set", "recommender", "v1=50", "v2=50"))
	if !regexp.MustCompile(`^model/recommender weights v1=50 v2=50 \(revision \d+\)\napplied on 1/1 proxies in \d+ ms\n$`).MatchString(r.stdout) {
		t.Fatalf("weights set:\n%s", r.stdout)
	}
	r = mustOK(t, syctl(t, cp, nil, "", "weights", "set", "recommender", "v1=60", "v2=40", "--wait=0"))
	if strings.Contains(r.stdout, "applied on") {
		t.Fatalf("weights set --wait=0 waited:\n%s", r.stdout)
	}
	r = mustOK(t, syctl(t, cp, nil, "", "apply", "-f", exampleJSON))
	if !strings.HasPrefix(r.stdout, "model/recommender configured (revision ") || !applied.MatchString(r.stdout) {
		t.Fatalf("apply:\n%s", r.stdout)
	}
	r = mustOK(t, syctl(t, cp, nil, "", "apply", "-f", exampleJSON))
	if !regexp.MustCompile(`^model/recommender unchanged \(revision \d+\)\n$`).MatchString(r.stdout) {
		t.Fatalf("unchanged apply:\n%s", r.stdout)
	}
	r = mustOK(t, syctl(t, cp, nil, "", "shadow", "set", "recommender", "--version", "v2", "--percent", "5"))
	if !applied.MatchString(r.stdout) {
		t.Fatalf("shadow set:\n%s", r.stdout)
	}
	wantCode(t, syctl(t, cp, nil, "", "weights", "set", "recommender", "v1=1", "--wait", "2m"), exitUsage, "--wait: want 0..60s")
	if r := mustOK(t, syctl(t, cp, nil, "", "proxies", "-o", "wide")); !strings.Contains(r.stdout, "STREAM") || !strings.Contains(r.stdout, "proxy-a") {
		t.Fatalf("proxies -o wide:\n%s", r.stdout)
	}
}

// What get prints, apply takes back: one model, a list, YAML and JSON;
// TYPE/NAME is accepted wherever it is printed (issue 19).
func TestGetApplyRoundTripAndTypeName(t *testing.T) {
	cp := startCP(t, false)
	mustOK(t, syctl(t, cp, nil, "", "apply", "-f", exampleYAML))
	mustOK(t, syctl(t, cp, nil, "kind: Model\nmetadata: {name: ranker}\nspec:\n  versions: [{name: a, endpoints: [\"127.0.0.1:8001\"]}]\n", "apply", "-f", "-"))
	for _, args := range [][]string{
		{"get", "model", "recommender", "-o", "yaml"},
		{"get", "model/recommender", "-o", "json"},
		{"get", "models", "-o", "yaml"},
		{"get", "models", "-o", "json"},
	} {
		out := mustOK(t, syctl(t, cp, nil, "", args...)).stdout
		if !strings.Contains(out, "status") {
			t.Fatalf("%v has no status:\n%s", args, out)
		}
		r := mustOK(t, syctl(t, cp, nil, out, "apply", "-f", "-"))
		if strings.Contains(r.stdout, "configured") || strings.Contains(r.stdout, "created") || !strings.Contains(r.stdout, "model/recommender unchanged") {
			t.Fatalf("%v | apply -f -:\n%s", args, r.stdout)
		}
	}
	// An edit of the printed document applies.
	out := mustOK(t, syctl(t, cp, nil, "", "get", "model", "recommender", "-o", "yaml")).stdout
	edited := strings.Replace(out, "v1: 80", "v1: 70", 1)
	if edited == out {
		t.Fatalf("no v1: 80 in\n%s", out)
	}
	r := mustOK(t, syctl(t, cp, nil, edited, "apply", "-f", "-"))
	if !strings.HasPrefix(r.stdout, "model/recommender configured") {
		t.Fatalf("edited apply:\n%s", r.stdout)
	}
	if rec, _ := cp.Store().Get(context.Background(), "recommender"); rec.Model.Spec.Traffic.Weights["v1"] != 70 {
		t.Fatalf("stored weights %v", rec.Model.Spec.Traffic.Weights)
	}

	// TYPE/NAME.
	if r := mustOK(t, syctl(t, cp, nil, "", "get", "model/recommender")); !strings.Contains(r.stdout, "recommender") {
		t.Fatalf("get model/recommender:\n%s", r.stdout)
	}
	if r := mustOK(t, syctl(t, cp, nil, "", "describe", "model/recommender")); !strings.Contains(r.stdout, "Name:        recommender") {
		t.Fatalf("describe model/recommender:\n%s", r.stdout)
	}
	mustOK(t, syctl(t, cp, nil, "", "delete", "model/ranker"))
	wantCode(t, syctl(t, cp, nil, "", "get", "models/ranker"), exitNotFound)
	wantCode(t, syctl(t, cp, nil, "", "get", "model/"), exitUsage, "want model/NAME")
	wantCode(t, syctl(t, cp, nil, "", "get", "model"), exitUsage, "needs a NAME")
	wantCode(t, syctl(t, cp, nil, "", "get", "pods/x"), exitUsage, `unknown resource type "pods"`)

	// -o wide adds columns; AGE is there in both.
	table := mustOK(t, syctl(t, cp, nil, "", "get", "models")).stdout
	wide := mustOK(t, syctl(t, cp, nil, "", "get", "models", "-o", "wide")).stdout
	if !strings.Contains(table, " AGE") || strings.Contains(table, "STICKY") ||
		!strings.Contains(wide, "UPDATED") || !strings.Contains(wide, "STICKY") || !strings.Contains(wide, "v1=127.0.0.1:8001") {
		t.Fatalf("table:\n%s\nwide:\n%s", table, wide)
	}
}

// Help shows GNU flags with their defaults, parse errors name the flag as
// typed, config-file and YAML errors name the line (issue 19).
func TestHelpAndParseErrors(t *testing.T) {
	cp := startCP(t, false)
	r := mustOK(t, syctl(t, cp, nil, "", "--help"))
	for _, want := range []string{"  -o, --output FORMAT ", "(default table)", "    --timeout DURATION ", "(default 2m0s)", "--server URL"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("syctl --help lacks %q:\n%s", want, r.stdout)
		}
	}
	if regexp.MustCompile(`(?m)^\s+-output|^\s+-server`).MatchString(r.stdout) {
		t.Errorf("single-dash long flags in help:\n%s", r.stdout)
	}
	r = mustOK(t, syctl(t, cp, nil, "", "weights", "--help"))
	for _, want := range []string{"usage: syctl weights set", "--reason TEXT", "--wait DURATION", "(default 10s)", "--force ", "-o, --output FORMAT"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("weights --help lacks %q:\n%s", want, r.stdout)
		}
	}
	if r := mustOK(t, syctl(t, cp, nil, "", "canary", "reset", "-h")); !strings.Contains(r.stdout, "reset") {
		t.Errorf("canary -h omits reset:\n%s", r.stdout)
	}
	if r := mustOK(t, syctl(t, cp, nil, "", "apply", "--help")); !strings.Contains(r.stdout, "-f, --filename FILE") {
		t.Errorf("apply --help:\n%s", r.stdout)
	}
	wantCode(t, syctl(t, cp, nil, "", "weights", "set", "m", "v1=1", "--revision", "abc"), exitUsage, `invalid value "abc" for --revision: not a number`)
	wantCode(t, syctl(t, cp, nil, "", "apply", "-f"), exitUsage, "flag -f needs a value")
	wantCode(t, syctl(t, cp, nil, "", "--bogus", "get", "models"), exitUsage, "unknown flag --bogus")
	wantCode(t, syctl(t, cp, nil, "", "rollback", "m", "--to", "0"), exitUsage, "--to: want a revision number >= 1")

	bad := filepath.Join(t.TempDir(), "config.yaml")
	os.WriteFile(bad, []byte("server: http://127.0.0.1:7070\nbogus: 1\n"), 0o600)
	r = syctl(t, cp, nil, "", "--config", bad, "get", "models")
	wantCode(t, r, exitUsage, `line 2: unknown key "bogus" (allowed keys: server, token, ca, cert, key)`)
	if strings.Contains(r.stderr, "main.") || strings.Contains(r.stderr, "fileConfig") {
		t.Errorf("a Go type in the config error:\n%s", r.stderr)
	}
	r = syctl(t, cp, nil, "kind: Model\nmetadata:\n  name: x\n spec: {}\n", "apply", "-f", "-")
	wantCode(t, r, exitError, "stdin: malformed YAML: line 4: ")
}

func TestYAMLErrorNamesTheLine(t *testing.T) {
	tests := map[string]struct {
		doc  string
		line string
	}{
		"unclosed flow sequence": {"a: 1\nb: 2\nc: [1, 2\nd: 4\n", "line 3:"},
		"bad indentation":        {"a: 1\nb:\n  c: 1\n d: 2\n", "line 4:"},
		"mapping in a value":     {"a: 1\nb: x: y\n", "line 2:"},
		"tab":                    {"a: 1\nb: 2\n\tc: 3\n", "line 3:"},
		"sequence in a mapping":  {"a: 1\n- b\n", "line 2:"},
		"second document":        {"a: 1\n---\nb: 1\nc: [\n", "line 4:"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := readDocuments([]byte(tc.doc), "f.yaml")
			if err == nil || !strings.Contains(err.Error(), "f.yaml: malformed YAML: "+tc.line) {
				t.Fatalf("error %v, want %s", err, tc.line)
			}
		})
	}
}

// version exits 1 when it cannot read the server's version.
func TestVersionUnreachable(t *testing.T) {
	r := syctl(t, nil, map[string]string{"SYCTL_SERVER": "http://127.0.0.1:1"}, "", "version")
	if r.code != exitError || !strings.HasPrefix(r.stdout, "syctl ") || !strings.Contains(r.stdout, "server http://127.0.0.1:1: cannot reach") {
		t.Fatalf("exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := syctl(t, nil, map[string]string{"SYCTL_SERVER": "http://127.0.0.1:1"}, "", "version", "-o", "json"); r.code != exitError || !strings.Contains(r.stdout, `"reachable": false`) {
		t.Fatalf("version -o json: exit %d\n%s", r.code, r.stdout)
	}
}

const canaryDoc3 = `{"metadata": {"name": "rec"}, "spec": {
  "versions": [{"name": "v1", "endpoints": ["127.0.0.1:1"]}, {"name": "v2", "endpoints": ["127.0.0.1:2"]}, {"name": "v3", "endpoints": ["127.0.0.1:3"]}],
  "traffic": {"weights": {"v1": 100}},
  "canary": {"version": "VERSION", "stepDuration": "1h"}}}`

// canary status and describe are trees; errors and reasons name syctl
// commands, not API requests; canary reset clears the version it names
// and says which stay marked (issue 19).
func TestCanaryTreesResetAndCommands(t *testing.T) {
	cp, cc := startCanaryCP(t)
	ctx := context.Background()
	doc := func(v string) string { return strings.Replace(canaryDoc3, "VERSION", v, 1) }
	mustOK(t, syctl(t, cp, nil, doc("v2"), "apply", "-f", "-"))
	cc.TickOnce(ctx)

	r := mustOK(t, syctl(t, cp, nil, "", "canary", "status", "rec"))
	for _, want := range []string{"Canary:      v2 (baseline v1)", "Phase:       progressing, step 1 of 4 (v2 at 20%)", "Steps:\n├── ● 20%  (current)\n├── ○ 50%\n", "└── ○ 100%\n", "History:\n└── ", " start ", "Weights:     v1=80 v2=20"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("canary status lacks %q:\n%s", want, r.stdout)
		}
	}
	r = mustOK(t, syctl(t, cp, nil, "", "describe", "model", "rec"))
	for _, want := range []string{"├── gates: error rate ≤ ", "├── phase: progressing, step 1 of 4 (v2 at 20%)", "└── details: syctl canary status rec"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("describe lacks %q:\n%s", want, r.stdout)
		}
	}
	// --watch, bounded by --count.
	r = mustOK(t, syctl(t, cp, nil, "", "canary", "status", "rec", "--watch", "--count", "2", "--interval", "10ms"))
	if strings.Count(r.stdout, "Name:        rec") != 2 || strings.Count(r.stdout, "\n--- ") != 1 {
		t.Fatalf("canary status --watch --count 2:\n%s", r.stdout)
	}
	r = mustOK(t, syctl(t, cp, nil, "", "get", "models", "-w", "--count", "2", "--interval", "10ms"))
	if strings.Count(r.stdout, "NAME ") != 2 {
		t.Fatalf("get -w --count 2:\n%s", r.stdout)
	}
	r = mustOK(t, syctl(t, cp, nil, "", "describe", "model", "rec", "--watch", "--count", "2", "--interval", "10ms"))
	if strings.Count(r.stdout, "Name:        rec") != 2 {
		t.Fatalf("describe --watch --count 2:\n%s", r.stdout)
	}

	// v2 and v3 both fail their canaries.
	mustOK(t, syctl(t, cp, nil, "", "canary", "abort", "rec", "--wait", "0"))
	// A document changed after the run ended: describe says the status is
	// the previous run's until the controller's next tick.
	mustOK(t, syctl(t, cp, nil, strings.Replace(doc("v2"), `"1h"`, `"2h"`, 1), "apply", "-f", "-"))
	if r := mustOK(t, syctl(t, cp, nil, "", "describe", "model/rec")); !strings.Contains(r.stdout, "├── phase: rolled_back, step 1 of 4 (v2 at 20%) (the previous run, ended ") {
		t.Errorf("describe after a change to a finished canary:\n%s", r.stdout)
	}
	mustOK(t, syctl(t, cp, nil, doc("v3"), "apply", "-f", "-"))
	cc.TickOnce(ctx)
	mustOK(t, syctl(t, cp, nil, "", "canary", "abort", "rec", "--wait", "0"))

	// Starting v2 again is refused with the command that fixes it, never
	// the API path.
	r = syctl(t, cp, nil, "", "canary", "start", "rec", "--version", "v2")
	wantCode(t, r, exitConflict, "`syctl canary reset rec --version v2` to ramp it again", "\n  syctl canary reset rec --version v2\n")
	if strings.Contains(r.stderr, "POST /v1") {
		t.Errorf("the error names an API request:\n%s", r.stderr)
	}
	// The status says the same for the spec's version.
	r = mustOK(t, syctl(t, cp, nil, "", "canary", "status", "rec"))
	if !strings.Contains(r.stdout, "syctl canary reset rec --version v3") || strings.Contains(r.stdout, "POST ") || !strings.Contains(r.stdout, "Failed versions:\n├── v2: ") {
		t.Errorf("canary status after two failures:\n%s", r.stdout)
	}

	r = mustOK(t, syctl(t, cp, nil, "", "canary", "reset", "rec", "--version", "v2", "--wait", "0"))
	if !regexp.MustCompile(`^model/rec canary reset: v2 may be ramped again \(its failed mark cleared; revision \d+\)\n  v3 is still marked failed \(.+\): syctl canary reset rec --version v3\n$`).MatchString(r.stdout) {
		t.Fatalf("canary reset:\n%s", r.stdout)
	}
	if strings.Contains(r.stdout, "failed marks cleared") {
		t.Fatalf("reset claims every mark cleared:\n%s", r.stdout)
	}
	mustOK(t, syctl(t, cp, nil, "", "canary", "start", "rec", "--version", "v2", "--wait", "0"))
}

func TestFlagError(t *testing.T) {
	tests := map[string]string{
		"flag provided but not defined: -bogus":                                       "unknown flag --bogus",
		"flag provided but not defined: -x":                                           "unknown flag -x",
		"flag needs an argument: -wait":                                               "flag --wait needs a value",
		`invalid value "x" for flag -wait: parse error`:                               `invalid value "x" for --wait: not a number`,
		`invalid boolean value "maybe" for -force: parse error`:                       `invalid value "maybe" for --force: want true or false`,
		`invalid value "99999999999999999999" for flag -revision: value out of range`: `invalid value "99999999999999999999" for --revision: out of range`,
	}
	for in, want := range tests {
		if got := flagError(errors.New(in)).Error(); got != want {
			t.Errorf("flagError(%q) = %q, want %q", in, got, want)
		}
	}
}

// canary status --until PHASE waits for the phase and prints the status
// once; the other final phase, or --timeout, is exit 1 naming it (the
// docs replay waits with it instead of sleeping).
func TestCanaryStatusUntil(t *testing.T) {
	cp, cc := startCanaryCP(t)
	ctx := context.Background()
	mustOK(t, syctl(t, cp, nil, strings.Replace(canaryDoc3, "VERSION", "v2", 1), "apply", "-f", "-"))
	cc.TickOnce(ctx)

	r := mustOK(t, syctl(t, cp, nil, "", "canary", "status", "rec", "--until", "progressing"))
	if strings.Count(r.stdout, "Name:        rec") != 1 || !strings.Contains(r.stdout, "Phase:       progressing, step 1 of 4") {
		t.Fatalf("--until progressing:\n%s", r.stdout)
	}
	r = syctl(t, cp, nil, "", "canary", "status", "rec", "--until", "promoted", "--interval", "10ms", "--timeout", "300ms")
	wantCode(t, r, exitError, "model/rec: the canary did not reach promoted within --timeout 300ms (last phase progressing)")
	if r.stdout != "" {
		t.Errorf("a status printed before the phase was reached:\n%s", r.stdout)
	}

	mustOK(t, syctl(t, cp, nil, "", "canary", "abort", "rec", "--wait", "0"))
	r = syctl(t, cp, nil, "", "canary", "status", "rec", "--until", "promoted", "--interval", "10ms")
	wantCode(t, r, exitError, "model/rec: the canary of v2 ended rolled_back, not promoted")
	if !strings.Contains(r.stdout, "Phase:       rolled_back") {
		t.Errorf("the final status is not printed:\n%s", r.stdout)
	}
	r = mustOK(t, syctl(t, cp, nil, "", "canary", "status", "rec", "--until", "rolled_back", "-o", "json"))
	if !strings.Contains(r.stdout, `"phase": "rolled_back"`) {
		t.Errorf("--until -o json:\n%s", r.stdout)
	}

	for _, args := range [][]string{
		{"canary", "status", "rec", "--until", "done"},
		{"canary", "status", "rec", "--until", "promoted", "--watch"},
		{"canary", "abort", "rec", "--until", "promoted"},
	} {
		if r := syctl(t, cp, nil, "", args...); r.code != exitUsage || !strings.Contains(r.stderr, "--until") {
			t.Errorf("syctl %s: exit %d, want %d naming --until\n%s", strings.Join(args, " "), r.code, exitUsage, r.stderr)
		}
	}
}

// shadow report --min-records N waits (bounded by --timeout) for the
// asynchronous mirror's records; with none coming it exits 1 saying how
// many it held. (The docs replay covers records arriving.)
func TestShadowReportMinRecords(t *testing.T) {
	cp, _ := startCanaryCP(t)
	doc := `{"metadata": {"name": "rec"}, "spec": {
  "versions": [{"name": "v1", "endpoints": ["127.0.0.1:1"]}, {"name": "v2", "endpoints": ["127.0.0.1:2"]}],
  "traffic": {"weights": {"v1": 100}}, "shadow": {"version": "v2", "percent": 10}}}`
	mustOK(t, syctl(t, cp, nil, doc, "apply", "-f", "-", "--wait", "0"))
	if r := mustOK(t, syctl(t, cp, nil, "", "shadow", "report", "rec")); !strings.Contains(r.stdout, "shadow vs primary  0") {
		t.Fatalf("shadow report:\n%s", r.stdout)
	}
	r := syctl(t, cp, nil, "", "shadow", "report", "rec", "--min-records", "1", "--timeout", "1500ms")
	wantCode(t, r, exitError, "model/rec: the shadow report held 0 records, not the 1 asked for, within --timeout 1.5s")
	if r.stdout != "" {
		t.Errorf("a report printed before it held the records:\n%s", r.stdout)
	}
	r = syctl(t, cp, nil, "", "shadow", "report", "rec", "--min-records", "-1")
	wantCode(t, r, exitUsage, "--min-records")
	r = syctl(t, cp, nil, "", "shadow", "off", "rec", "--min-records", "5")
	wantCode(t, r, exitUsage, "--min-records goes with shadow report")
}
