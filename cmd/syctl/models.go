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
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/switchyard-dev/switchyard/cmd/syctl/internal/client"
	"github.com/switchyard-dev/switchyard/routing"
)

// document is one desired-state document read by apply.
type document struct {
	name  string
	json  []byte // sent to the API as is
	where string // "recommender.yaml (document 2)"
}

// readDocuments reads JSON (one object) or YAML (one or more "---"
// separated documents) and returns each as JSON for the API.
func readDocuments(data []byte, source string) ([]document, error) {
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		return nil, fmt.Errorf("%s: empty; want a Model document in YAML or JSON", source)
	}
	if trimmed[0] == '{' {
		var head struct {
			Metadata struct {
				Name any `json:"name"`
			} `json:"metadata"`
		}
		if err := json.Unmarshal(trimmed, &head); err != nil {
			// routing's strict decoder says where the JSON breaks.
			if _, derr := routing.DecodeJSON(trimmed); derr != nil {
				return nil, fmt.Errorf("%s: %v", source, derr)
			}
			return nil, fmt.Errorf("%s: %v", source, err)
		}
		name, err := docName(head.Metadata.Name)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", source, err)
		}
		return []document{{name: name, json: trimmed, where: source}}, nil
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var docs []document
	for i := 1; ; i++ {
		var raw any
		err := dec.Decode(&raw)
		if errors.Is(err, io.EOF) {
			break
		}
		where := source
		if i > 1 || len(docs) > 0 {
			where = fmt.Sprintf("%s (document %d)", source, i)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: malformed YAML: %v", where, err)
		}
		if raw == nil {
			continue
		}
		plain, err := routing.YAMLValueToJSON(raw)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		b, err := json.Marshal(plain)
		if err != nil {
			return nil, fmt.Errorf("%s: %v", where, err)
		}
		obj, _ := plain.(map[string]any)
		if obj == nil {
			return nil, fmt.Errorf("%s: want a Model document (a mapping with apiVersion, kind, metadata, spec)", where)
		}
		md, _ := obj["metadata"].(map[string]any)
		name, err := docName(md["name"])
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		docs = append(docs, document{name: name, json: b, where: where})
	}
	if len(docs) == 0 {
		return nil, fmt.Errorf("%s: no documents", source)
	}
	if len(docs) == 1 {
		docs[0].where = source
	}
	return docs, nil
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
	file := fs.String("f", "", "desired-state `FILE` (YAML or JSON; - reads stdin)")
	fs.StringVar(file, "filename", "", "same as -f")
	rev := fs.Int64("revision", 0, "apply only if the model is at this `REVISION` (else exit 4)")
	reason := fs.String("reason", "", "reason recorded in the audit log")
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
		res, raw, err := a.applyOne(ctx, d, *rev, *reason)
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
	}
	if a.structured() {
		if len(answers) == 1 {
			return a.printRaw(answers[0])
		}
		return a.printValue(map[string]any{"items": answers})
	}
	return nil
}

type applyResult struct {
	verb     string
	revision int64
}

// applyOne creates or replaces one model: If-None-Match: * when it does
// not exist yet, If-Match with the revision it read (or --revision) when
// it does, so a concurrent change is never overwritten unseen (exit 4).
func (a *app) applyOne(ctx context.Context, d document, rev int64, reason string) (applyResult, []byte, error) {
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
		return applyResult{"unchanged", cur.Revision}, raw, nil
	}
	res, raw, err := a.api.PutModel(ctx, d.name, d.json, pre)
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
	return applyResult{verb, res.Revision}, raw, nil
}

// sameModel reports whether doc, with defaults applied, is exactly the
// stored model (then apply writes nothing). A document that does not
// decode or validate locally is never "the same": the API says why.
func sameModel(doc []byte, stored routing.Model) bool {
	m, err := routing.DecodeJSON(doc)
	if err != nil || routing.Normalize(&m) != nil {
		return false
	}
	a, err1 := json.Marshal(m)
	b, err2 := json.Marshal(stored)
	return err1 == nil && err2 == nil && bytes.Equal(a, b)
}

func cmdGet(a *app, args []string) error {
	fs := flag.NewFlagSet("get models | get model NAME", flag.ContinueOnError)
	pos, err := a.parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usagef("what to get: models, or model NAME")
	}
	switch pos[0] {
	case "models", "model", "mo":
	default:
		return usagef("unknown resource %q (want models or model NAME)", pos[0])
	}
	ctx, cancel := a.cctx()
	defer cancel()
	now := time.Now()
	switch len(pos) {
	case 1:
		list, raw, err := a.api.ListModels(ctx)
		if err != nil {
			return err
		}
		if a.structured() {
			return a.printRaw(raw)
		}
		if len(list.Items) == 0 {
			fmt.Fprintln(a.stderr, "no models")
			return nil
		}
		t := newTable(a.stdout, "NAME", "VERSIONS", "WEIGHTS", "CANARY", "SHADOW", "REVISION", "AGE")
		for _, it := range list.Items {
			modelRow(t, it, now)
		}
		return t.flush()
	case 2:
		it, raw, err := a.api.GetModel(ctx, pos[1])
		if err != nil {
			return err
		}
		if a.structured() {
			return a.printRaw(raw)
		}
		t := newTable(a.stdout, "NAME", "VERSIONS", "WEIGHTS", "CANARY", "SHADOW", "REVISION", "AGE")
		modelRow(t, it, now)
		return t.flush()
	}
	return usagef("unexpected arguments: %s", strings.Join(pos[2:], " "))
}

func modelRow(t *table, it client.ModelResponse, now time.Time) {
	m := &it.Model
	canary, shadow := "", ""
	if c := m.Spec.Canary; c != nil {
		canary = c.Version
	}
	if s := m.Spec.Shadow; s != nil {
		shadow = fmt.Sprintf("%s %s%%", s.Version, fmtFloat(s.Percent, -1))
	}
	t.row(m.Metadata.Name, strings.Join(m.VersionNames(), ","), weightsString(m), canary, shadow, it.Revision, age(now, it.Time))
}

func cmdDelete(a *app, args []string) error {
	fs := flag.NewFlagSet("delete model NAME", flag.ContinueOnError)
	rev := fs.Int64("revision", 0, "delete only if the model is at this `REVISION` (else exit 4)")
	reason := fs.String("reason", "", "reason recorded in the audit log")
	pos, err := a.parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 || (pos[0] != "model" && pos[0] != "models") {
		return usagef("want: delete model NAME")
	}
	ctx, cancel := a.cctx()
	defer cancel()
	r, raw, err := a.api.DeleteModel(ctx, pos[1], client.Precondition{IfRevision: *rev, Reason: *reason})
	if err != nil {
		return err
	}
	if a.structured() {
		return a.printRaw(raw)
	}
	fmt.Fprintf(a.stdout, "model/%s deleted (revision %d)\n", pos[1], r)
	return nil
}
