package agent

import (
	"fmt"
	"time"

	"github.com/switchyard-dev/switchyard/api"
	"github.com/switchyard-dev/switchyard/internal/tlsutil"
)

// EnvVar is set (to "1") in the shadow agent's environment: a binary that
// finds it at start runs the agent (Main) instead of its usual main.
const EnvVar = "SWITCHYARD_SHADOW_AGENT"

// ProtocolVersion is the version of the frames between the proxy and its
// agent, sent in Init. Both ends are the same executable, so they always
// agree; an agent that gets another version refuses the connection (it
// exits with an error and the supervisor's restarts back off).
const ProtocolVersion = 1

// Drop reasons of the hand-off (the proxy's
// switchyard_shadow_dropped_total{reason}).
const (
	DropAgentDown   = "agent_down"   // no agent connected (starting, restarting, or its connection broke with the mirror buffered)
	DropHandoffFull = "handoff_full" // the hand-off buffer holds Options.Buffer bytes: the agent is behind
)

// agentFD is the socket's descriptor in the agent (ExtraFiles[0]).
const agentFD = 3

// Init is the first frame on a connection: what the agent's mirrors need
// besides the models.
type Init struct {
	// Protocol is ProtocolVersion (0 from a proxy that predates it is
	// refused too).
	Protocol               int     `json:"protocol"`
	ShadowDir              string  `json:"shadowDir,omitempty"`
	ShadowRecordMaxBytes   int64   `json:"shadowRecordMaxBytes,omitempty"`
	ShadowRecordKeep       int     `json:"shadowRecordKeep,omitempty"`
	ShadowRecordAgreements float64 `json:"shadowRecordAgreements,omitempty"`
	ShadowRingSize         int     `json:"shadowRingSize,omitempty"`
	// UpstreamTLS is the proxy's default upstream TLS (its Config.UpstreamTLS).
	UpstreamTLS *tlsutil.Files `json:"upstreamTLS,omitempty"`
	// Priority is the CPU priority the agent takes once it has answered
	// its first call (PriorityIdle for ""; see ParsePriority).
	Priority string `json:"priority,omitempty"`
}

// The agent's CPU priorities (Init.Priority). The agent starts at the
// proxy's priority, so its start-up and its first answer (the check that
// it runs) never wait for an idle core; it takes this one right after.
const (
	// PriorityIdle (the default): every thread at SCHED_IDLE. Mirrors run
	// on CPU time nothing else wants; on a saturated machine they stop
	// (the hand-off buffer fills and drops, counted) and the agent's
	// answers (reports, records, its metrics) may time out.
	PriorityIdle = "idle"
	// PriorityLow: nice 19 (a small share of a busy core, about 1.5 % of
	// it against one nice-0 thread).
	PriorityLow = "low"
	// PriorityNormal: the proxy's own priority (the mirrors compete with
	// requests for the cores).
	PriorityNormal = "normal"
)

// ParsePriority checks a priority name ("" is PriorityIdle).
func ParsePriority(s string) (string, error) {
	switch s {
	case "":
		return PriorityIdle, nil
	case PriorityIdle, PriorityLow, PriorityNormal:
		return s, nil
	}
	return "", fmt.Errorf("shadow agent priority %q: want %s, %s or %s", s, PriorityIdle, PriorityLow, PriorityNormal)
}

// config is the proxy's live configuration as the agent needs it: the
// models that shadow (without their cache, fallback and canary sections),
// and a version that grows by one with each configuration sent.
type config struct {
	Version string      `json:"version"`
	Models  []api.Model `json:"models"`
}

// query asks for a model's report or records.
type query struct {
	Model  string        `json:"model"`
	Window time.Duration `json:"window"`
}

// Key names a mirror for counting it as dropped: the model, its primary
// and shadow versions, and whether it also carried a noise-floor job.
type Key struct {
	Model, Primary, Target string
	Noise                  bool
}
