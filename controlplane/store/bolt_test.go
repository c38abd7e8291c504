package store

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/switchyard-dev/switchyard/api"
)

func TestMain(m *testing.M) {
	if os.Getenv(crashChildEnv) != "" {
		os.Exit(crashChild(os.Getenv(crashChildEnv)))
	}
	goleak.VerifyTestMain(m)
}

func testModel(name string, w1 int) api.Model {
	m := api.Model{
		Metadata: api.Metadata{Name: name},
		Spec: api.Spec{
			Versions: []api.Version{
				{Name: "v1", Endpoints: []string{"127.0.0.1:8001"}},
				{Name: "v2", Endpoints: []string{"127.0.0.1:8002"}},
			},
			Traffic: api.Traffic{Weights: map[string]int{"v1": w1, "v2": 10}},
		},
	}
	m.Defaults()
	return m
}

func openTest(t *testing.T) *Bolt {
	t.Helper()
	s, err := OpenBolt(filepath.Join(t.TempDir(), "state.db"), BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestPutGetListDelete(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	alice := Change{Subject: "alice", Reason: "first"}
	r1, err := s.Put(ctx, testModel("a", 1), Precondition{MustNotExist: true}, alice)
	if err != nil {
		t.Fatal(err)
	}
	if r1.Revision != 1 || r1.CreateRevision != 1 || r1.Subject != "alice" || r1.Action != "put" {
		t.Fatalf("record %+v", r1)
	}
	if _, err := s.Put(ctx, testModel("a", 2), Precondition{MustNotExist: true}, alice); !errors.Is(err, ErrConflict) {
		t.Fatalf("create over existing: want ErrConflict, got %v", err)
	}
	r2, err := s.Put(ctx, testModel("b", 5), Precondition{}, alice)
	if err != nil || r2.Revision != 2 {
		t.Fatalf("put b: %+v %v", r2, err)
	}
	r3, err := s.Put(ctx, testModel("a", 3), Precondition{IfRevision: 1}, alice)
	if err != nil || r3.Revision != 3 || r3.CreateRevision != 1 {
		t.Fatalf("update a: %+v %v", r3, err)
	}
	if _, err := s.Put(ctx, testModel("a", 4), Precondition{IfRevision: 1}, alice); !errors.Is(err, ErrConflict) {
		t.Fatalf("stale revision: want ErrConflict, got %v", err)
	}
	got, err := s.Get(ctx, "a")
	if err != nil || got.Revision != 3 || got.Model.Spec.Traffic.Weights["v1"] != 3 {
		t.Fatalf("get a after stale write: %+v %v", got, err)
	}
	list, rev, err := s.List(ctx)
	if err != nil || rev != 3 || len(list) != 2 || list[0].Model.Metadata.Name != "a" || list[1].Model.Metadata.Name != "b" {
		t.Fatalf("list: rev %d %+v %v", rev, list, err)
	}
	if _, err := s.Delete(ctx, "a", Precondition{IfRevision: 1}, alice); !errors.Is(err, ErrConflict) {
		t.Fatalf("stale delete: want ErrConflict, got %v", err)
	}
	d, err := s.Delete(ctx, "a", Precondition{IfRevision: 3}, Change{Subject: "bob"})
	if err != nil || d.Revision != 4 || !d.Deleted || d.Action != "delete" {
		t.Fatalf("delete: %+v %v", d, err)
	}
	if _, err := s.Get(ctx, "a"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get deleted: want ErrNotFound, got %v", err)
	}
	if _, err := s.Delete(ctx, "a", Precondition{}, alice); !errors.Is(err, ErrNotFound) {
		t.Fatalf("delete missing: want ErrNotFound, got %v", err)
	}
	h, err := s.History(ctx, "a", 0)
	if err != nil || len(h) != 3 || h[0].Revision != 4 || !h[0].Deleted || h[1].Revision != 3 || h[2].Revision != 1 {
		t.Fatalf("history: %+v %v", h, err)
	}
	if old, err := s.Revision(ctx, "a", 1); err != nil || old.Model.Spec.Traffic.Weights["v1"] != 1 {
		t.Fatalf("revision 1: %+v %v", old, err)
	}
	if _, err := s.Revision(ctx, "a", 2); !errors.Is(err, ErrNotFound) {
		t.Fatalf("revision of another model: want ErrNotFound, got %v", err)
	}
	// Recreate after delete: a new CreateRevision.
	r5, err := s.Put(ctx, testModel("a", 9), Precondition{MustNotExist: true}, alice)
	if err != nil || r5.CreateRevision != 5 {
		t.Fatalf("recreate: %+v %v", r5, err)
	}
}

func TestPutValidates(t *testing.T) {
	s := openTest(t)
	m := testModel("a", 1)
	m.Spec.Traffic.Weights["v9"] = 1
	_, err := s.Put(context.Background(), m, Precondition{}, Change{})
	var ve api.ValidationError
	if !errors.As(err, &ve) || !strings.Contains(err.Error(), "spec.traffic.weights.v9") {
		t.Fatalf("want ValidationError, got %v", err)
	}
	if _, rev, _ := s.List(context.Background()); rev != 0 {
		t.Fatalf("invalid model changed the revision to %d", rev)
	}
}

func TestAudit(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	s.opts.Now = func() time.Time { return now }
	for i := 1; i <= 5; i++ {
		if _, err := s.Put(ctx, testModel("a", i), Precondition{}, Change{Subject: "alice", Action: "weights", Reason: fmt.Sprint("step ", i)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Put(ctx, testModel("b", 1), Precondition{}, Change{Subject: "bob"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Delete(ctx, "b", Precondition{}, Change{Subject: "carol", Reason: "gone"}); err != nil {
		t.Fatal(err)
	}
	all, err := s.Audit(ctx, AuditQuery{})
	if err != nil || len(all) != 7 {
		t.Fatalf("audit: %d %v", len(all), err)
	}
	del := all[0]
	if del.Revision != 7 || del.Action != "delete" || del.Subject != "carol" || del.Reason != "gone" || del.After != nil || del.Before == nil || del.Before.Metadata.Name != "b" || !del.Time.Equal(now) {
		t.Fatalf("delete entry %+v", del)
	}
	create := all[1]
	if create.Before != nil || create.After == nil || create.Action != "put" {
		t.Fatalf("create entry %+v", create)
	}
	upd := all[2]
	if upd.Revision != 5 || upd.Before.Spec.Traffic.Weights["v1"] != 4 || upd.After.Spec.Traffic.Weights["v1"] != 5 || upd.Reason != "step 5" {
		t.Fatalf("update entry %+v", upd)
	}
	page, err := s.Audit(ctx, AuditQuery{Model: "a", Before: 4, Limit: 2})
	if err != nil || len(page) != 2 || page[0].Revision != 3 || page[1].Revision != 2 {
		t.Fatalf("page: %+v %v", page, err)
	}
	if past, _ := s.Audit(ctx, AuditQuery{Before: 100, Limit: 1}); len(past) != 1 || past[0].Revision != 7 {
		t.Fatalf("before past the end: %+v", past)
	}
}

func TestHistoryLimit(t *testing.T) {
	ctx := context.Background()
	s, err := OpenBolt(filepath.Join(t.TempDir(), "s.db"), BoltOptions{HistoryLimit: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := 1; i <= 6; i++ {
		if _, err := s.Put(ctx, testModel("a", i), Precondition{}, Change{}); err != nil {
			t.Fatal(err)
		}
	}
	h, err := s.History(ctx, "a", 0)
	if err != nil || len(h) != 3 || h[0].Revision != 6 || h[2].Revision != 4 {
		t.Fatalf("history %+v %v", h, err)
	}
	if h2, _ := s.History(ctx, "a", 1); len(h2) != 1 {
		t.Fatalf("limit 1: %d", len(h2))
	}
	if _, err := s.History(ctx, "zzz", 0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown model history: %v", err)
	}
}

func TestWatch(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	s := openTest(t)
	if _, err := s.Put(ctx, testModel("a", 1), Precondition{}, Change{}); err != nil {
		t.Fatal(err)
	}
	w := s.Watch(ctx)
	if rev := <-w; rev != 1 {
		t.Fatalf("initial revision %d", rev)
	}
	for i := 2; i <= 4; i++ { // nobody reads: coalesced to the newest
		if _, err := s.Put(ctx, testModel("a", i), Precondition{}, Change{}); err != nil {
			t.Fatal(err)
		}
	}
	if rev := <-w; rev != 4 {
		t.Fatalf("coalesced revision %d, want 4", rev)
	}
	if _, err := s.Delete(ctx, "a", Precondition{}, Change{}); err != nil {
		t.Fatal(err)
	}
	if rev := <-w; rev != 5 {
		t.Fatalf("after delete %d", rev)
	}
	cancel()
	for range w { // closed once ctx is done
	}
	w2 := s.Watch(context.Background())
	<-w2
	s.Close()
	for range w2 { // closed by Close
	}
	if _, err := s.Get(context.Background(), "a"); !errors.Is(err, ErrClosed) {
		t.Fatalf("get after close: %v", err)
	}
}

func TestConcurrentCompareAndSwap(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	if _, err := s.Put(ctx, testModel("a", 0), Precondition{}, Change{}); err != nil {
		t.Fatal(err)
	}
	const writers, each = 4, 10
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for done := 0; done < each; {
				cur, err := s.Get(ctx, "a")
				if err != nil {
					t.Error(err)
					return
				}
				m := cur.Model
				m.Spec.Traffic.Weights["v1"]++
				if _, err := s.Put(ctx, m, Precondition{IfRevision: cur.Revision}, Change{}); errors.Is(err, ErrConflict) {
					continue
				} else if err != nil {
					t.Error(err)
					return
				}
				done++
			}
		}()
	}
	wg.Wait()
	got, _ := s.Get(ctx, "a")
	if w := got.Model.Spec.Traffic.Weights["v1"]; w != writers*each {
		t.Fatalf("lost updates: weight %d, want %d", w, writers*each)
	}
}

func TestReopenKeepsState(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "s.db")
	s, err := OpenBolt(path, BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, testModel("a", 7), Precondition{}, Change{Subject: "x"}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = OpenBolt(path, BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r, err := s.Get(ctx, "a")
	if err != nil || r.Revision != 1 || r.Model.Spec.Traffic.Weights["v1"] != 7 {
		t.Fatalf("after reopen: %+v %v", r, err)
	}
	if r2, err := s.Put(ctx, testModel("a", 8), Precondition{}, Change{}); err != nil || r2.Revision != 2 {
		t.Fatalf("revision after reopen: %+v %v", r2, err)
	}
}

const crashChildEnv = "SWITCHYARD_STORE_CRASH_CHILD"

// crashChild writes revisions as fast as it can and prints "ack N REV" after
// each Put returns (i.e. once it is durable). The parent kills it with
// SIGKILL at an arbitrary point.
func crashChild(path string) int {
	s, err := OpenBolt(path, BoltOptions{HistoryLimit: 100000})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	out := bufio.NewWriter(os.Stdout)
	ctx := context.Background()
	start, _ := strconv.Atoi(os.Getenv("SWITCHYARD_STORE_CRASH_START"))
	deadline := time.Now().Add(30 * time.Second)
	for i := start; i < start+5000 && time.Now().Before(deadline); i++ {
		r, err := s.Put(ctx, testModel("crash", 1+i%api.MaxWeight), Precondition{}, Change{Subject: "child", Reason: strconv.Itoa(i)})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Fprintf(out, "ack %d %d\n", i, r.Revision)
		out.Flush()
	}
	return 0
}

// TestCrashLosesNoAcknowledgedChange kills a writer process with SIGKILL in
// the middle of its writes, three times, and checks that every change it
// acknowledged is in the reopened store.
func TestCrashLosesNoAcknowledgedChange(t *testing.T) {
	path := filepath.Join(t.TempDir(), "crash.db")
	acked := map[int64]int{} // revision -> i
	next := 0
	for round := 0; round < 3; round++ {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), crashChildEnv+"="+path, "SWITCHYARD_STORE_CRASH_START="+strconv.Itoa(next))
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(stdout)
		killAfter := 20 + round*15
		n, killed := 0, false
		for sc.Scan() {
			var i int
			var rev int64
			if _, err := fmt.Sscanf(sc.Text(), "ack %d %d", &i, &rev); err != nil {
				t.Fatalf("child said %q", sc.Text())
			}
			acked[rev] = i
			next = i + 1
			if n++; n == killAfter && !killed {
				if err := cmd.Process.Kill(); err != nil { // SIGKILL
					t.Fatal(err)
				}
				killed = true
			}
		}
		err = cmd.Wait()
		if !killed {
			t.Fatalf("child finished before it was killed: %v %s", err, stderr.String())
		}
		if n < killAfter {
			t.Fatalf("round %d: only %d acks: %s", round, n, stderr.String())
		}

		s, err := OpenBolt(path, BoltOptions{})
		if err != nil {
			t.Fatalf("round %d: reopen after kill -9: %v", round, err)
		}
		ctx := context.Background()
		cur, err := s.Get(ctx, "crash")
		if err != nil {
			t.Fatal(err)
		}
		var maxRev int64
		for rev := range acked {
			maxRev = max(maxRev, rev)
			r, err := s.Revision(ctx, "crash", rev)
			if err != nil {
				t.Fatalf("round %d: acknowledged revision %d lost: %v", round, rev, err)
			}
			if r.Reason != strconv.Itoa(acked[rev]) {
				t.Fatalf("revision %d holds change %q, want %d", rev, r.Reason, acked[rev])
			}
		}
		if cur.Revision < maxRev {
			t.Fatalf("round %d: current revision %d older than acknowledged %d", round, cur.Revision, maxRev)
		}
		audit, err := s.Audit(ctx, AuditQuery{Limit: 1})
		if err != nil || len(audit) != 1 || audit[0].Revision != cur.Revision {
			t.Fatalf("audit head %+v (current %d): %v", audit, cur.Revision, err)
		}
		s.Close()
	}
	t.Logf("%d acknowledged changes survived 3 kills", len(acked))
}

// TestFailedMarksStandApart: failed marks are their own record, written in
// the transaction of the revision that carries them; they outlive the
// trimmed history and the model's deletion, and only ClearFailed removes
// them (issue 15: failed versions were derived from the history).
func TestFailedMarksStandApart(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 11, 27, 1, 2, 3, 0, time.UTC)
	s, err := OpenBolt(filepath.Join(t.TempDir(), "s.db"), BoltOptions{HistoryLimit: 2, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Put(ctx, testModel("a", 90), Precondition{}, Change{Subject: "t"}); err != nil {
		t.Fatal(err)
	}
	if f, err := s.Failed(ctx, "a"); err != nil || len(f) != 0 {
		t.Fatalf("marks before any: %v %v", f, err)
	}
	rb, err := s.Put(ctx, testModel("a", 100), Precondition{}, Change{Subject: "canary-controller", Action: "canary-rollback", MarkFailed: map[string]string{"v2": "nan_rate 10%"}})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 4 { // the rollback revision leaves the history
		if _, err := s.Put(ctx, testModel("a", 10+i), Precondition{}, Change{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Delete(ctx, "a", Precondition{}, Change{}); err != nil {
		t.Fatal(err)
	}
	want := api.FailedMark{Version: "v2", Time: now, Subject: "canary-controller", Reason: "nan_rate 10%", Revision: rb.Revision}
	if f, err := s.Failed(ctx, "a"); err != nil || len(f) != 1 || f["v2"] != want {
		t.Fatalf("marks after trimming and deletion: %+v %v; want %+v", f, err, want)
	}
	if _, err := s.Put(ctx, testModel("a", 50), Precondition{}, Change{Action: "canary-reset", ClearFailed: []string{"v2"}}); err != nil {
		t.Fatal(err)
	}
	if f, _ := s.Failed(ctx, "a"); len(f) != 0 {
		t.Fatalf("marks after a reset: %+v", f)
	}
	if err := s.UpdateSide(ctx, "b", Change{MarkFailed: map[string]string{"v3": "aborted"}}); err != nil {
		t.Fatal(err)
	}
	if f, _ := s.Failed(ctx, "b"); f["v3"].Reason != "aborted" || f["v3"].Revision != 0 {
		t.Fatalf("a mark without a revision: %+v", f)
	}
}

// TestSideStateGoesWithItsRevision: side state written with a change
// records the revision of that change; written alone, none; a nil value
// deletes it; a failing change writes none of it.
func TestSideStateGoesWithItsRevision(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	r, err := s.Put(ctx, testModel("a", 1), Precondition{}, Change{Side: &Side{Kind: "canary", Value: []byte(`{"step":1}`)}})
	if err != nil {
		t.Fatal(err)
	}
	side, err := s.Side(ctx, "canary")
	if err != nil || string(side["a"].Value) != `{"step":1}` || side["a"].Revision != r.Revision {
		t.Fatalf("side after a put: %+v %v", side, err)
	}
	// A precondition that fails writes neither the document nor the side
	// state nor a mark.
	if _, err := s.Put(ctx, testModel("a", 2), Precondition{IfRevision: r.Revision + 7}, Change{Side: &Side{Kind: "canary", Value: []byte(`{"step":2}`)},
		MarkFailed: map[string]string{"v2": "x"}}); !errors.Is(err, ErrConflict) {
		t.Fatalf("stale put: %v", err)
	}
	if side, _ := s.Side(ctx, "canary"); string(side["a"].Value) != `{"step":1}` {
		t.Fatalf("a refused change wrote side state: %s", side["a"].Value)
	}
	if f, _ := s.Failed(ctx, "a"); len(f) != 0 {
		t.Fatalf("a refused change wrote a mark: %+v", f)
	}
	if err := s.UpdateSide(ctx, "a", Change{Side: &Side{Kind: "canary", Value: []byte(`{"step":3}`)}}); err != nil {
		t.Fatal(err)
	}
	if side, _ := s.Side(ctx, "canary"); string(side["a"].Value) != `{"step":3}` || side["a"].Revision != 0 {
		t.Fatalf("side written alone: %+v", side["a"])
	}
	if h, _ := s.History(ctx, "a", 0); len(h) != 1 {
		t.Fatalf("UpdateSide wrote a revision: %d in history", len(h))
	}
	if err := s.UpdateSide(ctx, "a", Change{Side: &Side{Kind: "canary"}}); err != nil {
		t.Fatal(err)
	}
	if side, _ := s.Side(ctx, "canary"); len(side) != 0 {
		t.Fatalf("deleted side state: %+v", side)
	}
}

// bigModel is a model document of about 110 KB (400 labels of 256
// characters): one change of it needs more new pages than a store's free
// pages hold, so on a full disk it cannot be written.
func bigModel(name string, w1 int) api.Model {
	m := testModel(name, w1)
	m.Metadata.Labels = map[string]string{}
	for i := range 400 {
		m.Metadata.Labels[fmt.Sprintf("l%03d", i)] = strings.Repeat(strconv.Itoa(i%10+w1%10), 256)
	}
	return m
}

// smallTmpfs mounts a tmpfs of size bytes on a fresh folder (as root; the
// test is skipped where mounting is not allowed) and unmounts it at the
// end.
func smallTmpfs(t *testing.T, size int) string {
	t.Helper()
	dir := t.TempDir()
	if err := syscall.Mount("switchyard-test", dir, "tmpfs", 0, fmt.Sprintf("size=%d", size)); err != nil {
		t.Skipf("cannot mount a tmpfs here (needs root): %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// fill writes a file in dir until the file system is full.
func fill(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 4096)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling %s: %v", dir, err)
			}
			return path
		}
	}
}

// TestFullDiskWritesNothing runs the store on a real 2 MiB tmpfs filled to
// the last block: a change fails with ENOSPC and leaves document, history,
// audit, marks and side state as they were (also after reopening); once
// there is space again the same change goes through.
func TestFullDiskWritesNothing(t *testing.T) {
	ctx := context.Background()
	dir := smallTmpfs(t, 2<<20)
	path := filepath.Join(dir, "state.db")
	s, err := OpenBolt(path, BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { s.Close() }()
	first, err := s.Put(ctx, bigModel("a", 100), Precondition{}, Change{Side: &Side{Kind: "canary", Value: []byte(`{"step":1}`)}})
	if err != nil {
		t.Fatal(err)
	}
	filler := fill(t, dir)
	change := Change{Subject: "canary-controller", Action: "canary-rollback", MarkFailed: map[string]string{"v2": "gate failed"},
		Side: &Side{Kind: "canary", Value: []byte(`{"step":2}`)}}
	_, err = s.Put(ctx, bigModel("a", 90), Precondition{IfRevision: first.Revision}, change)
	if err == nil {
		t.Fatal("a change on a full disk was acknowledged")
	}
	if !errors.Is(err, syscall.ENOSPC) && !strings.Contains(err.Error(), "no space left") {
		t.Fatalf("full disk: %v, want ENOSPC", err)
	}
	check := func(s *Bolt, when string) {
		t.Helper()
		cur, err := s.Get(ctx, "a")
		if err != nil || cur.Revision != first.Revision || cur.Model.Spec.Traffic.Weights["v1"] != 100 {
			t.Fatalf("%s: current %d %v (%v), want revision %d unchanged", when, cur.Revision, cur.Model.Spec.Traffic.Weights, err, first.Revision)
		}
		if h, _ := s.History(ctx, "a", 0); len(h) != 1 {
			t.Fatalf("%s: %d revisions in history", when, len(h))
		}
		if a, _ := s.Audit(ctx, AuditQuery{}); len(a) != 1 {
			t.Fatalf("%s: %d audit entries", when, len(a))
		}
		if f, _ := s.Failed(ctx, "a"); len(f) != 0 {
			t.Fatalf("%s: marks %+v", when, f)
		}
		if side, _ := s.Side(ctx, "canary"); string(side["a"].Value) != `{"step":1}` {
			t.Fatalf("%s: side state %s", when, side["a"].Value)
		}
	}
	check(s, "after the failed change")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = OpenBolt(path, BoltOptions{}); err != nil {
		t.Fatalf("reopen on the full disk: %v", err)
	}
	check(s, "reopened")
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	rec, err := s.Put(ctx, bigModel("a", 90), Precondition{IfRevision: first.Revision}, change)
	if err != nil {
		t.Fatalf("with space again: %v", err)
	}
	if f, _ := s.Failed(ctx, "a"); f["v2"].Revision != rec.Revision {
		t.Fatalf("marks after the change: %+v", f)
	}
	if side, _ := s.Side(ctx, "canary"); string(side["a"].Value) != `{"step":2}` || side["a"].Revision != rec.Revision {
		t.Fatalf("side after the change: %+v", side["a"])
	}
}
