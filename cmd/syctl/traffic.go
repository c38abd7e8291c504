package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"runtime"
	"runtime/debug"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/switchyard-dev/switchyard/api"
	"github.com/switchyard-dev/switchyard/cmd/syctl/internal/client"
	"github.com/switchyard-dev/switchyard/shadow"
)

func cmdWeights(a *app, args []string) error {
	fs := flag.NewFlagSet("weights set MODEL v1=80 v2=20", flag.ContinueOnError)
	reason := fs.String("reason", "", "`TEXT` recorded in the audit log")
	rev := fs.Int64("revision", 0, "change only if the model is at this `REVISION` (else exit 4)")
	force := fs.Bool("force", false, "change the weights during a canary: it is aborted first (its version marked failed); without it the change is refused (exit 4)")
	wait := waitFlag(fs)
	pos, err := a.parse(fs, args)
	if err != nil {
		return err
	}
	if err := checkWait(*wait); err != nil {
		return err
	}
	if len(pos) < 1 || pos[0] != "set" {
		return usagef("want: weights set MODEL VERSION=WEIGHT...")
	}
	if len(pos) < 3 {
		return usagef("weights set needs a model and at least one VERSION=WEIGHT")
	}
	name := pos[1]
	weights, err := parseWeights(pos[2:])
	if err != nil {
		return err
	}
	// The command a "force" hint repeats: this one, with --force (built
	// from what it means, so no token or other flag is echoed).
	a.forceCommand = "syctl weights set " + name + " " + strings.Join(pos[2:], " ")
	if *reason != "" {
		a.forceCommand += " --reason " + strconv.Quote(*reason)
	}
	a.forceCommand += " --force"
	ctx, cancel := a.cctx()
	defer cancel()
	start := time.Now()
	res, raw, err := a.api.SetWeights(ctx, name, weights, *reason, *force, *wait, client.Precondition{IfRevision: *rev})
	if err != nil {
		return err
	}
	if a.structured() {
		return a.printRaw(raw)
	}
	if ab := res.AbortedCanary; ab != nil {
		fmt.Fprintf(a.stdout, "model/%s canary of %s aborted first (%s marked failed; revision %d)\n", name, ab.Canary, ab.Canary, ab.Revision)
	}
	fmt.Fprintf(a.stdout, "model/%s weights %s (revision %d)\n", name, weightsString(&res.Model), res.Revision)
	if res.Proxies != nil {
		fmt.Fprintln(a.stdout, ackLine(res.Proxies, time.Since(start)))
	}
	return nil
}

func parseWeights(args []string) (map[string]int, error) {
	out := make(map[string]int, len(args))
	for _, a := range args {
		k, v, ok := strings.Cut(a, "=")
		if !ok || k == "" {
			return nil, usagef("%q: want VERSION=WEIGHT, e.g. v1=80", a)
		}
		n, err := strconv.Atoi(strings.TrimSuffix(v, "%"))
		if err != nil {
			return nil, usagef("%q: the weight must be an integer, e.g. %s=80", a, k)
		}
		if _, dup := out[k]; dup {
			return nil, usagef("version %q given twice", k)
		}
		out[k] = n
	}
	return out, nil
}

