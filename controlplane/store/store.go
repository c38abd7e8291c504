// Package store persists Switchyard's desired state: the current Model
// documents, every earlier revision of each (what rollback restores), and an
// audit log of every change.
//
// Store is the narrow interface callers use; Bolt is the embedded default
// (one bbolt file). An etcd implementation can follow without touching
// callers: revisions are one global, strictly increasing counter (etcd's
// mod_revision), writes are compare-and-swap on a model's revision, and
// Watch delivers the newest revision.
package store

import (
	"context"
	"errors"

	"github.com/switchyard-dev/switchyard/api"
)

// Errors callers branch on (use errors.Is).
var (
	// ErrNotFound: no such model (or revision).
	ErrNotFound = errors.New("not found")
	// ErrConflict: the precondition (expected revision, must not exist)
	// does not hold; nothing was changed.
	ErrConflict = errors.New("conflict")
	// ErrClosed: the store is closed.
	ErrClosed = errors.New("store closed")
)

// Change describes who makes a change and why; it goes into the audit log.
// Its failed marks and side state are written in the same transaction as
// the revision: either all of it is durable or none of it is.
type Change struct {
	// Subject is the authenticated caller (a token's subject).
	Subject string
	// Action names the operation: "put", "weights", "rollback", "delete",
	// "canary-rollback", ...
	Action string
	// Reason is free text from the caller (optional).
	Reason string
	// MarkFailed marks versions of the model failed, version -> why (a
	// canary rolled back or was aborted).
	MarkFailed map[string]string
	// ClearFailed removes versions' failed marks (a canary reset).
	ClearFailed []string
	// Side, when set, replaces the model's side state of its kind.
	Side *Side
}

// Side is a component's own state about one model, kept with the desired
// state so that the two cannot disagree: the canary controller's run
// (Kind "canary"). A nil Value deletes it.
type Side struct {
	Kind  string
	Value []byte
}

// SideRecord is a stored side value.
type SideRecord struct {
	Value []byte `json:"value"`
	// Revision is the revision written in the same transaction (0: written
	// alone, by UpdateSide).
	Revision int64 `json:"revision,omitempty"`
}

// Precondition guards a write. The zero value writes unconditionally.
type Precondition struct {
	// IfRevision, when > 0, requires the model's current revision to equal
	// it (If-Match).
	IfRevision int64
	// MustNotExist requires that the model does not exist (create only;
	// If-None-Match: *).
	MustNotExist bool
	// MustExist requires that the model exists (If-Match: *).
	MustExist bool
}

// AuditQuery selects audit entries, newest first.
type AuditQuery struct {
	// Model restricts to one model ("" for all).
	Model string
	// Before returns entries with Revision < Before (0: from the newest),
	// for paging.
	Before int64
	// Limit caps the number of entries (0: 100).
	Limit int
}

// Store is the desired-state store.
type Store interface {
	// Get returns the current record of a model, or ErrNotFound.
	Get(ctx context.Context, name string) (api.Record, error)
	// List returns every current model sorted by name, and the store
	// revision the list reflects.
	List(ctx context.Context) ([]api.Record, int64, error)
	// Put validates m (defaults applied by the caller) and stores it as a
	// new revision if the precondition holds (else ErrConflict, nothing
	// changed). It returns once the change is durable.
	Put(ctx context.Context, m api.Model, pre Precondition, ch Change) (api.Record, error)
	// Delete removes a model if the precondition holds; its history stays.
	Delete(ctx context.Context, name string, pre Precondition, ch Change) (api.Record, error)
	// History returns the revisions of a model, newest first, including
	// tombstones of deletions (limit 0: all kept).
	History(ctx context.Context, name string, limit int) ([]api.Record, error)
	// Revision returns one revision of a model from its history, or
	// ErrNotFound.
	Revision(ctx context.Context, name string, rev int64) (api.Record, error)
	// Audit returns audit entries, newest first.
	Audit(ctx context.Context, q AuditQuery) ([]api.AuditEntry, error)
	// Failed returns the model's failed marks by version (empty: none).
	Failed(ctx context.Context, name string) (map[string]api.FailedMark, error)
	// Side returns every model's side state of kind, by model name.
	Side(ctx context.Context, kind string) (map[string]SideRecord, error)
	// UpdateSide writes ch.Side and ch's failed marks for model name in one
	// durable transaction without a new revision (no history, no audit
	// entry): bookkeeping that changes no document.
	UpdateSide(ctx context.Context, name string, ch Change) error
	// Watch returns a channel that receives the store revision now and
	// after every change, until ctx is done (then it is closed).
	// Revisions may be coalesced: a slow reader sees only the newest, and
	// re-reads the state with List.
	Watch(ctx context.Context) <-chan int64
	// Close releases the store. Watch channels are closed.
	Close() error
}
