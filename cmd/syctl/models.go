package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/switchyard-dev/switchyard/api"
	"github.com/switchyard-dev/switchyard/cmd/syctl/internal/client"
)

// document is one desired-state document read by apply.
type document struct {
	name  string
	json  []byte // sent to the API
	where string // "recommender.yaml (document 2)"
}

// kindList is a list of documents (what `get models -o yaml` prints).
const kindList = "List"

// readDocuments reads JSON (one object) or YAML (one or more "---"
// separated documents) and returns each Model as JSON for the API. A
// document's status (what `get -o yaml` prints besides the desired state)
// is left out, and a List's items are read as documents, so the output of
// get applies as it is.
func readDocuments(data []byte, source string) ([]document, error) {
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		return nil, fmt.Errorf("%s: empty; want a Model document in YAML or JSON", source)
	}
	var values []any
	if trimmed[0] == '{' {
		dec := json.NewDecoder(bytes.NewReader(trimmed))
		dec.UseNumber()
		var v any
		if err := dec.Decode(&v); err != nil || dec.More() {
			// api's strict decoder says where the JSON breaks.
			if _, derr := api.DecodeJSON(trimmed); derr != nil {
				return nil, fmt.Errorf("%s: %v", source, derr)
			}
			return nil, fmt.Errorf("%s: malformed JSON: %v", source, err)
		}
		values = append(values, v)
	} else {
		dec := yaml.NewDecoder(bytes.NewReader(data))
		for {
			var raw any
			err := dec.Decode(&raw)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("%s: malformed YAML: %v", source, yamlError(data, err))
			}
			if raw == nil {
				continue
			}
			plain, err := api.YAMLValueToJSON(raw)
			if err != nil {
				return nil, fmt.Errorf("%s (document %d): %w", source, len(values)+1, err)
			}
			values = append(values, plain)
		}
	}
	var docs []document
	for i, v := range values {
		where := source
		if len(values) > 1 {
			where = fmt.Sprintf("%s (document %d)", source, i+1)
		}
		obj, _ := v.(map[string]any)
		if obj == nil {
			return nil, fmt.Errorf("%s: want a Model document (a mapping with apiVersion, kind, metadata, spec)", where)
		}
		if obj["kind"] == kindList {
			items, _ := obj["items"].([]any)
			for j, it := range items {
				d, err := modelDocument(it, fmt.Sprintf("%s item %d", where, j+1))
				if err != nil {
					return nil, err
				}
				docs = append(docs, d)
			}
			continue
		}
		d, err := modelDocument(obj, where)
		if err != nil {
			return nil, err
		}
		docs = append(docs, d)
	}
	if len(docs) == 0 {
		return nil, fmt.Errorf("%s: no documents", source)
	}
	return docs, nil
}

// modelDocument is one Model of a file: status dropped, name required.
func modelDocument(v any, where string) (document, error) {
	obj, _ := v.(map[string]any)
	if obj == nil {
		return document{}, fmt.Errorf("%s: want a Model document (a mapping with apiVersion, kind, metadata, spec)", where)
	}
	delete(obj, "status")
	md, _ := obj["metadata"].(map[string]any)
	name, err := docName(md["name"])
	if err != nil {
		return document{}, fmt.Errorf("%s: %w", where, err)
	}
	b, err := json.Marshal(obj)
	if err != nil {
		return document{}, fmt.Errorf("%s: %v", where, err)
	}
	return document{name: name, json: b, where: where}, nil
}

var reYAMLLine = regexp.MustCompile(`^yaml: line \d+: `)

// yamlError names the line where YAML stops parsing. The YAML decoder
// often reports the line before the fault (the start of the construct it
// was in), so the line is found here: the first line after the longest
// prefix of whole lines that still parses.
func yamlError(data []byte, err error) error {
	msg := reYAMLLine.ReplaceAllString(err.Error(), "")
	msg = strings.TrimPrefix(msg, "yaml: ")
	lines := bytes.SplitAfter(data, []byte("\n"))
	good := 0
	for k := len(lines) - 1; k >= 0; k-- {
		if yamlParses(bytes.Join(lines[:k], nil)) {
			good = k
			break
		}
	}
	if good >= len(lines) {
		return errors.New(msg)
	}
	return fmt.Errorf("line %d: %s: %s", good+1, msg, strings.TrimRight(string(lines[good]), "\r\n"))
}