func cmdCanary(a *app, args []string) error {
	fs := flag.NewFlagSet("canary start|pause|resume|promote|abort|reset|status MODEL", flag.ContinueOnError)
	reason := fs.String("reason", "", "`TEXT` recorded in the audit log")
	version := fs.String("version", "", "start: the `VERSION` to ramp; reset: the version whose failed mark to clear (default: spec.canary.version)")
	steps := fs.String("steps", "", "start: traffic `STEPS` in percent, e.g. 20,50,80,100")
	stepDur := fs.String("step-duration", "", "start: minimum `DURATION` per step, e.g. 5m")
	wait := waitFlag(fs)
	watch := watchFlags(fs)
	until := fs.String("until", "", "status: ask every --interval until the canary is in `PHASE` (progressing, paused, promoted or rolled_back), then print it once; exit 1 if it ends in the other final phase, or at --timeout")
	pos, err := a.parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return usagef("want: canary start|pause|resume|promote|abort|reset|status MODEL")
	}
	if *until != "" {
		switch {
		case pos[0] != "status":
			return usagef("--until goes with canary status")
		case *watch.on:
			return usagef("--until and --watch: give one (--until prints once, when the phase is reached)")
		case !slices.Contains([]string{"progressing", "paused", "promoted", "rolled_back"}, *until):
			return usagef("--until %q: want progressing, paused, promoted or rolled_back", *until)
		}
		return a.canaryUntil(pos[1], *until, *watch.interval)
	}
	if err := checkWait(*wait); err != nil {
		return err
	}
	action, name := pos[0], pos[1]
	path := client.ModelPath(name) + "/canary"
	switch action {
	case "status":
		return a.watch(watch, func(ctx context.Context) error {
			raw, err := a.api.Raw(ctx, http.MethodGet, path, nil)
			if err != nil {
				return err
			}
			if a.structured() {
				return a.printRaw(raw)
			}
			var st api.CanaryStatus
			if err := json.Unmarshal(raw, &st); err != nil {
				return fmt.Errorf("decode canary status: %w", err)
			}
			printCanaryStatus(a.stdout, st)
			return nil
		})
	case "start", "pause", "resume", "promote", "abort", "reset":
	default:
		return usagef("unknown canary action %q (want start, pause, resume, promote, abort, reset or status)", action)
	}
	if *watch.on {
		return usagef("--watch goes with canary status")
	}
	body := map[string]any{"waitForAck": wait.String()}
	if *reason != "" {
		body["reason"] = *reason
	}
	if (action == "start" || action == "reset") && *version != "" {
		body["version"] = *version
	}
	if action == "start" {
		if *steps != "" {
			var st []int
			for _, s := range strings.Split(*steps, ",") {
				n, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(s, "%")))
				if err != nil {
					return usagef("--steps: want integers such as 20,50,80,100, got %q", *steps)
				}
				st = append(st, n)
			}
			body["steps"] = st
		}
		if *stepDur != "" {
			if _, err := time.ParseDuration(*stepDur); err != nil {
				return usagef("--step-duration: want a duration such as 5m, got %q", *stepDur)
			}
			body["stepDuration"] = *stepDur
		}
	} else if *steps != "" || *stepDur != "" || (*version != "" && action != "reset") {
		return usagef("--steps and --step-duration go with canary start, --version with start and reset")
	}
	ctx, cancel := a.cctx()
	defer cancel()
	start := time.Now()
	raw, err := a.api.Raw(ctx, http.MethodPost, path+"/"+action, body)
	if err != nil {
		return err
	}
	if a.structured() {
		return a.printRaw(raw)
	}
	var res struct {
		Revision int64              `json:"revision"`
		Proxies  *api.AppliedResult `json:"proxies"`
		Status   api.CanaryStatus   `json:"status"`
	}
	if err := json.Unmarshal(raw, &res); err != nil {
		return fmt.Errorf("decode the canary %s answer: %w", action, err)
	}
	if action == "reset" {
		cleared := first(*version, res.Status.Canary)
		fmt.Fprintf(a.stdout, "model/%s canary reset: %s may be ramped again (its failed mark cleared; revision %d)\n", name, first(cleared, "the version"), res.Revision)
		for _, v := range sortedKeys(res.Status.FailedVersions) {
			fmt.Fprintf(a.stdout, "  %s is still marked failed (%s): syctl canary reset %s --version %s\n", v, res.Status.FailedVersions[v], name, v)
		}
	} else {
		fmt.Fprintf(a.stdout, "model/%s canary %s (revision %d)\n", name, pastTense(action), res.Revision)
	}
	if res.Proxies != nil {
		fmt.Fprintln(a.stdout, ackLine(res.Proxies, time.Since(start)))
	}
	if action != "reset" {
		printCanaryStatus(a.stdout, res.Status)
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func pastTense(action string) string {
	switch action {
	case "start":
		return "started"
	case "pause":
		return "paused"
	case "resume":
		return "resumed"
	case "promote":
		return "promoted"
	case "abort":
		return "aborted"
	}
	return action
}

func cmdRollback(a *app, args []string) error {
	fs := flag.NewFlagSet("rollback MODEL", flag.ContinueOnError)
	to := fs.Int64("to", 0, "`REVISION` to restore (default: the last one whose split was healthy)")
	reason := fs.String("reason", "", "reason recorded in the audit log")
	wait := waitFlag(fs)
	rev := fs.Int64("revision", 0, "roll back only if the model is at this `REVISION` (else exit 4)")
	pos, err := a.parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("want: rollback MODEL [--to REVISION]")
	}
	if err := checkWait(*wait); err != nil {
		return err
	}
	if explicit(fs, "to") && *to <= 0 {
		return usagef("--to: want a revision number >= 1 (see syctl history %s), got %d; leave --to out to restore the last healthy revision", pos[0], *to)
	}
	name := pos[0]
	ctx, cancel := a.cctx()
	defer cancel()
	req := api.RollbackRequest{Revision: *to, Reason: *reason}
	if *wait > 0 {
		req.WaitForAck = api.Duration(*wait)
	}
	start := time.Now()
	res, raw, err := a.api.Rollback(ctx, name, req, client.Precondition{IfRevision: *rev})
	elapsed := time.Since(start)
	if err != nil {
		return err
	}
	if a.structured() {
		return a.printRaw(raw)
	}
	ab := res.AbortedCanary
	if ab != nil {
		fmt.Fprintf(a.stdout, "model/%s canary of %s aborted (%s marked failed): the split from before the canary, %s gets no traffic (revision %d)\n",
			name, ab.Canary, ab.Canary, ab.Canary, ab.Revision)
	}
	restored := "the last healthy revision"
	switch {
	case res.RestoredRevision > 0:
		restored = fmt.Sprintf("revision %d", res.RestoredRevision)
	case *to > 0:
		restored = fmt.Sprintf("revision %d", *to)
	}
	if ab != nil && res.Revision == ab.Revision {
		fmt.Fprintf(a.stdout, "model/%s rolled back (now revision %d): weights %s\n", name, res.Revision, weightsString(&res.Model))
	} else {
		fmt.Fprintf(a.stdout, "model/%s rolled back to %s (now revision %d): weights %s\n", name, restored, res.Revision, weightsString(&res.Model))
	}
	for _, sk := range res.Skipped {
		fmt.Fprintf(a.stdout, "  skipped revision %d: %s\n", sk.Revision, sk.Why)
	}
	if p := res.Proxies; p != nil {
		fmt.Fprintln(a.stdout, ackLine(p, elapsed))
	}
	return nil
}

