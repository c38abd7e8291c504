package proxy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/encoding/protodelim"

	"github.com/switchyard-dev/switchyard/oip"
	"github.com/switchyard-dev/switchyard/shadow"
	"github.com/switchyard-dev/switchyard/telemetry"
)

// The shadow agent process (see shadowagent.go): a headless Proxy (no
// listeners, no xDS) whose features run the mirrors in process, fed by the
// proxy's frames.

// ShadowAgentMain runs the shadow agent when the environment names this
// process as one (EnvShadowAgent): on descriptor 3, at SCHED_IDLE
// priority, until the proxy closes the socket or dies. It returns the
// exit code, and ok false when the process is not an agent. A binary that
// runs proxies in agent mode calls it first thing (cmd/switchyard does).
func ShadowAgentMain() (code int, ok bool) {
	if os.Getenv(EnvShadowAgent) != "1" {
		return 0, false
	}
	log := telemetry.NewLogger(os.Stderr, telemetry.LogConfig{Level: slog.LevelWarn}).With("component", "shadow-agent", "pid", os.Getpid())
	lowerPriority(log)
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
		return 2, true
	}
	if err := RunShadowAgent(c, log); err != nil {
		log.Error("shadow agent ended", "error", err)
		return 1, true
	}
	return 0, true
}

// lowerPriority puts every thread of the process at SCHED_IDLE (threads
// started later inherit it), or at nice 19 where that is refused.
func lowerPriority(log *slog.Logger) {
	tids, err := os.ReadDir("/proc/self/task")
	if err != nil {
		log.Warn("shadow agent keeps normal priority", "error", err)
		return
	}
	var idleErr error
	for _, t := range tids {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		attr := unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: schedIdle}
		if idleErr == nil {
			idleErr = unix.SchedSetAttr(tid, &attr, 0)
		}
		if idleErr != nil {
			unix.Setpriority(unix.PRIO_PROCESS, tid, 19)
		}
	}
	if idleErr != nil {
		log.Warn("shadow agent at nice 19: SCHED_IDLE refused", "error", idleErr)
	}
}

// schedIdle is Linux's SCHED_IDLE policy.
const schedIdle = 5

// agentServer is the agent's state.
type agentServer struct {
	conn net.Conn
	log  *slog.Logger
	reg  *prometheus.Registry
	p    *Proxy
	f    *features

	wmu sync.Mutex // serialises writes to conn

	evMu    sync.Mutex
	events  map[[2]string]*shadowEvent
	evArmed bool          // a send is due (the flusher is not parked)
	evArm   chan struct{} // wakes the parked flusher

	wg sync.WaitGroup
}

// RunShadowAgent serves the proxy on conn until it closes (then drains the
// mirrors, up to 5 s) or sends a corrupt frame (an error).
func RunShadowAgent(conn net.Conn, log *slog.Logger) error {
	s := &agentServer{conn: conn, log: log, events: map[[2]string]*shadowEvent{}, evArm: make(chan struct{}, 1)}
	stop := make(chan struct{})
	s.wg.Add(1)
	go s.flushEvents(stop)
	err := readFrames(conn, s.handle)
	if s.p != nil {
		s.p.Close() // drains the mirrors
	}
	close(stop)
	s.wg.Wait()
	conn.Close()
	return err
}

func (s *agentServer) handle(typ byte, body []byte) error {
	if typ != frameInit && s.p == nil {
		return fmt.Errorf("shadow agent: frame type %d before init", typ)
	}
	switch typ {
	case frameInit:
		if s.p != nil {
			return errors.New("shadow agent: second init frame")
		}
		return s.start(body)
	case frameConfig:
		var cfg agentConfig
		if err := json.Unmarshal(body, &cfg); err != nil {
			return fmt.Errorf("shadow agent config: %w", err)
		}
		if err := s.p.Apply(cfg.Models, cfg.Version, "agent"); err != nil {
			s.log.Error("shadow agent configuration refused; keeping the previous one", "error", err)
		}
	case frameJob:
		var j agentJob
		if err := decodeJob(body, &j); err != nil {
			return err
		}
		s.enqueue(&j)
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
				return
			}
			s.write(appendReplyFrame(nil, id, true, out))
		}()
	default:
		return fmt.Errorf("shadow agent frame: type %d not expected from the proxy", typ)
	}
	return nil
}