func yamlParses(b []byte) bool {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			return true
		}
		if err != nil {
			return false
		}
	}
}

func docName(v any) (string, error) {
	s, ok := v.(string)
	if !ok || strings.TrimSpace(s) == "" {
		return "", errors.New("metadata.name: required (the virtual model's name, e.g. recommender)")
	}
	return s, nil
}

func cmdApply(a *app, args []string) error {
	fs := flag.NewFlagSet("apply -f FILE|-", flag.ContinueOnError)
	file := fs.String("f", "", "same as --filename")
	fs.StringVar(file, "filename", "", "desired-state `FILE` (YAML or JSON, e.g. the output of get -o yaml; - reads stdin)")
	rev := fs.Int64("revision", 0, "apply only if the model is at this `REVISION` (else exit 4)")
	reason := fs.String("reason", "", "`TEXT` recorded in the audit log")
	wait := waitFlag(fs)
	pos, err := a.parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("unexpected arguments: %s", strings.Join(pos, " "))
	}
	if *file == "" {
		return usagef("-f FILE is required (- for stdin)")
	}
	if err := checkWait(*wait); err != nil {
		return err
	}
	var data []byte
	source := *file
	if *file == "-" {
		source = "stdin"
		data, err = io.ReadAll(io.LimitReader(a.stdin, 16<<20))
	} else {
		data, err = os.ReadFile(*file)
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", source, err)
	}
	docs, err := readDocuments(data, source)
	if err != nil {
		return err
	}
	if *rev > 0 && len(docs) > 1 {
		return usagef("--revision needs a file with one document, %s has %d", source, len(docs))
	}
	ctx, cancel := a.cctx()
	defer cancel()
	var answers []json.RawMessage
	for _, d := range docs {
		res, raw, err := a.applyOne(ctx, d, *rev, *reason, *wait)
		if err != nil {
			return err
		}
		if a.structured() {
			if raw != nil {
				answers = append(answers, raw)
			}
			continue
		}
		fmt.Fprintf(a.stdout, "model/%s %s (revision %d)\n", d.name, res.verb, res.revision)
		if res.proxies != nil {
			fmt.Fprintln(a.stdout, ackLine(res.proxies, res.took))
		}
	}
	if a.structured() {
		if len(answers) == 1 {
			return a.printRaw(answers[0])
		}
		return a.printValue(map[string]any{"items": answers})
	}
	return nil
}

// defaultAckWait is how long a write waits for the proxies to apply it.
const defaultAckWait = 10 * time.Second

// waitFlag registers --wait.
func waitFlag(fs *flag.FlagSet) *time.Duration {
	return fs.Duration("wait", defaultAckWait, "wait up to `DURATION` for the connected proxies to apply the change and say how many did (0: don't wait; at most 60s)")
}

func checkWait(d time.Duration) error {
	if d < 0 || d > 60*time.Second {
		return usagef("--wait: want 0..60s, got %s", d)
	}
	return nil
}

type applyResult struct {
	verb     string
	revision int64
	proxies  *api.AppliedResult
	took     time.Duration
}

