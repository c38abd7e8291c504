package agent

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/switchyard-dev/switchyard/api"
	"github.com/switchyard-dev/switchyard/telemetry"
)

// Engine is what runs the mirrors inside the agent: the proxy's own
// in-process mirrors (calls through its upstream pools, comparisons,
// record files, the ring behind the reports). The proxy supplies it
// (NewEngine); this package only feeds it frames.
type Engine interface {
	// Apply makes models (the proxy's models that shadow) the live
	// configuration; version grows by one per configuration. An error
	// keeps the previous one (logged).
	Apply(models []api.Model, version string) error
	// Mirror enqueues one mirrored request. j's byte slices alias the
	// frame: copy what is kept. It must not block (a full queue drops and
	// counts, as in the proxy).
	Mirror(j *Job)
	// Report, Records and Status answer the proxy's admin pages for a
	// model (JSON, passed through to the proxy's caller as is).
	Report(model string, window time.Duration) ([]byte, error)
	Records(model string, window time.Duration) ([]byte, error)
	Status(model string) ([]byte, error)
	// Gatherer has the engine's metrics; its switchyard_shadow_* families
	// are served on the proxy's /metrics.
	Gatherer() prometheus.Gatherer
	// Close drains the mirrors (up to 5 s) and closes the record files.
	Close() error
}

// NewEngine builds the agent's engine from the proxy's Init. onCompared
// gets each comparison of a shadow (not noise-floor) job: the agent sends
// the counts back to the proxy for the canary's gate.
type NewEngine func(in Init, log *slog.Logger, onCompared func(model, version string, disagreed bool)) (Engine, error)

// Main runs this process as the shadow agent when the environment says it
// is one (EnvVar=1: the proxy's Client started it) and then exits the
// process with the agent's exit code; otherwise it returns at once.
//
// The package that builds the engine calls it from an init function (the
// proxy package does), so every binary that links it — switchyard, and
// every test binary — can serve as its own agent, before its flags or
// tests are looked at. (This package's own init cannot: it runs before
// the engine's package is initialised.)
func Main(newEngine NewEngine) {
	if os.Getenv(EnvVar) != "1" {
		return
	}
	os.Exit(run(newEngine))
}

// run is Main's agent: on descriptor 3, until the proxy closes the socket
// or dies; at Init.Priority once it has answered its first call. It
// returns the exit code.
func run(newEngine NewEngine) int {
	log := telemetry.NewLogger(os.Stderr, telemetry.LogConfig{Level: slog.LevelWarn}).With("component", "shadow-agent", "pid", os.Getpid())
	// Background work on a quarter of the cores (at least one): fewer of
	// its threads waking on the cores the proxy's requests run on.
	runtime.GOMAXPROCS(max(1, runtime.NumCPU()/4))
	// Ctrl-C or SIGTERM reach the proxy's whole process group: the agent
	// ends when the proxy closes the socket (after draining) or dies.
	signal.Ignore(os.Interrupt, syscall.SIGTERM)
	f := os.NewFile(agentFD, "shadow-agent")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		log.Error("shadow agent: no socket from the proxy", "error", err)
		return 2
	}
	if err := serve(c, newEngine, log, setPriority); err != nil {
		log.Error("shadow agent ended", "error", err)
		return 1
	}
	return 0
}

// setPriority puts every thread of the process at the priority
// (PriorityIdle: SCHED_IDLE, or nice 19 where that is refused;
// PriorityLow: nice 19; PriorityNormal: unchanged). Threads started later
// inherit it from the thread that starts them; the threads are listed
// again until a pass finds none it had not set (one may be starting while
// they are listed).
func setPriority(priority string, log *slog.Logger) {
	if priority == PriorityNormal {
		return
	}
	idle := priority != PriorityLow
	var idleErr error
	done := map[int]bool{}
	for pass := 0; pass < 5; pass++ {
		tids, err := os.ReadDir("/proc/self/task")
		if err != nil {
			log.Warn("shadow agent keeps normal priority", "error", err)
			return
		}
		changed := false
		for _, t := range tids {
			tid, err := strconv.Atoi(t.Name())
			if err != nil || done[tid] {
				continue
			}
			done[tid], changed = true, true
			if idle && idleErr == nil {
				attr := unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: schedIdle}
				idleErr = unix.SchedSetAttr(tid, &attr, 0)
			}
			if !idle || idleErr != nil {
				unix.Setpriority(unix.PRIO_PROCESS, tid, 19)
			}
		}
		if !changed {
			break
		}
	}
	if idle && idleErr != nil {
		log.Warn("shadow agent at nice 19: SCHED_IDLE refused", "error", idleErr)
	}
}

// schedIdle is Linux's SCHED_IDLE policy.
const schedIdle = 5

// server is the agent's state.
type server struct {
	conn      net.Conn
	log       *slog.Logger
	newEngine NewEngine
	e         Engine

	wmu sync.Mutex // serialises writes to conn

	evMu    sync.Mutex
	events  map[[2]string]*event
	evArmed bool          // a send is due (the flusher is not parked)
	evArm   chan struct{} // wakes the parked flusher

	// priority, after the first call is answered, takes Init.Priority
	// (nil: the priority is left alone, as Serve does).
	priority     func(priority string, log *slog.Logger)
	initPriority string
	answered     sync.Once

	wg sync.WaitGroup
}

// Serve is the agent: it serves the proxy on conn until it closes (then
// drains the mirrors, up to 5 s) or sends a corrupt frame (an error). The
// engine is built from the first frame (Init). Serve leaves the process's
// priority alone (Main's agent takes Init.Priority).
func Serve(conn net.Conn, newEngine NewEngine, log *slog.Logger) error {
	return serve(conn, newEngine, log, nil)
}

