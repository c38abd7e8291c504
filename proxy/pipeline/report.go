package pipeline

// What each answered request counts as on the stats stream (package
// report counts and ships): its error kind and its version's own failure,
// from the pipeline's trigger.

import (
	"bytes"
	"encoding/binary"
	"math"
	mrand "math/rand/v2"
	"time"

	"github.com/switchyard-dev/switchyard/fallback"
	"github.com/switchyard-dev/switchyard/proxy/report"

	pb "github.com/switchyard-dev/switchyard/oip/inferencepb"
)

// recordStats counts one finished inference request for the canary: v is
// the variant the request was routed to (a fallback's answer still counts
// against it, as a fallback), status the HTTP status sent (gRPC: its HTTP
// equivalent). Requests that never reached a variant, requests the
// client cancelled and calls the proxy's drain cut (nobody's failure) are
// not counted.
func (p *Pipeline) recordStats(v *Variant, x *Exchange, res *Result, status int, latency time.Duration) {
	if p.stats == nil || v == nil || res.Trigger.Fault() == fallback.FaultClient {
		return
	}
	o := report.Outcome{Latency: latency, Fallback: res.Fallback != "" && res.Trigger != fallback.Overload}
	o.NaNOutput = hasNaNOutput(v.Route, res, status) && (status >= 500 || !x.inputsHaveNaN())
	o.Kind = kindOf(res.Trigger, status, o.NaNOutput)
	o.Failure = versionFailure(res)
	p.stats.Slot(v.Route.Name, v.Name).Record(o)
	if res.Fallback == fallbackBackup && res.Variant != nil && res.Variant != v {
		// The backup's answer: counted as the backup's, apart from the
		// requests routed to it.
		p.stats.Slot(v.Route.Name, res.Variant.Name).RecordBackupAnswer(latency)
	}
}

// fallbackBackup is Result.Fallback for an answer of the backup version.
var fallbackBackup = fallback.StepBackup.String()

// versionFailure is the routed version's own failure on the request
// (fallback.None if it did not fail): the chain's reason when a fallback
// answered (res.Trigger is then the last link's outcome), else the
// attempt's trigger when the version is at fault.
func versionFailure(res *Result) fallback.Trigger {
	t := res.Trigger
	if res.Fallback != "" {
		t, _ = fallback.ParseTrigger(res.FallbackReason)
	}
	if t.Fault() != fallback.FaultVersion {
		return fallback.None
	}
	return t
}

// kindOf is the stats stream's error kind of an answer (report.KindNone:
// not an error).
func kindOf(t fallback.Trigger, status int, nan bool) report.Kind {
	switch {
	case t == fallback.Overload:
		return report.KindOverload
	case nan && status >= 500:
		return report.KindNaN
	case status == 504:
		return report.KindTimeout
	case status == 503:
		return report.KindUnavailable
	case status >= 500:
		return report.Kind5xx
	case status >= 400 && t == fallback.Rejected:
		return report.KindClient4xx
	}
	return report.KindNone
}

// nanMessage is how an OIP v2 backend (Switchyard's; Triton's JSON writer
// also names NaN) says an answer held NaN/Inf that JSON cannot carry.
var nanMessage = []byte("NaN")

// hasNaNOutput reports a NaN/Inf answer: a backend's 5xx saying so, a
// decoded answer holding one, or (for routes with a canary, where it is
// worth the scan) a gRPC answer holding one. REST answers passed through
// as bytes are not decoded for this.
func hasNaNOutput(r *Route, res *Result, status int) bool {
	switch {
	case res.Fallback != "" && res.FallbackReason == fallback.NaNOutput.String():
		// The chosen version answered NaN and a fallback replaced it: the
		// answer the client got is clean, the version's was not.
		return true
	case status >= 500:
		return res.Status >= 500 && bytes.Contains(res.Body, nanMessage)
	case res.parsed != nil:
		for i := range res.parsed.Outputs {
			if res.parsed.Outputs[i].HasNaNOrInf() {
				return true
			}
		}
	case res.PB != nil && r != nil && r.Model != nil && r.Model.Spec.Canary != nil:
		return pbHasNaN(res.PB)
	}
	return false
}

func pbHasNaN(resp *pb.ModelInferResponse) bool {
	raw := resp.GetRawOutputContents()
	for i, o := range resp.GetOutputs() {
		if i < len(raw) {
			if rawHasNaN(o.GetDatatype(), raw[i]) {
				return true
			}
			continue
		}
		c := o.GetContents()
		for _, f := range c.GetFp32Contents() {
			if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
				return true
			}
		}
		for _, f := range c.GetFp64Contents() {
			if math.IsNaN(f) || math.IsInf(f, 0) {
				return true
			}
		}
	}
	return false
}

func rawHasNaN(datatype string, b []byte) bool {
	switch datatype {
	case "FP32":
		for i := 0; i+4 <= len(b); i += 4 {
			if binary.LittleEndian.Uint32(b[i:])&0x7f800000 == 0x7f800000 {
				return true
			}
		}
	case "FP64":
		for i := 0; i+8 <= len(b); i += 8 {
			if binary.LittleEndian.Uint64(b[i:])&0x7ff0000000000000 == 0x7ff0000000000000 {
				return true
			}
		}
	case "FP16":
		for i := 0; i+2 <= len(b); i += 2 {
			if binary.LittleEndian.Uint16(b[i:])&0x7c00 == 0x7c00 {
				return true
			}
		}
	}
	return false
}

// RecordShadow counts one shadow comparison of (model, version) as the
// shadow, for the canary's shadow-disagreement gate.
func (p *Pipeline) RecordShadow(model, version string, disagreed bool) {
	if p.stats == nil {
		return
	}
	p.stats.Slot(model, version).RecordShadow(disagreed, mrand.Uint64())
}
