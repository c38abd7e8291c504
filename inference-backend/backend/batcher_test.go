package backend

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/oip"
)

// TestBatcherInstancesRunAtOnce: with instances = 2 a second batch starts
// while the first is still running (the run function only returns once two
// runs are in flight at the same moment); with one instance the runs are
// serial and never overlap.
func TestBatcherInstancesRunAtOnce(t *testing.T) {
	for _, instances := range []int{1, 2} {
		var (
			mu             sync.Mutex
			inFlight, peak int
			both           = make(chan struct{})
			once           sync.Once
		)
		run := func(in []*oip.Tensor) ([]oip.Tensor, error) {
			mu.Lock()
			inFlight++
			peak = max(peak, inFlight)
			if inFlight == 2 {
				once.Do(func() { close(both) })
			}
			mu.Unlock()
			if instances > 1 {
				select { // hold the run until another one has started (bounded: a failure, not a hang)
				case <-both:
				case <-time.After(10 * time.Second):
				}
			}
			mu.Lock()
			inFlight--
			mu.Unlock()
			return []oip.Tensor{{Name: "y", Datatype: oip.FP32, Shape: in[0].Shape, Raw: in[0].Raw}}, nil
		}
		b := newBatcher(1, instances, 0, nil, run, func(int, time.Duration, bool) {})
		var wg sync.WaitGroup
		for i := range 6 {
			wg.Go(func() {
				j := b.getJob()
				x := oip.NewTensor("x", []int64{1, 1}, []float32{float32(i)})
				j.ctx, j.inputs, j.rows = context.Background(), []*oip.Tensor{&x}, 1
				b.submit(j)
				if j.err != nil || oip.Values[float32](j.outputs[0].Raw)[0] != float32(i) {
					t.Errorf("instances %d request %d: %v %v", instances, i, j.err, j.outputs)
				}
				b.putJob(j)
			})
		}
		wg.Wait()
		b.stop()
		if want := instances; peak != want {
			t.Errorf("instances %d: at most %d runs were in flight at once, want %d", instances, peak, want)
		}
	}
}
