package lifecycle

import (
	"errors"
	"sync"
	"testing"
)

func TestFailureKeepsTheFirst(t *testing.T) {
	var f Failure
	if err := f.Err(); err != nil {
		t.Fatalf("Err before a failure: %v", err)
	}
	select {
	case <-f.Done():
		t.Fatal("Done closed before a failure")
	default:
	}
	first, second := errors.New("first"), errors.New("second")
	if !f.Fail(first) {
		t.Error("the first Fail did not report it was first")
	}
	if f.Fail(second) {
		t.Error("the second Fail reported it was first")
	}
	<-f.Done()
	if err := f.Err(); err != first {
		t.Errorf("Err: %v, want %v", err, first)
	}
}

func TestFailureConcurrent(t *testing.T) {
	var f Failure
	var wg sync.WaitGroup
	firsts := make(chan bool, 16)
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			firsts <- f.Fail(errors.New(string(rune('a' + i))))
		}()
	}
	wg.Wait()
	close(firsts)
	n := 0
	for first := range firsts {
		if first {
			n++
		}
	}
	if n != 1 || f.Err() == nil {
		t.Errorf("%d firsts, err %v; want exactly one", n, f.Err())
	}
}
