package store

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/switchyard-dev/switchyard/api"
)

var (
	bucketMeta    = []byte("meta")
	bucketModels  = []byte("models")
	bucketHistory = []byte("history")
	bucketAudit   = []byte("audit")
	bucketFailed  = []byte("failed") // model -> version -> FailedMark
	bucketSide    = []byte("side")   // kind -> model -> SideRecord
	keyRevision   = []byte("revision")
)

// DefaultHistoryLimit is how many revisions per model Bolt keeps.
const DefaultHistoryLimit = 100

// BoltOptions tune a Bolt store.
type BoltOptions struct {
	// HistoryLimit is the number of revisions kept per model (0: 100).
	HistoryLimit int
	// Now is the clock for record and audit times (nil: time.Now).
	Now func() time.Time
	// OpenTimeout bounds waiting for the file lock held by another process
	// (0: 2s).
	OpenTimeout time.Duration
}

// Bolt is the embedded Store: one bbolt file. Every write is one bbolt
// transaction, fsynced before Put/Delete return, so an acknowledged change
// survives a crash (kill -9, power loss on a disk that honours fsync).
type Bolt struct {
	db    *bolt.DB
	opts  BoltOptions
	mu    sync.Mutex // guards watchers and closed
	watch map[chan int64]struct{}
	done  chan struct{}
	once  sync.Once
}

var _ Store = (*Bolt)(nil)

// OpenBolt opens (creating if needed) the store file at path.
func OpenBolt(path string, opts BoltOptions) (*Bolt, error) {
	if opts.HistoryLimit <= 0 {
		opts.HistoryLimit = DefaultHistoryLimit
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.OpenTimeout <= 0 {
		opts.OpenTimeout = 2 * time.Second
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: opts.OpenTimeout})
	if err != nil {
		return nil, fmt.Errorf("open state file %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketMeta, bucketModels, bucketHistory, bucketAudit, bucketFailed, bucketSide} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("init state file %s: %w", path, err)
	}
	return &Bolt{db: db, opts: opts, watch: map[chan int64]struct{}{}, done: make(chan struct{})}, nil
}

// Path is the file the store lives in.
func (s *Bolt) Path() string { return s.db.Path() }

func revKey(rev int64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(rev))
	return b[:]
}

func currentRevision(tx *bolt.Tx) int64 {
	v := tx.Bucket(bucketMeta).Get(keyRevision)
	if len(v) != 8 {
		return 0
	}
	return int64(binary.BigEndian.Uint64(v))
}

func getRecord(tx *bolt.Tx, name string) (api.Record, bool, error) {
	v := tx.Bucket(bucketModels).Get([]byte(name))
	if v == nil {
		return api.Record{}, false, nil
	}
	var r api.Record
	if err := json.Unmarshal(v, &r); err != nil {
		return api.Record{}, false, fmt.Errorf("decode model %q: %w", name, err)
	}
	return r, true, nil
}

func (s *Bolt) closed() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// Get implements Store.
func (s *Bolt) Get(ctx context.Context, name string) (api.Record, error) {
	if s.closed() {
		return api.Record{}, ErrClosed
	}
	var r api.Record
	err := s.db.View(func(tx *bolt.Tx) error {
		var ok bool
		var err error
		r, ok, err = getRecord(tx, name)
		if err == nil && !ok {
			err = fmt.Errorf("model %q: %w", name, ErrNotFound)
		}
		return err
	})
	return r, err
}

// List implements Store.
func (s *Bolt) List(ctx context.Context) ([]api.Record, int64, error) {
	if s.closed() {
		return nil, 0, ErrClosed
	}
	var out []api.Record
	var rev int64
	err := s.db.View(func(tx *bolt.Tx) error {
		rev = currentRevision(tx)
		return tx.Bucket(bucketModels).ForEach(func(k, v []byte) error {
			var r api.Record
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("decode model %q: %w", k, err)
			}
			out = append(out, r)
			return nil
		})
	})
	return out, rev, err
}

