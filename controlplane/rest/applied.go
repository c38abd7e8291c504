package rest

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/switchyard-dev/switchyard/api"
)

// waitApplied waits (bounded by limit) until the proxies ACK revision rev,
// written at written, and says how that went ("applied on N/N proxies in
// T ms").
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
