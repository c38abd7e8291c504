package controlplane

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/switchyard-dev/switchyard/api"
)

// Change actions the canary controller writes (store.Change.Action), so the
// audit log and the history say what each revision was.
const (
	ActionCanaryStart    = "canary-start"    // the canary's first step
	ActionCanaryPromote  = "canary-promote"  // the next step
	ActionCanaryPromoted = "canary-promoted" // the canary took all traffic
	ActionCanaryRollback = "canary-rollback" // automatic rollback: the previous split
	ActionCanaryAbort    = "canary-abort"    // manual abort: the previous split
	ActionCanaryPause    = "canary-pause"
	ActionCanaryResume   = "canary-resume"
	ActionCanaryReset    = "canary-reset" // a failed version may be ramped again
)

// midCanary reports a revision written in the middle of a ramp: its split
// was never judged healthy.
func midCanary(action string) bool {
	switch action {
	case ActionCanaryStart, ActionCanaryPromote, ActionCanaryPause, ActionCanaryResume:
		return true
	}
	return false
}

// routesToFailed names a version of failed that w sends traffic to ("":
// none).
func routesToFailed(w map[string]int, failed []string) string {
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
			if v := routesToFailed(h.Model.Spec.Traffic.Weights, failed); v != "" {
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

// waitApplied waits (bounded by wait) until the proxies ACK revision rev,
// written at written.
func (cp *ControlPlane) waitApplied(ctx context.Context, rev int64, written time.Time, wait time.Duration) *api.AppliedResult {
	return waitApplied(ctx, cp.WaitApplied, rev, written, wait)
}

func waitApplied(ctx context.Context, wait func(context.Context, int64) api.AckResult, rev int64, written time.Time, limit time.Duration) *api.AppliedResult {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	res := api.AppliedResult{AckResult: wait(ctx, rev)}
	if len(res.Pending) == 0 {
		ms := float64(time.Since(written).Microseconds()) / 1000
		res.ElapsedMS = &ms
	}
	res.Message = appliedMessage(&res)
	return &res
}

func appliedMessage(r *api.AppliedResult) string {
	if r.Total == 0 {
		return "no proxies connected (nothing to apply it yet)"
	}
	var line string
	if r.ElapsedMS != nil {
		line = fmt.Sprintf("applied on %d/%d proxies in %.0f ms", len(r.Acked), r.Total, *r.ElapsedMS)
	} else {
		line = fmt.Sprintf("applied on %d/%d proxies", len(r.Acked), r.Total)
	}
	if len(r.Nacked) > 0 {
		line += "; rejected (NACK) by " + strings.Join(r.Nacked, ", ")
	}
	if len(r.Pending) > 0 {
		line += "; not yet applied by " + strings.Join(r.Pending, ", ")
	}
	return line
}