func checkPre(name string, cur api.Record, exists bool, pre Precondition) error {
	switch {
	case pre.MustNotExist && exists:
		return fmt.Errorf("model %q exists (revision %d): %w", name, cur.Revision, ErrConflict)
	case pre.MustExist && !exists:
		return fmt.Errorf("model %q does not exist: %w", name, ErrConflict)
	case pre.IfRevision > 0 && !exists:
		return fmt.Errorf("model %q does not exist, want revision %d: %w", name, pre.IfRevision, ErrConflict)
	case pre.IfRevision > 0 && cur.Revision != pre.IfRevision:
		return fmt.Errorf("model %q is at revision %d, not %d: %w", name, cur.Revision, pre.IfRevision, ErrConflict)
	}
	return nil
}

// Put implements Store.
func (s *Bolt) Put(ctx context.Context, m api.Model, pre Precondition, ch Change) (api.Record, error) {
	if err := m.Validate(); err != nil {
		return api.Record{}, err
	}
	if ch.Action == "" {
		ch.Action = "put"
	}
	return s.write(m.Metadata.Name, pre, ch, func(cur api.Record, exists bool, rec *api.Record) {
		rec.Model = m.Clone()
		rec.CreateRevision = rec.Revision
		if exists {
			rec.CreateRevision = cur.CreateRevision
		}
	})
}

// Delete implements Store.
func (s *Bolt) Delete(ctx context.Context, name string, pre Precondition, ch Change) (api.Record, error) {
	if ch.Action == "" {
		ch.Action = "delete"
	}
	return s.write(name, pre, ch, func(cur api.Record, exists bool, rec *api.Record) {
		rec.Model = cur.Model
		rec.CreateRevision = cur.CreateRevision
		rec.Deleted = true
	})
}

// write runs one change in one transaction: precondition, new revision,
// current record, history, audit.
func (s *Bolt) write(name string, pre Precondition, ch Change, fill func(cur api.Record, exists bool, rec *api.Record)) (api.Record, error) {
	if s.closed() {
		return api.Record{}, ErrClosed
	}
	var rec api.Record
	err := s.db.Update(func(tx *bolt.Tx) error {
		cur, exists, err := getRecord(tx, name)
		if err != nil {
			return err
		}
		if err := checkPre(name, cur, exists, pre); err != nil {
			return err
		}
		deleting := false
		rec = api.Record{Time: s.opts.Now().UTC(), Subject: ch.Subject, Action: ch.Action, Reason: ch.Reason}
		rec.Revision = currentRevision(tx) + 1
		fill(cur, exists, &rec)
		deleting = rec.Deleted
		if deleting && !exists {
			return fmt.Errorf("model %q: %w", name, ErrNotFound)
		}
		val, err := json.Marshal(rec)
		if err != nil {
			return err
		}
		if deleting {
			err = tx.Bucket(bucketModels).Delete([]byte(name))
		} else {
			err = tx.Bucket(bucketModels).Put([]byte(name), val)
		}
		if err != nil {
			return err
		}
		hist, err := tx.Bucket(bucketHistory).CreateBucketIfNotExists([]byte(name))
		if err != nil {
			return err
		}
		if err := hist.Put(revKey(rec.Revision), val); err != nil {
			return err
		}
		if err := trim(hist, s.opts.HistoryLimit); err != nil {
			return err
		}
		entry := api.AuditEntry{Revision: rec.Revision, Time: rec.Time, Subject: ch.Subject, Action: ch.Action, Model: name, Reason: ch.Reason}
		if exists {
			before := cur.Model
			entry.Before = &before
		}
		if !deleting {
			after := rec.Model
			entry.After = &after
		}
		av, err := json.Marshal(entry)
		if err != nil {
			return err
		}
		if err := tx.Bucket(bucketAudit).Put(revKey(rec.Revision), av); err != nil {
			return err
		}
		if err := s.writeExtras(tx, name, ch, rec.Revision, rec.Time); err != nil {
			return err
		}
		return tx.Bucket(bucketMeta).Put(keyRevision, revKey(rec.Revision))
	})
	if err != nil {
		return api.Record{}, err
	}
	s.notify(rec.Revision)
	return rec, nil
}

