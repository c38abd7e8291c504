package controlplane

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/switchyard-dev/switchyard/canary"
)

// canaryRun is one canary of a model: its configuration as started and its
// state machine.
type canaryRun struct {
	Config canary.Config `json:"config"`
	State  canary.State  `json:"state"`
	// Revision is the model revision the controller last wrote or
	// accepted: a newer revision with other weights was written by
	// someone else.
	Revision int64 `json:"revision"`
	// Ended says the run was closed without a terminal phase (spec.canary
	// removed or renamed, model deleted).
	Ended string `json:"ended,omitempty"`
}

func (r *canaryRun) active() bool {
	return r != nil && r.Ended == "" && (r.State.Phase == canary.Progressing || r.State.Phase == canary.Paused)
}

// canaryBook is what the controller keeps per model (persisted).
type canaryBook struct {
	Model string     `json:"model"`
	Run   *canaryRun `json:"run,omitempty"`
	// Failed lists versions marked failed by a rollback or an abort; they
	// are not ramped again until reset.
	Failed []string `json:"failed,omitempty"`
	// FailedAt says when and why each was marked.
	FailedWhy map[string]string `json:"failedWhy,omitempty"`
}

func (b *canaryBook) clone() *canaryBook {
	c := *b
	if b.Run != nil {
		r := *b.Run
		r.State.Weights = maps.Clone(r.State.Weights)
		r.State.Previous = maps.Clone(r.State.Previous)
		r.State.History = slices.Clone(r.State.History)
		c.Run = &r
	}
	c.Failed = slices.Clone(b.Failed)
	c.FailedWhy = maps.Clone(b.FailedWhy)
	return &c
}

func (b *canaryBook) markFailed(version, why string, at time.Time) {
	if !slices.Contains(b.Failed, version) {
		b.Failed = append(b.Failed, version)
		slices.Sort(b.Failed)
	}
	if b.FailedWhy == nil {
		b.FailedWhy = map[string]string{}
	}
	b.FailedWhy[version] = at.UTC().Format(time.RFC3339) + ": " + why
}

// canaryStateStore persists canary books. The controller is its only
// writer.
type canaryStateStore interface {
	Load() (map[string]*canaryBook, error)
	Save(b *canaryBook) error
	Delete(model string) error
	Close() error
}

var bucketCanary = []byte("canary")

// boltCanaryState keeps the books in their own bbolt file (next to the
// state file: <state>.canary), so the desired-state store stays the
// source of truth for documents and the canary's bookkeeping cannot
// corrupt it.
type boltCanaryState struct{ db *bolt.DB }

func openBoltCanaryState(path string) (*boltCanaryState, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open canary state %s: %w", path, err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucketCanary)
		return err
	}); err != nil {
		db.Close()
		return nil, fmt.Errorf("open canary state %s: %w", path, err)
	}
	return &boltCanaryState{db: db}, nil
}

func (s *boltCanaryState) Load() (map[string]*canaryBook, error) {
	out := map[string]*canaryBook{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketCanary).ForEach(func(k, v []byte) error {
			var b canaryBook
			if err := json.Unmarshal(v, &b); err != nil {
				return fmt.Errorf("canary state of %q: %w", k, err)
			}
			out[string(k)] = &b
			return nil
		})
	})
	return out, err
}

func (s *boltCanaryState) Save(b *canaryBook) error {
	v, err := json.Marshal(b)
	if err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketCanary).Put([]byte(b.Model), v) })
}

func (s *boltCanaryState) Delete(model string) error {
	return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketCanary).Delete([]byte(model)) })
}

func (s *boltCanaryState) Close() error { return s.db.Close() }

// memCanaryState keeps the books in memory (no state file: lost on
// restart).
type memCanaryState struct {
	mu    sync.Mutex
	books map[string][]byte
}

func (s *memCanaryState) Load() (map[string]*canaryBook, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]*canaryBook{}
	for k, v := range s.books {
		var b canaryBook
		if err := json.Unmarshal(v, &b); err != nil {
			return nil, err
		}
		out[k] = &b
	}
	return out, nil
}

func (s *memCanaryState) Save(b *canaryBook) error {
	v, err := json.Marshal(b)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.books == nil {
		s.books = map[string][]byte{}
	}
	s.books[b.Model] = v
	return nil
}

func (s *memCanaryState) Delete(model string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.books, model)
	return nil
}

func (s *memCanaryState) Close() error { return nil }