// ackLine says how many proxies applied a change: "applied on 3/3 proxies
// in 41 ms".
func ackLine(p *api.AppliedResult, roundTrip time.Duration) string {
	if p.Total == 0 {
		return "no proxies connected (nothing to apply it yet)"
	}
	var line string
	if p.ElapsedMS != nil {
		line = fmt.Sprintf("applied on %d/%d proxies in %s ms", len(p.Acked), p.Total, fmtFloat(*p.ElapsedMS, 0))
	} else {
		line = fmt.Sprintf("applied on %d/%d proxies in %d ms (request round trip)", len(p.Acked), p.Total, roundTrip.Milliseconds())
	}
	if len(p.Nacked) > 0 {
		line += "; rejected (NACK) by " + strings.Join(p.Nacked, ", ")
	}
	if len(p.Pending) > 0 {
		line += "; not yet applied by " + strings.Join(p.Pending, ", ")
	}
	return line
}

func cmdShadow(a *app, args []string) error {
	fs := flag.NewFlagSet("shadow set|off|report MODEL", flag.ContinueOnError)
	version := fs.String("version", "", "set: the version to mirror to")
	percent := fs.Float64("percent", 0, "set: share of requests mirrored, (0, 100]")
	mode := fs.String("mode", "", "set: compare mode: numeric, topk, argmax or exact (default: keep, else numeric)")
	k := fs.Int("k", 0, "set: K for --mode topk (default 10)")
	sampling := fs.String("sampling", "", "set: random or sticky (by the sticky header)")
	window := fs.String("window", "", "report: the time window, e.g. 5m (default: the server's)")
	minRecords := fs.Int("min-records", 0, "report: ask every second until the report holds at least `N` records (the mirror runs in the background), then print it; exit 1 at --timeout")
	reason := fs.String("reason", "", "reason recorded in the audit log")
	rev := fs.Int64("revision", 0, "set/off: change only if the model is at this `REVISION` (else exit 4)")
	wait := waitFlag(fs)
	pos, err := a.parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return usagef("want: shadow set|off|report MODEL")
	}
	if err := checkWait(*wait); err != nil {
		return err
	}
	action, name := pos[0], pos[1]
	if *minRecords != 0 && action != "report" {
		return usagef("--min-records goes with shadow report")
	}
	ctx, cancel := a.cctx()
	defer cancel()
	switch action {
	case "report":
		if *window != "" {
			if _, err := time.ParseDuration(*window); err != nil {
				return usagef("--window: want a duration such as 5m, got %q", *window)
			}
		}
		if *minRecords < 0 {
			return usagef("--min-records: want >= 0, got %d", *minRecords)
		}
		return a.shadowReport(ctx, name, *window, *minRecords)
	case "set":
		if *version == "" || *percent == 0 {
			return usagef("shadow set needs --version and --percent")
		}
		if *k != 0 && *mode == "" {
			*mode = api.CompareTopK
		}
		return a.editModel(ctx, name, *rev, *reason, *wait, func(m *api.Model) (string, error) {
			sh := api.Shadow{}
			if m.Spec.Shadow != nil {
				sh = *m.Spec.Shadow
			}
			sh.Version, sh.Percent = *version, *percent
			if *sampling != "" {
				sh.Sampling = *sampling
			}
			if *mode != "" && *mode != sh.Compare.Mode {
				sh.Compare = api.Compare{Mode: *mode, Outputs: sh.Compare.Outputs}
			}
			if *k != 0 {
				sh.Compare.K = *k
			}
			m.Spec.Shadow = &sh
			return fmt.Sprintf("shadow %s at %s%%", sh.Version, fmtFloat(sh.Percent, -1)), nil
		})
	case "off":
		return a.editModel(ctx, name, *rev, *reason, *wait, func(m *api.Model) (string, error) {
			if m.Spec.Shadow == nil {
				return "", errUnchanged
			}
			m.Spec.Shadow = nil
			return "shadow off", nil
		})
	}
	return usagef("unknown shadow action %q (want set, off or report)", action)
}