// writeExtras writes a change's failed marks and side state in tx; rev is
// the revision written with them (0: none).
func (s *Bolt) writeExtras(tx *bolt.Tx, name string, ch Change, rev int64, at time.Time) error {
	if len(ch.MarkFailed) > 0 || len(ch.ClearFailed) > 0 {
		fb, err := tx.Bucket(bucketFailed).CreateBucketIfNotExists([]byte(name))
		if err != nil {
			return err
		}
		for _, v := range ch.ClearFailed {
			if err := fb.Delete([]byte(v)); err != nil {
				return err
			}
		}
		for v, why := range ch.MarkFailed {
			val, err := json.Marshal(api.FailedMark{Version: v, Time: at, Subject: ch.Subject, Reason: why, Revision: rev})
			if err != nil {
				return err
			}
			if err := fb.Put([]byte(v), val); err != nil {
				return err
			}
		}
	}
	if sd := ch.Side; sd != nil {
		if sd.Kind == "" {
			return errors.New("side state without a kind")
		}
		kb, err := tx.Bucket(bucketSide).CreateBucketIfNotExists([]byte(sd.Kind))
		if err != nil {
			return err
		}
		if sd.Value == nil {
			return kb.Delete([]byte(name))
		}
		val, err := json.Marshal(SideRecord{Value: sd.Value, Revision: rev})
		if err != nil {
			return err
		}
		return kb.Put([]byte(name), val)
	}
	return nil
}

// UpdateSide implements Store.
func (s *Bolt) UpdateSide(ctx context.Context, name string, ch Change) error {
	if s.closed() {
		return ErrClosed
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		return s.writeExtras(tx, name, ch, 0, s.opts.Now().UTC())
	})
}

// Failed implements Store.
func (s *Bolt) Failed(ctx context.Context, name string) (map[string]api.FailedMark, error) {
	if s.closed() {
		return nil, ErrClosed
	}
	out := map[string]api.FailedMark{}
	err := s.db.View(func(tx *bolt.Tx) error {
		fb := tx.Bucket(bucketFailed).Bucket([]byte(name))
		if fb == nil {
			return nil
		}
		return fb.ForEach(func(k, v []byte) error {
			var m api.FailedMark
			if err := json.Unmarshal(v, &m); err != nil {
				return fmt.Errorf("decode failed mark %s of %q: %w", k, name, err)
			}
			out[string(k)] = m
			return nil
		})
	})
	return out, err
}

// Side implements Store.
func (s *Bolt) Side(ctx context.Context, kind string) (map[string]SideRecord, error) {
	if s.closed() {
		return nil, ErrClosed
	}
	out := map[string]SideRecord{}
	err := s.db.View(func(tx *bolt.Tx) error {
		kb := tx.Bucket(bucketSide).Bucket([]byte(kind))
		if kb == nil {
			return nil
		}
		return kb.ForEach(func(k, v []byte) error {
			var r SideRecord
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("decode %s state of %q: %w", kind, k, err)
			}
			out[string(k)] = r
			return nil
		})
	})
	return out, err
}

func trim(b *bolt.Bucket, limit int) error {
	n := 0
	c := b.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		n++
	}
	for k, _ := c.First(); k != nil && n > limit; k, _ = c.Next() {
		if err := c.Delete(); err != nil {
			return err
		}
		n--
	}
	return nil
}

