package canaryctl

import (
	"context"
	"encoding/json"
	"time"

	"github.com/switchyard-dev/switchyard/canary"
)

// SideKind is the kind of the controller's side state in the store.
const SideKind = sideCanary

// RunState is the state of the model's run in memory.
func (c *Controller) RunState(model string) canary.State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.books[model].Run.State
}

// SavedRunState decodes the run state of a side-state value.
func SavedRunState(v []byte) (canary.State, error) {
	var b canaryBook
	if err := json.Unmarshal(v, &b); err != nil {
		return canary.State{}, err
	}
	return b.Run.State, nil
}

// Expand is the PromQL of template tmpl for model and version over (from, to].
func (p *PromSource) Expand(tmpl, model, version string, from, to time.Time) string {
	return p.expand(tmpl, model, version, from, to)
}

// Query runs an instant query at at and returns its samples' values.
func (p *PromSource) Query(ctx context.Context, q string, at time.Time) ([]float64, error) {
	ss, err := p.query(ctx, q, at)
	out := make([]float64, len(ss))
	for i, s := range ss {
		out[i] = s.value
	}
	return out, err
}

// SplitString formats a split as messages do: "v1=80 v2=20".
func SplitString(w map[string]int) string { return splitString(w) }