// applyOne creates or replaces one model: If-None-Match: * when it does
// not exist yet, If-Match with the revision it read (or --revision) when
// it does, so a concurrent change is never overwritten unseen (exit 4).
// An unchanged document writes nothing (and waits for nothing).
func (a *app) applyOne(ctx context.Context, d document, rev int64, reason string, wait time.Duration) (applyResult, []byte, error) {
	cur, raw, err := a.api.GetModel(ctx, d.name)
	exists := err == nil
	if err != nil && !client.IsStatus(err, 404) {
		return applyResult{}, nil, err
	}
	pre := client.Precondition{Reason: reason}
	switch {
	case rev > 0:
		pre.IfRevision = rev
	case exists:
		pre.IfRevision = cur.Revision
	default:
		pre.MustNotExist = true
	}
	if exists && (rev == 0 || rev == cur.Revision) && sameModel(d.json, cur.Model) {
		return applyResult{verb: "unchanged", revision: cur.Revision}, raw, nil
	}
	start := time.Now()
	res, raw, err := a.api.PutModel(ctx, d.name, d.json, wait, pre)
	if err != nil {
		var ae *client.APIError
		if errors.As(err, &ae) && ae.Status == 409 && len(ae.Fields) == 0 {
			ae.Message = fmt.Sprintf("model %q changed while applying %s: %s", d.name, d.where, ae.Message)
		}
		return applyResult{}, nil, err
	}
	verb := "configured"
	switch {
	case res.Unchanged:
		verb = "unchanged" // e.g. the split from before a running canary: the canary's weights stay
	case res.CreateRevision == res.Revision:
		verb = "created"
	}
	return applyResult{verb: verb, revision: res.Revision, proxies: res.Proxies, took: time.Since(start)}, raw, nil
}

// sameModel reports whether doc, with defaults applied, is exactly the
// stored model (then apply writes nothing). A document that does not
// decode or validate locally is never "the same": the API says why.
func sameModel(doc []byte, stored api.Model) bool {
	m, err := api.DecodeJSON(doc)
	if err != nil || api.Normalize(&m) != nil {
		return false
	}
	a, err1 := json.Marshal(m)
	b, err2 := json.Marshal(stored)
	return err1 == nil && err2 == nil && bytes.Equal(a, b)
}

// modelResource parses the resource arguments of get, describe and delete:
// "model NAME", "models NAME", "mo NAME" or "model/NAME" (TYPE/NAME, as
// these commands print it). name is "" for "models" alone (a list).
func modelResource(pos []string) (name string, err error) {
	if len(pos) == 0 {
		return "", usagef("what: model NAME (or model/NAME)")
	}
	kind, name, slash := strings.Cut(pos[0], "/")
	switch kind {
	case "models", "model", "mo":
	default:
		return "", usagef("unknown resource type %q (want model NAME or model/NAME)", kind)
	}
	switch {
	case slash && name == "":
		return "", usagef("%q: want model/NAME", pos[0])
	case slash && len(pos) > 1:
		return "", usagef("unexpected arguments: %s", strings.Join(pos[1:], " "))
	case slash:
		return name, nil
	case len(pos) > 2:
		return "", usagef("unexpected arguments: %s", strings.Join(pos[2:], " "))
	case len(pos) == 2:
		return pos[1], nil
	}
	return "", nil
}

// modelDoc is a model as get -o json|yaml prints it: the desired-state
// document apply takes back, and status apart (as kubectl does; apply
// leaves status out).
type modelDoc struct {
	api.Model
	Status modelStatus `json:"status"`
}

type modelStatus struct {
	Revision       int64                     `json:"revision"`
	CreateRevision int64                     `json:"createRevision"`
	Time           time.Time                 `json:"time"`
	Subject        string                    `json:"subject,omitempty"`
	FailedVersions map[string]api.FailedMark `json:"failedVersions,omitempty"`
}

func toModelDoc(it api.ModelResponse) modelDoc {
	return modelDoc{Model: it.Model, Status: modelStatus{Revision: it.Revision, CreateRevision: it.CreateRevision,
		Time: it.Time, Subject: it.Subject, FailedVersions: it.FailedVersions}}
}

// modelListDoc is get models -o json|yaml; apply -f takes it back.
type modelListDoc struct {
	APIVersion string     `json:"apiVersion"`
	Kind       string     `json:"kind"`
	Items      []modelDoc `json:"items"`
}

func cmdGet(a *app, args []string) error {
	fs := flag.NewFlagSet("get models | get model NAME | get model/NAME", flag.ContinueOnError)
	watch := watchFlags(fs)
	pos, err := a.parse(fs, args)
	if err != nil {
		return err
	}
	name, err := modelResource(pos)
	if err != nil {
		return err
	}
	if name == "" && pos[0] != "models" && pos[0] != "mo" {
		return usagef("get model needs a NAME (get models lists them)")
	}
	return a.watch(watch, func(ctx context.Context) error { return a.getOnce(ctx, name) })
}