var errUnchanged = errors.New("unchanged")

// editModel changes a model read-modify-write: it reads the model, edits
// it and writes it back with If-Match, retrying a few times when another
// change lands in between (unless --revision pinned the revision).
func (a *app) editModel(ctx context.Context, name string, rev int64, reason string, wait time.Duration, edit func(*api.Model) (string, error)) error {
	for attempt := 0; ; attempt++ {
		cur, _, err := a.api.GetModel(ctx, name)
		if err != nil {
			return err
		}
		if rev > 0 && cur.Revision != rev {
			return &client.APIError{Method: http.MethodPut, Path: client.ModelPath(name), Status: http.StatusConflict,
				Message: fmt.Sprintf("model %q is at revision %d, not %d", name, cur.Revision, rev), Revision: cur.Revision}
		}
		m := cur.Model
		what, err := edit(&m)
		if errors.Is(err, errUnchanged) {
			if a.structured() {
				return a.printValue(cur)
			}
			fmt.Fprintf(a.stdout, "model/%s unchanged (revision %d)\n", name, cur.Revision)
			return nil
		}
		if err != nil {
			return err
		}
		doc, err := json.Marshal(m)
		if err != nil {
			return err
		}
		start := time.Now()
		res, raw, err := a.api.PutModel(ctx, name, doc, wait, client.Precondition{IfRevision: cur.Revision, Reason: reason})
		if client.IsStatus(err, http.StatusConflict) && rev == 0 && attempt < 3 {
			continue
		}
		if err != nil {
			return err
		}
		if a.structured() {
			return a.printRaw(raw)
		}
		fmt.Fprintf(a.stdout, "model/%s %s (revision %d)\n", name, what, res.Revision)
		if res.Proxies != nil {
			fmt.Fprintln(a.stdout, ackLine(res.Proxies, time.Since(start)))
		}
		return nil
	}
}