func (s *agentServer) start(body []byte) error {
	var in agentInit
	if err := json.Unmarshal(body, &in); err != nil {
		return fmt.Errorf("shadow agent init: %w", err)
	}
	s.reg = prometheus.NewRegistry()
	p, err := New(Config{Registry: s.reg, Logger: s.log, StatsInterval: -1, UpstreamTLS: in.UpstreamTLS, Features: FeaturesConfig{
		ShadowDir: in.ShadowDir, ShadowRecordMaxBytes: in.ShadowRecordMaxBytes, ShadowRecordKeep: in.ShadowRecordKeep,
		ShadowRecordAgreements: in.ShadowRecordAgreements, ShadowRingSize: in.ShadowRingSize,
	}})
	if err != nil {
		return fmt.Errorf("shadow agent: %w", err)
	}
	f := p.features
	f.onShadow = s.recordEvent // comparisons go back to the proxy
	s.p, s.f = p, f
	return nil
}

func (s *agentServer) write(b []byte) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if _, err := s.conn.Write(b); err != nil {
		s.log.Debug("shadow agent write", "error", err)
	}
}

// enqueue turns a job frame into a mirror of the agent's live route.
func (s *agentServer) enqueue(j *agentJob) {
	r := s.p.Route(j.Model)
	var ms *mirrorState
	if r != nil {
		if rf := r.policies; rf != nil {
			ms = rf.mirror
		}
	}
	var pv, tv *Variant
	if ms != nil && ms.target == j.TargetVersion {
		pv, tv = r.Variant(j.PrimaryVersion), r.Variant(j.TargetVersion)
	}
	if pv == nil || tv == nil {
		// Not (or no longer) the agent's configuration: the proxy's newer
		// configuration has not arrived yet, or this job is from an older one.
		s.f.shm.Dropped(j.Model, j.TargetVersion, shadow.KindShadow, "config")
		return
	}
	pl := &shadowPayload{target: tv, primary: pv, start: j.Start, latency: j.Latency}
	if j.GRPC {
		pl.pbBuf = copyShadowBuf(j.Request)
	} else {
		pl.bodyBuf, pl.headerLen = copyShadowBuf(j.Request), j.RequestHeaderLen
	}
	switch {
	case j.PrimaryErr != "":
		pl.primaryErr = &wirePrimaryError{msg: j.PrimaryErr, nan: j.PrimaryNaN, code: oip.Errorf(oip.Code(j.PrimaryCode), "%s", j.PrimaryErr)}
	case j.RespProto:
		pl.respPBBuf = copyShadowBuf(j.Response)
	default:
		pl.respBuf, pl.respStatus, pl.respHeaderLen = copyShadowBuf(j.Response), j.RespStatus, j.RespHeaderLen
	}
	pl.pending = shadowPending{ms: ms, pl: pl, noise: j.Noise}
	pl.pending.enqueue()
}

// wirePrimaryError is the primary's error as the proxy saw it: the same
// message, oip code and NaN marking.
type wirePrimaryError struct {
	msg  string
	nan  bool
	code *oip.Error
}

func (e *wirePrimaryError) Error() string        { return e.msg }
func (e *wirePrimaryError) Unwrap() error        { return e.code }
func (e *wirePrimaryError) Is(target error) bool { return e.nan && target == shadow.ErrNaNOutput }

