package lifecycle

import (
	"errors"
	"net"
	"net/http"
	"testing"
	"time"
)

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "too many open files" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

// scripted is a listener whose Accept returns the given results in turn.
type scripted struct {
	net.Listener
	errs []error
}

func (s *scripted) Accept() (net.Conn, error) {
	err := s.errs[0]
	s.errs = s.errs[1:]
	if err != nil {
		return nil, err
	}
	c1, c2 := net.Pipe()
	c2.Close()
	return c1, nil
}

func TestAcceptor(t *testing.T) {
	boom := errors.New("listener broken")
	cases := map[string]struct {
		errs   []error
		closed bool
		want   error
		sleeps []time.Duration
	}{
		"a connection": {errs: []error{nil}},
		"temporary errors slept through, doubling": {errs: []error{timeoutErr{}, timeoutErr{}, timeoutErr{}, nil}, sleeps: []time.Duration{5 * time.Millisecond, 10 * time.Millisecond, 20 * time.Millisecond}},
		"a lasting error ends the loop":            {errs: []error{boom}, want: boom},
		"closed: the server's error":               {errs: []error{boom}, closed: true, want: http.ErrServerClosed},
	}
	for name, c := range cases {
		var slept []time.Duration
		a := Acceptor{sleep: func(d time.Duration) { slept = append(slept, d) }}
		nc, err := a.Accept(&scripted{errs: c.errs}, func() bool { return c.closed })
		if !errors.Is(err, c.want) || (err == nil) != (nc != nil) {
			t.Errorf("%s: conn %v, err %v, want err %v", name, nc, err, c.want)
		}
		if nc != nil {
			nc.Close()
		}
		if len(slept) != len(c.sleeps) {
			t.Errorf("%s: slept %v, want %v", name, slept, c.sleeps)
			continue
		}
		for i := range slept {
			if slept[i] != c.sleeps[i] {
				t.Errorf("%s: slept %v, want %v", name, slept, c.sleeps)
			}
		}
		if c.want == nil && a.delay != 0 {
			t.Errorf("%s: the delay is not reset after a connection", name)
		}
	}
	// The delay is capped at a second.
	a := Acceptor{sleep: func(time.Duration) {}}
	errs := make([]error, 0, 20)
	for range 19 {
		errs = append(errs, timeoutErr{})
	}
	a.Accept(&scripted{errs: append(errs, boom)}, func() bool { return false })
	if a.delay != time.Second {
		t.Errorf("delay after 19 temporary errors: %v, want the 1 s cap", a.delay)
	}
}