func (a *app) shadowReport(ctx context.Context, name, window string, minRecords int) error {
	path := client.ModelPath(name) + "/shadow/report"
	if window != "" {
		path += "?window=" + url.QueryEscape(window)
	}
	var raw json.RawMessage
	for {
		var err error
		raw, err = a.api.Raw(ctx, http.MethodGet, path, nil)
		if err != nil {
			return err
		}
		var held struct {
			Shadow struct {
				Records int `json:"records"`
			} `json:"shadow"`
		}
		if minRecords == 0 || json.Unmarshal(raw, &held) != nil || held.Shadow.Records >= minRecords {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("model/%s: the shadow report held %d records, not the %d asked for, within --timeout %s", name, held.Shadow.Records, minRecords, a.timeout)
		case <-time.After(time.Second):
		}
	}
	if a.structured() {
		return a.printRaw(raw)
	}
	var r api.ShadowReportResponse
	if err := json.Unmarshal(raw, &r); err != nil {
		b, yerr := jsonToYAML(raw)
		if yerr != nil {
			return yerr
		}
		_, err = a.stdout.Write(b)
		return err
	}
	p := func(format string, args ...any) { fmt.Fprintf(a.stdout, format+"\n", args...) }
	p("Model:       %s", name)
	if !r.From.IsZero() {
		p("Window:      %s .. %s", timeString(r.From), timeString(r.To))
	}
	t := newTable(a.stdout, "COMPARISON", "RECORDS", "COMPARED", "AGREED", "AGREEMENT", "SHADOW ERRORS", "SHADOW NaN", "PRIMARY P99", "SHADOW P99")
	for _, row := range []struct {
		name string
		f    shadow.Figures
	}{{"shadow vs primary", r.Shadow}, {"noise floor", r.NoiseFloor}} {
		if row.name == "noise floor" && row.f.Compared == 0 {
			continue
		}
		t.row(row.name, row.f.Records, fmtFloat(row.f.Compared, -1), fmtFloat(row.f.Agreed, -1), fmtFloat(row.f.AgreementRate*100, 1)+"%",
			fmtFloat(row.f.ShadowErrors, -1), fmtFloat(row.f.ShadowNaN, -1), fmtFloat(row.f.PrimaryP99MS, 2)+"ms", fmtFloat(row.f.ShadowP99MS, 2)+"ms")
	}
	if err := t.flush(); err != nil {
		return err
	}
	if len(r.Missing) > 0 {
		p("Not included (no answer): %s", strings.Join(r.Missing, ", "))
	}
	if len(r.Worst) > 0 {
		p("Worst disagreements:")
		for _, w := range r.Worst {
			d := w.Reason
			if d == "" {
				for _, od := range w.Diff {
					if !od.Agree {
						d = od.Name + ": " + od.Reason
						break
					}
				}
			}
			p("  %s  %s  %s vs %s  %s", timeString(w.Time), first(w.RequestID, w.InputDigest), w.PrimaryVersion, w.ShadowVersion, d)
		}
	}
	return nil
}

func cmdHistory(a *app, args []string) error {
	fs := flag.NewFlagSet("history MODEL", flag.ContinueOnError)
	limit := fs.Int("limit", 0, "show at most N revisions (0: all)")
	pos, err := a.parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("want: history MODEL")
	}
	ctx, cancel := a.cctx()
	defer cancel()
	h, raw, err := a.api.History(ctx, pos[0], *limit)
	if err != nil {
		return err
	}
	if a.structured() {
		return a.printRaw(raw)
	}
	t := newTable(a.stdout, "REVISION", "TIME", "SUBJECT", "ACTION", "WEIGHTS", "REASON")
	for i, r := range h.Items {
		rev := strconv.FormatInt(r.Revision, 10)
		if i == 0 && !r.Deleted {
			rev += " (current)"
		}
		action := r.Action
		weights := weightsString(&r.Model)
		if r.Deleted {
			action, weights = "delete", ""
		}
		t.row(rev, timeString(r.Time), r.Subject, action, weights, r.Reason)
	}
	return t.flush()
}

