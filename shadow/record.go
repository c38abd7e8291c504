package shadow

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/switchyard-dev/switchyard/oip"
)

// Kinds of mirrored call.
const (
	KindShadow     = "shadow"      // the shadow version vs the primary
	KindNoiseFloor = "noise_floor" // a second call of the primary version vs the primary
)

// Record is one compared pair, one line of the JSON-lines record file. The
// schema is documented in the package doc.
type Record struct {
	Time           time.Time    `json:"time"`
	RequestID      string       `json:"request_id,omitempty"`
	Model          string       `json:"model"`
	PrimaryVersion string       `json:"primary_version"`
	ShadowVersion  string       `json:"shadow_version"`
	Kind           string       `json:"kind"`
	InputDigest    string       `json:"input_digest,omitempty"`
	Weight         float64      `json:"weight"`
	Agree          bool         `json:"agree"`
	Reason         string       `json:"reason,omitempty"`
	Primary        Side         `json:"primary"`
	Shadow         Side         `json:"shadow"`
	Diff           []OutputDiff `json:"diff,omitempty"`
}

// Side summarises one answer.
type Side struct {
	LatencyMS float64         `json:"latency_ms"`
	Error     string          `json:"error,omitempty"`
	NaN       bool            `json:"nan,omitempty"`
	Outputs   []OutputSummary `json:"outputs,omitempty"`
}

// OutputSummary is a compact view of one output tensor: for floating-point
// outputs with a last dimension > 1, the top indices of each row (at most
// 8 rows, at most 10 indices); otherwise the first values (at most 8).
type OutputSummary struct {
	Name     string    `json:"name"`
	Datatype string    `json:"datatype"`
	Shape    []int64   `json:"shape"`
	Top      [][]int   `json:"top,omitempty"`
	Head     []float64 `json:"head,omitempty"`
	Strings  []string  `json:"strings,omitempty"`
}

const (
	summaryRows = 8
	summaryTop  = 10
	summaryHead = 8
)

// Summarise builds the output summaries of a response (nil: none).
func Summarise(r *oip.InferResponse) []OutputSummary {
	if r == nil {
		return nil
	}
	out := make([]OutputSummary, 0, len(r.Outputs))
	for i := range r.Outputs {
		t := &r.Outputs[i]
		s := OutputSummary{Name: t.Name, Datatype: string(t.Datatype), Shape: t.Shape}
		switch {
		case t.Datatype == oip.BYTES:
			el, _ := t.BytesElements()
			for j := 0; j < len(el) && j < summaryHead; j++ {
				s.Strings = append(s.Strings, string(el[j]))
			}
		default:
			v, err := t.Float64s()
			if err != nil {
				break
			}
			c := rowLen(t.Shape, len(v))
			if t.Datatype.IsFloat() && c > 1 && !anyNaN(v) { // NaN/Inf are not ranked: the head shows them (as 0, Side.NaN set)
				for row := 0; row < len(v)/c && row < summaryRows; row++ {
					s.Top = append(s.Top, topK(nil, v[row*c:(row+1)*c], min(summaryTop, c)))
				}
				break
			}
			for j := 0; j < len(v) && j < summaryHead; j++ {
				if math.IsNaN(v[j]) || math.IsInf(v[j], 0) {
					v[j] = 0 // JSON cannot carry them; Side.NaN says so
				}
				s.Head = append(s.Head, v[j])
			}
		}
		out = append(out, s)
	}
	return out
}

// InputDigest is the hex SHA-256 of the request's canonical form (the same
// hash the prediction cache keys on), or "" if the request is invalid.
func InputDigest(req *oip.InferRequest) string {
	if req == nil {
		return ""
	}
	c, err := oip.AppendCanonical(nil, req, nil)
	if err != nil {
		return ""
	}
	h := sha256.Sum256(c)
	return hex.EncodeToString(h[:])
}

// RecordSink receives records to keep.
type RecordSink interface {
	Write(Record) error
}

