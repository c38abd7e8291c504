// Package lifecycle holds what the servers' lifecycles share: construct;
// Start(ctx); Wait(ctx) reporting the first failure of background work (a
// listener, a client); Shutdown(ctx); and the accept loop of the lean
// servers (Acceptor).
package lifecycle

import "sync"

// Failure records the first failure of a component's background work for
// its Wait. The zero value is ready; safe for concurrent use.
type Failure struct {
	init sync.Once
	once sync.Once
	done chan struct{}
	err  error
}

func (f *Failure) ch() chan struct{} {
	f.init.Do(func() { f.done = make(chan struct{}) })
	return f.done
}

// Fail records err if it is the first failure, and reports whether it was.
func (f *Failure) Fail(err error) bool {
	first := false
	f.once.Do(func() {
		f.err, first = err, true
		close(f.ch())
	})
	return first
}

// Done is closed once a failure is recorded.
func (f *Failure) Done() <-chan struct{} { return f.ch() }

// Err is the first failure (nil before one).
func (f *Failure) Err() error {
	select {
	case <-f.ch():
		return f.err
	default:
		return nil
	}
}