func cmdAudit(a *app, args []string) error {
	fs := flag.NewFlagSet("audit", flag.ContinueOnError)
	model := fs.String("model", "", "only changes of this model")
	limit := fs.Int("limit", 0, "at most N entries (API default 100, max 1000)")
	before := fs.Int64("before", 0, "entries older than this `REVISION` (paging)")
	pos, err := a.parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 1 && *model == "" {
		*model = pos[0]
	} else if len(pos) > 0 {
		return usagef("unexpected arguments: %s", strings.Join(pos, " "))
	}
	ctx, cancel := a.cctx()
	defer cancel()
	au, raw, err := a.api.Audit(ctx, client.AuditQuery{Model: *model, Before: *before, Limit: *limit})
	if err != nil {
		return err
	}
	if a.structured() {
		return a.printRaw(raw)
	}
	t := newTable(a.stdout, "REVISION", "TIME", "SUBJECT", "ACTION", "MODEL", "CHANGE", "REASON")
	for _, e := range au.Items {
		t.row(e.Revision, timeString(e.Time), e.Subject, e.Action, e.Model, changeSummary(e.Before, e.After), e.Reason)
	}
	return t.flush()
}

// changeSummary says in a few words what an audited change did.
func changeSummary(before, after *api.Model) string {
	switch {
	case before == nil && after == nil:
		return ""
	case before == nil:
		return "created: " + strings.Join(after.VersionNames(), ",") + " weights " + weightsString(after)
	case after == nil:
		return "deleted"
	}
	var parts []string
	bw, aw := weightsString(before), weightsString(after)
	if bw != aw {
		parts = append(parts, fmt.Sprintf("weights %s → %s", bw, aw))
	}
	if bv, av := strings.Join(before.VersionNames(), ","), strings.Join(after.VersionNames(), ","); bv != av {
		parts = append(parts, fmt.Sprintf("versions %s → %s", bv, av))
	} else if !sameJSON(before.Spec.Versions, after.Spec.Versions) {
		parts = append(parts, "endpoints")
	}
	b, a := before.Spec, after.Spec
	sections := []struct {
		name string
		x, y any
	}{
		{"shadow", b.Shadow, a.Shadow}, {"canary", b.Canary, a.Canary}, {"fallback", b.Fallback, a.Fallback},
		{"cache", b.Cache, a.Cache}, {"retries", b.Retries, a.Retries}, {"timeout", b.Timeout, a.Timeout},
		{"labels", before.Metadata.Labels, after.Metadata.Labels},
		{"sticky/override header", [2]string{b.Traffic.StickyHeader, b.Traffic.OverrideHeader}, [2]string{a.Traffic.StickyHeader, a.Traffic.OverrideHeader}},
	}
	for _, s := range sections {
		if sameJSON(s.x, s.y) {
			continue
		}
		switch {
		case s.name == "shadow" && a.Shadow == nil:
			parts = append(parts, "shadow off")
		case s.name == "shadow" && a.Shadow != nil:
			parts = append(parts, fmt.Sprintf("shadow %s %s%%", a.Shadow.Version, fmtFloat(a.Shadow.Percent, -1)))
		case s.name == "canary" && a.Canary == nil:
			parts = append(parts, "canary removed")
		default:
			parts = append(parts, s.name)
		}
	}
	if len(parts) == 0 {
		return "no change"
	}
	return strings.Join(parts, "; ")
}

func sameJSON(x, y any) bool {
	a, err1 := json.Marshal(x)
	b, err2 := json.Marshal(y)
	return err1 == nil && err2 == nil && string(a) == string(b)
}

func cmdProxies(a *app, args []string) error {
	fs := flag.NewFlagSet("proxies", flag.ContinueOnError)
	pos, err := a.parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("unexpected arguments: %s", strings.Join(pos, " "))
	}
	ctx, cancel := a.cctx()
	defer cancel()
	px, raw, err := a.api.Proxies(ctx)
	if err != nil {
		return err
	}
	if a.structured() {
		return a.printRaw(raw)
	}
	if len(px.Proxies) == 0 {
		fmt.Fprintf(a.stdout, "no proxies connected (config version %s)\n", px.SnapshotVersion)
		return nil
	}
	sort.Slice(px.Proxies, func(i, j int) bool { return px.Proxies[i].Node < px.Proxies[j].Node })
	now := time.Now()
	header := []string{"NODE", "CLUSTER", "APPLIED", "STATUS", "CONNECTED"}
	if a.output == "wide" {
		header = append(header, "STREAM", "SINCE")
	}
	t := newTable(a.stdout, header...)
	for _, p := range px.Proxies {
		status := "in sync"
		switch {
		case p.NackedVersion != "" && versionNum(p.NackedVersion) >= versionNum(p.AckedVersion):
			status = fmt.Sprintf("NACK of %s: %s", p.NackedVersion, p.NackReason)
		case p.AckedVersion == "":
			status = "waiting for first config"
		case p.AckedVersion != px.SnapshotVersion:
			status = "behind (serving " + px.SnapshotVersion + ")"
		}
		row := []any{p.Node, p.Cluster, p.AckedVersion, status, age(now, p.ConnectedAt)}
		if a.output == "wide" {
			row = append(row, p.Stream, timeString(p.ConnectedAt))
		}
		t.row(row...)
	}
	if err := t.flush(); err != nil {
		return err
	}
	return nil
}