// RotatingWriter appends records as JSON lines to Path; when the file would
// grow beyond MaxBytes it is renamed Path.1 (Path.1 to Path.2, and so on)
// and a new Path is started; at most Keep rotated files are kept. Safe for
// concurrent use.
type RotatingWriter struct {
	path     string
	maxBytes int64
	keep     int

	mu   sync.Mutex
	f    *os.File
	w    *bufio.Writer
	size int64
}

var _ RecordSink = (*RotatingWriter)(nil)

// NewRotatingWriter opens (appending) path. maxBytes <= 0 means 64 MiB;
// keep < 0 means 0.
func NewRotatingWriter(path string, maxBytes int64, keep int) (*RotatingWriter, error) {
	if maxBytes <= 0 {
		maxBytes = 64 << 20
	}
	w := &RotatingWriter{path: path, maxBytes: maxBytes, keep: max(keep, 0)}
	if err := w.open(); err != nil {
		return nil, err
	}
	return w, nil
}

func (w *RotatingWriter) open() error {
	f, err := os.OpenFile(w.path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open shadow record file: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("stat shadow record file: %w", err)
	}
	w.f, w.w, w.size = f, bufio.NewWriterSize(f, 64<<10), st.Size()
	return nil
}

// Write appends one record.
func (w *RotatingWriter) Write(r Record) error {
	line, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode shadow record: %w", err)
	}
	line = append(line, '\n')
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return errors.New("shadow record file is closed")
	}
	if w.size > 0 && w.size+int64(len(line)) > w.maxBytes {
		if err := w.rotate(); err != nil {
			return err
		}
	}
	n, err := w.w.Write(line)
	w.size += int64(n)
	if err != nil {
		return fmt.Errorf("write shadow record: %w", err)
	}
	return nil
}

func (w *RotatingWriter) rotate() error {
	if err := w.closeFile(); err != nil {
		return err
	}
	if w.keep == 0 {
		if err := os.Remove(w.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("rotate shadow records: %w", err)
		}
		return w.open()
	}
	_ = os.Remove(w.path + "." + strconv.Itoa(w.keep))
	for i := w.keep - 1; i >= 1; i-- {
		err := os.Rename(w.path+"."+strconv.Itoa(i), w.path+"."+strconv.Itoa(i+1))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("rotate shadow records: %w", err)
		}
	}
	if err := os.Rename(w.path, w.path+".1"); err != nil {
		return fmt.Errorf("rotate shadow records: %w", err)
	}
	return w.open()
}

func (w *RotatingWriter) closeFile() error {
	if w.f == nil {
		return nil
	}
	err := w.w.Flush()
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	w.f, w.w = nil, nil
	if err != nil {
		return fmt.Errorf("close shadow record file: %w", err)
	}
	return nil
}

// Flush writes buffered records to the file.
func (w *RotatingWriter) Flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.w == nil {
		return nil
	}
	return w.w.Flush()
}

// Close flushes and closes the file.
func (w *RotatingWriter) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.closeFile()
}

// ReadRecords reads the records of path and its rotated files (path.N ...
// path.1, then path: oldest first), keeping those with from <= Time < to (a
// zero bound is open). Lines that do not parse are skipped and counted.
func ReadRecords(path string, from, to time.Time) (recs []Record, skipped int, err error) {
	files := []string{path}
	for i := 1; ; i++ {
		p := path + "." + strconv.Itoa(i)
		if _, err := os.Stat(p); err != nil {
			break
		}
		files = append([]string{p}, files...)
	}
	for _, p := range files {
		f, err := os.Open(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return recs, skipped, fmt.Errorf("read shadow records: %w", err)
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			var r Record
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				skipped++
				continue
			}
			if inWindow(r.Time, from, to) {
				recs = append(recs, r)
			}
		}
		err = sc.Err()
		f.Close()
		if err != nil {
			return recs, skipped, fmt.Errorf("read shadow records %s: %w", p, err)
		}
	}
	return recs, skipped, nil
}

func inWindow(t, from, to time.Time) bool {
	return (from.IsZero() || !t.Before(from)) && (to.IsZero() || t.Before(to))
}