// History implements Store.
func (s *Bolt) History(ctx context.Context, name string, limit int) ([]api.Record, error) {
	if s.closed() {
		return nil, ErrClosed
	}
	var out []api.Record
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketHistory).Bucket([]byte(name))
		if b == nil {
			return fmt.Errorf("model %q: %w", name, ErrNotFound)
		}
		c := b.Cursor()
		for k, v := c.Last(); k != nil && (limit <= 0 || len(out) < limit); k, v = c.Prev() {
			var r api.Record
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("decode history of %q: %w", name, err)
			}
			out = append(out, r)
		}
		return nil
	})
	return out, err
}

// Revision implements Store.
func (s *Bolt) Revision(ctx context.Context, name string, rev int64) (api.Record, error) {
	if s.closed() {
		return api.Record{}, ErrClosed
	}
	var r api.Record
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketHistory).Bucket([]byte(name))
		var v []byte
		if b != nil && rev > 0 {
			v = b.Get(revKey(rev))
		}
		if v == nil {
			return fmt.Errorf("model %q revision %d: %w", name, rev, ErrNotFound)
		}
		return json.Unmarshal(v, &r)
	})
	return r, err
}

// Audit implements Store.
func (s *Bolt) Audit(ctx context.Context, q AuditQuery) ([]api.AuditEntry, error) {
	if s.closed() {
		return nil, ErrClosed
	}
	if q.Limit <= 0 {
		q.Limit = 100
	}
	var out []api.AuditEntry
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketAudit).Cursor()
		var k, v []byte
		if q.Before > 0 {
			// Seek finds the first key >= Before; the one before it is the
			// newest wanted. No such key: every entry is older.
			if k, _ = c.Seek(revKey(q.Before)); k == nil {
				k, v = c.Last()
			} else {
				k, v = c.Prev()
			}
		} else {
			k, v = c.Last()
		}
		for ; k != nil && len(out) < q.Limit; k, v = c.Prev() {
			var e api.AuditEntry
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("decode audit entry: %w", err)
			}
			if q.Model != "" && e.Model != q.Model {
				continue
			}
			out = append(out, e)
		}
		return nil
	})
	return out, err
}

// Watch implements Store.
func (s *Bolt) Watch(ctx context.Context) <-chan int64 {
	ch := make(chan int64, 1)
	s.mu.Lock()
	if s.closed() {
		s.mu.Unlock()
		close(ch)
		return ch
	}
	s.watch[ch] = struct{}{}
	s.mu.Unlock()
	var rev int64
	_ = s.db.View(func(tx *bolt.Tx) error { rev = currentRevision(tx); return nil })
	s.send(ch, rev)
	go func() {
		select {
		case <-ctx.Done():
		case <-s.done:
		}
		s.mu.Lock()
		if _, ok := s.watch[ch]; ok {
			delete(s.watch, ch)
			close(ch)
		}
		s.mu.Unlock()
	}()
	return ch
}

func (s *Bolt) notify(rev int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ch := range s.watch {
		sendLatest(ch, rev)
	}
}

func (s *Bolt) send(ch chan int64, rev int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.watch[ch]; ok {
		sendLatest(ch, rev)
	}
}

// sendLatest leaves the newest revision in a 1-buffered channel without
// blocking. Callers hold s.mu, so they are the only senders.
func sendLatest(ch chan int64, rev int64) {
	for {
		select {
		case ch <- rev:
			return
		default:
		}
		select {
		case old := <-ch:
			if old > rev {
				rev = old
			}
		default:
		}
	}
}

// Close implements Store.
func (s *Bolt) Close() error {
	var err error
	s.once.Do(func() {
		s.mu.Lock()
		close(s.done)
		for ch := range s.watch {
			delete(s.watch, ch)
			close(ch)
		}
		s.mu.Unlock()
		err = s.db.Close()
	})
	if err != nil {
		return err
	}
	return nil
}

// IsConflict reports whether err is ErrConflict.
func IsConflict(err error) bool { return errors.Is(err, ErrConflict) }