func (a *app) getOnce(ctx context.Context, name string) error {
	var items []api.ModelResponse
	if name == "" {
		list, _, err := a.api.ListModels(ctx)
		if err != nil {
			return err
		}
		items = list.Items
	} else {
		it, _, err := a.api.GetModel(ctx, name)
		if err != nil {
			return err
		}
		items = []api.ModelResponse{it}
	}
	if a.structured() {
		if name != "" {
			return a.printValue(toModelDoc(items[0]))
		}
		l := modelListDoc{APIVersion: api.APIVersion, Kind: kindList, Items: []modelDoc{}}
		for _, it := range items {
			l.Items = append(l.Items, toModelDoc(it))
		}
		return a.printValue(l)
	}
	if len(items) == 0 {
		fmt.Fprintln(a.stderr, "no models")
		return nil
	}
	now := time.Now()
	header := []string{"NAME", "VERSIONS", "WEIGHTS", "CANARY", "SHADOW", "REVISION", "AGE"}
	if a.output == "wide" {
		header = append(header, "UPDATED", "BY", "STICKY", "FALLBACK", "ENDPOINTS")
	}
	t := newTable(a.stdout, header...)
	for _, it := range items {
		m := &it.Model
		canary, shadow := "", ""
		if c := m.Spec.Canary; c != nil {
			canary = c.Version
		}
		if s := m.Spec.Shadow; s != nil {
			shadow = fmt.Sprintf("%s %s%%", s.Version, fmtFloat(s.Percent, -1))
		}
		row := []any{m.Metadata.Name, strings.Join(m.VersionNames(), ","), weightsString(m), canary, shadow, it.Revision, a.createdAge(ctx, it, now)}
		if a.output == "wide" {
			fallback := ""
			if f := m.Spec.Fallback; f != nil {
				chain := slices.Clone(f.Chain)
				for i, c := range chain {
					if c == api.FallbackBackup && f.Backup != "" {
						chain[i] = c + "(" + f.Backup + ")"
					}
				}
				fallback = strings.Join(chain, ",")
			}
			var eps []string
			for _, v := range m.Spec.Versions {
				eps = append(eps, v.Name+"="+strings.Join(v.Endpoints, ","))
			}
			row = append(row, age(now, it.Time), it.Subject, m.Spec.Traffic.StickyHeader, fallback, strings.Join(eps, " "))
		}
		t.row(row...)
	}
	return t.flush()
}

// createdAge is how long ago the model was created (kubectl's AGE), from
// the time of its creating revision in its history. When the history no
// longer holds it (100 revisions are kept), the oldest kept revision's age
// is shown with ">".
func (a *app) createdAge(ctx context.Context, it api.ModelResponse, now time.Time) string {
	h, _, err := a.api.History(ctx, it.Model.Metadata.Name, 0)
	if err != nil || len(h.Items) == 0 {
		return ""
	}
	oldest := h.Items[len(h.Items)-1]
	for _, r := range h.Items {
		if r.Revision == it.CreateRevision {
			return age(now, r.Time)
		}
		if r.Revision < it.CreateRevision {
			break
		}
		oldest = r
	}
	return ">" + age(now, oldest.Time)
}

func cmdDelete(a *app, args []string) error {
	fs := flag.NewFlagSet("delete model NAME | delete model/NAME", flag.ContinueOnError)
	rev := fs.Int64("revision", 0, "delete only if the model is at this `REVISION` (else exit 4)")
	reason := fs.String("reason", "", "`TEXT` recorded in the audit log")
	pos, err := a.parse(fs, args)
	if err != nil {
		return err
	}
	name, err := modelResource(pos)
	if err != nil {
		return err
	}
	if name == "" {
		return usagef("want: delete model NAME")
	}
	ctx, cancel := a.cctx()
	defer cancel()
	r, raw, err := a.api.DeleteModel(ctx, name, client.Precondition{IfRevision: *rev, Reason: *reason})
	if err != nil {
		return err
	}
	if a.structured() {
		return a.printRaw(raw)
	}
	fmt.Fprintf(a.stdout, "model/%s deleted (revision %d)\n", name, r)
	return nil
}
