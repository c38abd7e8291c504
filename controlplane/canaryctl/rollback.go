package canaryctl

import (
	"fmt"
	"slices"

	"github.com/switchyard-dev/switchyard/api"
)

// Change actions the canary controller writes (store.Change.Action), so the
// audit log and the history say what each revision was.
const (
	ActionStart    = "canary-start"    // the canary's first step
	ActionPromote  = "canary-promote"  // the next step
	ActionPromoted = "canary-promoted" // the canary took all traffic
	ActionRollback = "canary-rollback" // automatic rollback: the previous split
	ActionAbort    = "canary-abort"    // manual abort: the previous split
	ActionPause    = "canary-pause"
	ActionResume   = "canary-resume"
	ActionReset    = "canary-reset" // a failed version may be ramped again
)

// midCanary reports a revision written in the middle of a ramp: its split
// was never judged healthy.
func midCanary(action string) bool {
	switch action {
	case ActionStart, ActionPromote, ActionPause, ActionResume:
		return true
	}
	return false
}

// RoutesToFailed names a version of failed that w sends traffic to ("":
// none).
func RoutesToFailed(w map[string]int, failed []string) string {
	for _, v := range sortedVersions(w) {
		if w[v] > 0 && slices.Contains(failed, v) {
			return v
		}
	}
	return ""
}

// RollbackTarget picks the revision POST /v1/models/{name}/rollback
// restores when none is named: the newest revision older than the head
// (hist[0]; history newest first) whose split was healthy. It skips
// deletions, revisions written mid-ramp by a canary (start, step, pause,
// resume: their split was never judged), and revisions that send traffic
// to a version in failed (the store's failed marks, not the history,
// which is trimmed). nil when there is none. Pure: the history and the
// marks in, the choice out.
func RollbackTarget(hist []api.Record, failed []string) (*api.Record, []api.SkippedRevision) {
	if len(hist) == 0 {
		return nil, nil
	}
	head := hist[0]
	var skipped []api.SkippedRevision
	for i := range hist {
		h := &hist[i]
		if h.Revision >= head.Revision {
			continue
		}
		var why string
		switch {
		case h.Deleted:
			why = "a deletion"
		case midCanary(h.Action):
			why = fmt.Sprintf("written mid-canary (%s)", h.Action)
		default:
			if v := RoutesToFailed(h.Model.Spec.Traffic.Weights, failed); v != "" {
				why = fmt.Sprintf("sends traffic to version %q, which failed its canary", v)
			}
		}
		if why == "" {
			return h, skipped
		}
		skipped = append(skipped, api.SkippedRevision{Revision: h.Revision, Why: why})
	}
	return nil, skipped
}