// version is set by -ldflags "-X main.version=..." in release builds.
var version = ""

func cmdVersion(a *app, args []string) error {
	fs := flag.NewFlagSet("version", flag.ContinueOnError)
	pos, err := a.parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("unexpected arguments: %s", strings.Join(pos, " "))
	}
	v := version
	if v == "" {
		v = "(devel)"
		if bi, ok := debug.ReadBuildInfo(); ok {
			if bi.Main.Version != "" {
				v = bi.Main.Version
			}
			for _, s := range bi.Settings {
				if s.Key == "vcs.revision" && len(s.Value) >= 12 {
					v += " " + s.Value[:12]
				}
			}
		}
	}
	out := map[string]any{"client": map[string]any{"version": v, "go": runtime.Version(), "platform": runtime.GOOS + "/" + runtime.GOARCH}}
	ctx, cancel := a.cctx()
	defer cancel()
	srv := map[string]any{"url": a.api.BaseURL}
	h, herr := a.api.Health(ctx)
	if herr == nil {
		srv["reachable"] = true
		srv["snapshotVersion"] = h.SnapshotVersion
	} else {
		srv["reachable"] = false
		srv["error"] = herr.Error()
	}
	out["server"] = srv
	if a.structured() {
		if err := a.printValue(out); err != nil || herr == nil {
			return err
		}
		return exitCode(exitError)
	}
	fmt.Fprintf(a.stdout, "syctl %s (%s, %s/%s)\n", v, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	if herr == nil {
		fmt.Fprintf(a.stdout, "server %s: reachable, config version %d\n", a.api.BaseURL, h.SnapshotVersion)
		return nil
	}
	fmt.Fprintf(a.stdout, "server %s: %v\n", a.api.BaseURL, herr)
	return exitCode(exitError) // the client's version is printed; the server's could not be read
}

func versionNum(s string) int64 {
	n, _ := strconv.ParseInt(s, 10, 64)
	return n
}

// canaryUntil polls the canary's status every interval until its phase is
// want, then prints it once (a final phase other than want is an error,
// printed too); --timeout bounds the whole wait.
func (a *app) canaryUntil(name, want string, interval time.Duration) error {
	if interval <= 0 {
		return usagef("--interval: want > 0")
	}
	ctx, cancel := a.cctx()
	defer cancel()
	path := client.ModelPath(name) + "/canary"
	last := ""
	for {
		raw, err := a.api.Raw(ctx, http.MethodGet, path, nil)
		if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("model/%s: the canary did not reach %s within --timeout %s (last phase %s)", name, want, a.timeout, first(last, "none"))
			}
			return err
		}
		var st api.CanaryStatus
		if err := json.Unmarshal(raw, &st); err != nil {
			return fmt.Errorf("decode canary status: %w", err)
		}
		last = st.Phase
		final := st.Phase == "promoted" || st.Phase == "rolled_back"
		if st.Phase == want || final {
			if a.structured() {
				if err := a.printRaw(raw); err != nil {
					return err
				}
			} else {
				printCanaryStatus(a.stdout, st)
			}
			if st.Phase != want {
				return fmt.Errorf("model/%s: the canary of %s ended %s, not %s", name, st.Canary, st.Phase, want)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("model/%s: the canary did not reach %s within --timeout %s (last phase %s)", name, want, a.timeout, first(last, "none"))
		case <-time.After(interval):
		}
	}
}
