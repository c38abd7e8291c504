package canaryctl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/switchyard-dev/switchyard/canary"
	"github.com/switchyard-dev/switchyard/controlplane/store"
)

// sideCanary is the kind of the canary controller's side state in the
// store (store.Side): one canaryBook per model, written in the same
// transaction as the revision of each transition.
const sideCanary = "canary"

// canaryRun is one canary of a model: its configuration as started and its
// state machine.
type canaryRun struct {
	Config canary.Config `json:"config"`
	State  canary.State  `json:"state"`
	// Revision is the model revision the controller last wrote or
	// accepted: a newer revision with other weights was written by
	// someone else.
	Revision int64 `json:"revision"`
	// Ended is read from state written by older versions only (a run
	// closed without a terminal phase); such a run is cleared on load.
	Ended string `json:"ended,omitempty"`
}

func (r *canaryRun) active() bool {
	return r != nil && r.Ended == "" && (r.State.Phase == canary.Progressing || r.State.Phase == canary.Paused)
}

func (r *canaryRun) clone() *canaryRun {
	if r == nil {
		return nil
	}
	c := *r
	c.State.Weights = maps.Clone(r.State.Weights)
	c.State.Previous = maps.Clone(r.State.Previous)
	c.State.History = slices.Clone(r.State.History)
	c.Config.Steps = slices.Clone(r.Config.Steps)
	return &c
}

// canaryBook is what the controller keeps per model (persisted as side
// state of the model). Which versions failed is not here: failed marks
// are the store's own record (store.Failed), the one source the
// controller, the rollback endpoint and the status read.
type canaryBook struct {
	Model string     `json:"model"`
	Run   *canaryRun `json:"run,omitempty"`
	// LastRun says how the previous run ended when it was closed without
	// a terminal phase or cleared (spec.canary removed or renamed, model
	// deleted), for the status.
	LastRun string `json:"lastRun,omitempty"`

	// Failed and FailedWhy are read from the legacy state file only (see
	// importLegacyCanaryState).
	Failed    []string          `json:"failed,omitempty"`
	FailedWhy map[string]string `json:"failedWhy,omitempty"`
}

func (b *canaryBook) clone() *canaryBook {
	c := *b
	c.Run = b.Run.clone()
	c.Failed, c.FailedWhy = nil, nil
	return &c
}

// side is b as the store's side state.
func (b *canaryBook) side() (*store.Side, error) {
	v, err := json.Marshal(b)
	if err != nil {
		return nil, fmt.Errorf("encode canary state of %q: %w", b.Model, err)
	}
	return &store.Side{Kind: sideCanary, Value: v}, nil
}

// loadBooks reads every model's canary book from the store. A run stored
// with a revision takes that revision (the book is encoded before the
// store numbers the revision it is written with).
func loadBooks(ctx context.Context, st store.Store) (map[string]*canaryBook, error) {
	side, err := st.Side(ctx, sideCanary)
	if err != nil {
		return nil, fmt.Errorf("load canary state: %w", err)
	}
	out := make(map[string]*canaryBook, len(side))
	for name, rec := range side {
		var b canaryBook
		if err := json.Unmarshal(rec.Value, &b); err != nil {
			return nil, fmt.Errorf("canary state of %q: %w", name, err)
		}
		b.Model = name
		if b.Run != nil && rec.Revision > b.Run.Revision {
			b.Run.Revision = rec.Revision
		}
		if b.Run != nil && b.Run.Ended != "" {
			b.LastRun = fmt.Sprintf("the canary of %s ended: %s", b.Run.Config.Canary, b.Run.Ended)
			b.Run = nil
		}
		b.Failed, b.FailedWhy = nil, nil
		out[name] = &b
	}
	return out, nil
}

var bucketLegacyCanary = []byte("canary")

// importLegacyCanaryState moves the books of an older control plane's
// separate canary file (<state>.canary) into the store: runs as side state
// (unless the store has one for that model already), failed versions as
// failed marks. The file is renamed to <path>.imported so it is read once.
func importLegacyCanaryState(ctx context.Context, st store.Store, path string, log *slog.Logger) error {
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second, ReadOnly: true})
	if err != nil {
		return fmt.Errorf("open legacy canary state %s: %w", path, err)
	}
	var books []canaryBook
	err = db.View(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucketLegacyCanary)
		if bk == nil {
			return nil
		}
		return bk.ForEach(func(k, v []byte) error {
			var b canaryBook
			if err := json.Unmarshal(v, &b); err != nil {
				return fmt.Errorf("legacy canary state of %q: %w", k, err)
			}
			b.Model = string(k)
			books = append(books, b)
			return nil
		})
	})
	db.Close()
	if err != nil {
		return err
	}
	have, err := st.Side(ctx, sideCanary)
	if err != nil {
		return err
	}
	for i := range books {
		b := &books[i]
		ch := store.Change{Subject: Subject, Action: "canary-import"}
		if len(b.Failed) > 0 {
			ch.MarkFailed = map[string]string{}
			for _, v := range b.Failed {
				why := b.FailedWhy[v]
				if why == "" {
					why = "marked failed by an earlier control plane"
				}
				ch.MarkFailed[v] = why
			}
		}
		if _, ok := have[b.Model]; !ok {
			if ch.Side, err = b.clone().side(); err != nil {
				return err
			}
		}
		if err := st.UpdateSide(ctx, b.Model, ch); err != nil {
			return fmt.Errorf("import legacy canary state of %q: %w", b.Model, err)
		}
	}
	if err := os.Rename(path, path+".imported"); err != nil {
		return fmt.Errorf("legacy canary state imported, but: %w", err)
	}
	log.Info("imported the canary state of an older control plane into the state file", "from", path, "models", len(books))
	return nil
}

// failedVersions reads the model's failed marks: the sorted versions and
// "time: reason" per version (the status's failedVersions).
func failedVersions(ctx context.Context, st store.Store, name string) ([]string, map[string]string, error) {
	marks, err := st.Failed(ctx, name)
	if err != nil {
		return nil, nil, fmt.Errorf("failed versions of %q: %w", name, err)
	}
	if len(marks) == 0 {
		return nil, nil, nil
	}
	why := make(map[string]string, len(marks))
	for v, m := range marks {
		why[v] = m.Time.UTC().Format(time.RFC3339) + ": " + m.Reason
	}
	return slices.Sorted(maps.Keys(marks)), why, nil
}