func serve(conn net.Conn, newEngine NewEngine, log *slog.Logger, priority func(string, *slog.Logger)) error {
	s := &server{conn: conn, log: log, newEngine: newEngine, events: map[[2]string]*event{}, evArm: make(chan struct{}, 1), priority: priority}
	stop := make(chan struct{})
	s.wg.Add(1)
	go s.flushEvents(stop)
	err := readFrames(conn, s.handle)
	if errors.Is(err, syscall.ECONNRESET) {
		// The proxy closed its end with a reply of ours unread (a call it
		// gave up on): a close like any other.
		err = nil
	}
	if s.e != nil {
		if cerr := s.e.Close(); cerr != nil { // drains the mirrors
			log.Warn("shadow agent engine closed", "error", cerr)
		}
	}
	close(stop)
	s.wg.Wait()
	conn.Close()
	return err
}

func (s *server) handle(typ byte, body []byte) error {
	if typ != frameInit && s.e == nil {
		return fmt.Errorf("shadow agent: frame type %d before init", typ)
	}
	switch typ {
	case frameInit:
		if s.e != nil {
			return errors.New("shadow agent: second init frame")
		}
		return s.start(body)
	case frameConfig:
		var cfg config
		if err := json.Unmarshal(body, &cfg); err != nil {
			return fmt.Errorf("shadow agent config: %w", err)
		}
		if err := s.e.Apply(cfg.Models, cfg.Version); err != nil {
			s.log.Error("shadow agent configuration refused; keeping the previous one", "error", err)
		}
	case frameJob:
		var j Job
		if err := decodeJob(body, &j); err != nil {
			return err
		}
		s.e.Mirror(&j)
	case frameCall:
		id, kind, args, err := decodeCall(body)
		if err != nil {
			return err
		}
		args = bytes.Clone(args)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			out, err := s.answer(kind, args)
			if err != nil {
				s.write(appendReplyFrame(nil, id, false, []byte(err.Error())))
			} else {
				s.write(appendReplyFrame(nil, id, true, out))
			}
			// The first answer is the proxy's check that the agent runs
			// (Start): given at the proxy's priority, then the agent
			// lowers its own.
			s.answered.Do(func() {
				if s.priority != nil {
					s.priority(s.initPriority, s.log)
				}
			})
		}()
	default:
		return fmt.Errorf("shadow agent frame: type %d not expected from the proxy", typ)
	}
	return nil
}

func (s *server) start(body []byte) error {
	var in Init
	if err := json.Unmarshal(body, &in); err != nil {
		return fmt.Errorf("shadow agent init: %w", err)
	}
	if in.Protocol != ProtocolVersion {
		return fmt.Errorf("shadow agent init: protocol version %d, this agent speaks %d", in.Protocol, ProtocolVersion)
	}
	prio, err := ParsePriority(in.Priority)
	if err != nil {
		return fmt.Errorf("shadow agent init: %w", err)
	}
	s.initPriority = prio
	e, err := s.newEngine(in, s.log, s.recordEvent) // comparisons go back to the proxy
	if err != nil {
		return fmt.Errorf("shadow agent: %w", err)
	}
	s.e = e
	return nil
}

func (s *server) write(b []byte) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if _, err := s.conn.Write(b); err != nil {
		s.log.Debug("shadow agent write", "error", err)
	}
}

// recordEvent counts a comparison for the proxy's canary gate.
func (s *server) recordEvent(model, version string, disagreed bool) {
	s.evMu.Lock()
	e := s.events[[2]string{model, version}]
	if e == nil {
		e = &event{Model: model, Version: version}
		s.events[[2]string{model, version}] = e
	}
	e.Compared++
	if disagreed {
		e.Disagreed++
	}
	if !s.evArmed {
		s.evArmed = true
		select {
		case s.evArm <- struct{}{}:
		default:
		}
	}
	s.evMu.Unlock()
}

// eventsEvery is how long comparison counts gather before they go back
// to the proxy.
const eventsEvery = 50 * time.Millisecond

// flushEvents sends the counts eventsEvery after the first of a batch; it
// sleeps while there are none (an idle agent wakes for nothing).
func (s *server) flushEvents(stop <-chan struct{}) {
	defer s.wg.Done()
	t := time.NewTimer(eventsEvery)
	t.Stop()
	defer t.Stop()
	for {
		select {
		case <-s.evArm:
		case <-stop:
			s.sendEvents()
			return
		}
		t.Reset(eventsEvery)
		select {
		case <-t.C:
		case <-stop:
			s.sendEvents()
			return
		}
		s.sendEvents()
	}
}

func (s *server) sendEvents() {
	s.evMu.Lock()
	s.evArmed = false
	if len(s.events) == 0 {
		s.evMu.Unlock()
		return
	}
	evs := make([]event, 0, len(s.events))
	for _, e := range s.events {
		evs = append(evs, *e)
	}
	clear(s.events)
	s.evMu.Unlock()
	s.write(appendEventsFrame(nil, evs))
}

// answer serves a call.
func (s *server) answer(kind byte, args []byte) ([]byte, error) {
	switch kind {
	case callStatus:
		if len(args) == 0 {
			return []byte("{}"), nil
		}
		return s.e.Status(string(args))
	case callReport, callRecords:
		var q query
		if err := json.Unmarshal(args, &q); err != nil {
			return nil, fmt.Errorf("shadow agent call: %w", err)
		}
		if kind == callReport {
			return s.e.Report(q.Model, q.Window)
		}
		return s.e.Records(q.Model, q.Window)
	case callMetrics:
		mfs, err := s.e.Gatherer().Gather()
		if err != nil {
			return nil, err
		}
		return encodeMetricFamilies(mfs, metricPrefix)
	}
	return nil, fmt.Errorf("shadow agent: unknown call kind %d", kind)
}