// recordEvent counts a comparison for the proxy's canary gate.
func (s *agentServer) recordEvent(model, version string, disagreed bool) {
	s.evMu.Lock()
	e := s.events[[2]string{model, version}]
	if e == nil {
		e = &shadowEvent{Model: model, Version: version}
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
func (s *agentServer) flushEvents(stop <-chan struct{}) {
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

func (s *agentServer) sendEvents() {
	s.evMu.Lock()
	s.evArmed = false
	if len(s.events) == 0 {
		s.evMu.Unlock()
		return
	}
	evs := make([]shadowEvent, 0, len(s.events))
	for _, e := range s.events {
		evs = append(evs, *e)
	}
	clear(s.events)
	s.evMu.Unlock()
	s.write(appendEventsFrame(nil, evs))
}

// answer serves a call.
func (s *agentServer) answer(kind byte, args []byte) ([]byte, error) {
	switch kind {
	case callStatus:
		if len(args) == 0 {
			return []byte("{}"), nil
		}
		ms, err := s.f.liveMirror(string(args))
		if err != nil {
			return nil, err
		}
		return json.Marshal(ShadowStatus{Version: ms.target, QueueLen: ms.queueLen(), RecordFile: ms.sinkPath()})
	case callReport, callRecords:
		var q agentQuery
		if err := json.Unmarshal(args, &q); err != nil {
			return nil, fmt.Errorf("shadow agent call: %w", err)
		}
		if kind == callReport {
			rep, err := s.f.ShadowReport(q.Model, q.Window)
			if err != nil {
				return nil, err
			}
			return json.Marshal(rep)
		}
		recs, err := s.f.shadowRecords(q.Model, q.Window)
		if err != nil {
			return nil, err
		}
		return json.Marshal(recs)
	case callMetrics:
		mfs, err := s.reg.Gather()
		if err != nil {
			return nil, err
		}
		return encodeMetricFamilies(mfs, shadowMetricPrefix)
	}
	return nil, fmt.Errorf("shadow agent: unknown call kind %d", kind)
}

// shadowMetricPrefix names the agent's families the proxy serves (the
// agent's headless proxy has switchyard_proxy_* series of its own, which
// are not the proxy's).
const shadowMetricPrefix = "switchyard_shadow_"

// encodeMetricFamilies writes the families whose name starts with prefix
// as length-delimited protobuf.
func encodeMetricFamilies(mfs []*dto.MetricFamily, prefix string) ([]byte, error) {
	var b bytes.Buffer
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), prefix) {
			continue
		}
		if _, err := protodelim.MarshalTo(&b, mf); err != nil {
			return nil, err
		}
	}
	return b.Bytes(), nil
}

func decodeMetricFamilies(b []byte) ([]*dto.MetricFamily, error) {
	r := bufio.NewReader(bytes.NewReader(b))
	var out []*dto.MetricFamily
	for {
		mf := &dto.MetricFamily{}
		err := protodelim.UnmarshalFrom(r, mf)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("shadow agent metrics: %w", err)
		}
		out = append(out, mf)
	}
}

// constMetrics turns gathered families back into metrics a collector can
// emit (counters, gauges, histograms; other types are skipped).
func constMetrics(mfs []*dto.MetricFamily) []prometheus.Metric {
	var out []prometheus.Metric
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			names := make([]string, 0, len(m.GetLabel()))
			values := make([]string, 0, len(m.GetLabel()))
			for _, l := range m.GetLabel() {
				names = append(names, l.GetName())
				values = append(values, l.GetValue())
			}
			desc := prometheus.NewDesc(mf.GetName(), mf.GetHelp(), names, nil)
			var (
				pm  prometheus.Metric
				err error
			)
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				pm, err = prometheus.NewConstMetric(desc, prometheus.CounterValue, m.GetCounter().GetValue(), values...)
			case dto.MetricType_GAUGE:
				pm, err = prometheus.NewConstMetric(desc, prometheus.GaugeValue, m.GetGauge().GetValue(), values...)
			case dto.MetricType_HISTOGRAM:
				h := m.GetHistogram()
				buckets := make(map[float64]uint64, len(h.GetBucket()))
				for _, bk := range h.GetBucket() {
					buckets[bk.GetUpperBound()] = bk.GetCumulativeCount()
				}
				pm, err = prometheus.NewConstHistogram(desc, h.GetSampleCount(), h.GetSampleSum(), buckets, values...)
			default:
				continue
			}
			if err == nil {
				out = append(out, pm)
			}
		}
	}
	return out
}

// agentRecordPath is where the agent writes a model's records (for the
// proxy's /fallback status).
func agentRecordPath(dir, model string) string {
	if dir == "" {
		return ""
	}
	return filepath.Join(dir, model+".jsonl")
}
