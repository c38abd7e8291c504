package backend

import (
	"context"
	"sort"
	"sync"
	"time"

	"github.com/switchyard-dev/switchyard/oip"
)

// This file answers Triton's model configuration and statistics
// extensions (oip.ConfigServer, oip.StatsServer).

var (
	_ oip.ConfigServer = (*Backend)(nil)
	_ oip.StatsServer  = (*Backend)(nil)
)

// ModelConfig describes a served model version in Triton's form: the
// signature from the ONNX graph (without the batch dimension when
// max_batch_size > 0), batching, instances and version policy from
// config.yaml.
func (b *Backend) ModelConfig(_ context.Context, name, ver string) (*oip.ModelConfig, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	v, err := b.lookup(name, ver)
	if err != nil {
		return nil, err
	}
	return v.config(), nil
}

func (v *version) config() *oip.ModelConfig {
	cfg := v.cfg
	c := &oip.ModelConfig{
		Name:                 v.model,
		Platform:             "onnxruntime_onnx",
		Backend:              "onnxruntime",
		MaxBatchSize:         int32(cfg.MaxBatchSize),
		Input:                configTensors(v.sess.inputs, cfg.MaxBatchSize > 0),
		Output:               configTensors(v.sess.outputs, cfg.MaxBatchSize > 0),
		DefaultModelFilename: "model.onnx",
	}
	switch p := cfg.Versions; {
	case p.All:
		c.VersionPolicy = &oip.ConfigVersionPolicy{All: &struct{}{}}
	case len(p.Specific) > 0:
		c.VersionPolicy = &oip.ConfigVersionPolicy{Specific: &oip.ConfigSpecific{Versions: append([]int64(nil), p.Specific...)}}
	default:
		c.VersionPolicy = &oip.ConfigVersionPolicy{Latest: &oip.ConfigLatest{NumVersions: uint32(max(p.Latest, 1))}}
	}
	if cfg.batching() {
		d := &oip.ConfigDynamicBatching{
			PreferredBatchSize:        []int32{},
			MaxQueueDelayMicroseconds: uint64(cfg.DynamicBatching.MaxQueueDelay.Microseconds()),
		}
		for _, s := range cfg.DynamicBatching.PreferredBatchSizes {
			d.PreferredBatchSize = append(d.PreferredBatchSize, int32(s))
		}
		c.DynamicBatching = d
	}
	g := oip.ConfigInstanceGroup{Name: v.model, Kind: "KIND_CPU", Count: int32(max(cfg.InstanceCount, 1)), GPUs: []int32{}}
	if v.sess.Provider() == "cuda" {
		g.Kind, g.GPUs = "KIND_GPU", []int32{0}
	}
	c.InstanceGroup = []oip.ConfigInstanceGroup{g}
	return c
}

// configTensors gives Triton's dims: the batch dimension left out when the
// model batches; a tensor of unknown rank is [-1].
func configTensors(specs []tensorSpec, batched bool) []oip.ConfigTensor {
	out := make([]oip.ConfigTensor, len(specs))
	for i, t := range specs {
		dims := []int64{-1}
		if t.RankKnown {
			dims = append([]int64{}, t.Shape...)
			if batched && len(dims) > 0 {
				dims = dims[1:]
			}
		}
		out[i] = oip.ConfigTensor{Name: t.Name, DataType: oip.ConfigDataType(t.Datatype), Dims: dims}
	}
	return out
}

// ModelStatistics reports Triton's statistics of the served versions: name
// "" every model, version "" every served version of the model. Versions
// are counted from their load; a reload starts them at zero (as Triton).
func (b *Backend) ModelStatistics(_ context.Context, name, ver string) ([]oip.ModelStatistics, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	var vs []*version
	switch {
	case name == "" && ver != "":
		return nil, oip.Errorf(oip.InvalidArgument, "version %q given without a model name", ver)
	case name == "":
		names := make([]string, 0, len(b.models))
		for n := range b.models {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			m := b.models[n]
			for _, vn := range sortedVersions(m.versions) {
				vs = append(vs, m.versions[vn])
			}
		}
	case ver == "":
		if _, err := b.lookup(name, ""); err != nil {
			return nil, err
		}
		m := b.models[name]
		for _, vn := range sortedVersions(m.versions) {
			vs = append(vs, m.versions[vn])
		}
	default:
		v, err := b.lookup(name, ver)
		if err != nil {
			return nil, err
		}
		vs = []*version{v}
	}
	out := make([]oip.ModelStatistics, 0, len(vs))
	for _, v := range vs {
		out = append(out, v.stats.snapshot(v.model, v.name))
	}
	return out, nil
}

// versionStats are one version's Triton statistics. Successes and failures
// are timed from the backend receiving the decoded request to its answer;
// queue is the wait in the dynamic batcher; compute_input is binding and
// checking the inputs, compute_infer the ONNX Runtime run (for a joined
// batch: the whole joined run, shared by its requests), compute_output
// picking the requested outputs.
type versionStats struct {
	mu             sync.Mutex
	last           int64 // ms since the epoch
	inferenceCount uint64
	executionCount uint64
	infer          oip.InferStatistics
	batches        map[uint64]*oip.BatchStatistics
}

func add(d *oip.StatisticDuration, t time.Duration) {
	d.Count++
	d.Ns += uint64(max(t, 0))
}

// request records a finished request: rows inferences on success.
func (s *versionStats) request(now time.Time, total time.Duration, ok bool, rows int, p phases) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !ok {
		add(&s.infer.Fail, total)
		return
	}
	s.last = now.UnixMilli()
	s.inferenceCount += uint64(max(rows, 1))
	add(&s.infer.Success, total)
	add(&s.infer.Queue, p.queue)
	add(&s.infer.ComputeInput, p.input)
	add(&s.infer.ComputeInfer, p.infer)
	add(&s.infer.ComputeOutput, p.output)
}

// execution records one successful model run of a batch of rows; input
// and output are negative where they were not measured apart from the run
// (joined batches).
func (s *versionStats) execution(rows int, p phases) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.executionCount++
	if s.batches == nil {
		s.batches = map[uint64]*oip.BatchStatistics{}
	}
	n := uint64(max(rows, 1))
	bs := s.batches[n]
	if bs == nil {
		bs = &oip.BatchStatistics{BatchSize: n}
		s.batches[n] = bs
	}
	add(&bs.ComputeInfer, p.infer)
	if p.input >= 0 {
		add(&bs.ComputeInput, p.input)
	}
	if p.output >= 0 {
		add(&bs.ComputeOutput, p.output)
	}
}

func (s *versionStats) snapshot(model, ver string) oip.ModelStatistics {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := oip.ModelStatistics{
		Name: model, Version: ver, LastInference: uint64(max(s.last, 0)),
		InferenceCount: s.inferenceCount, ExecutionCount: s.executionCount,
		InferenceStats: s.infer, BatchStats: make([]oip.BatchStatistics, 0, len(s.batches)),
	}
	for _, bs := range s.batches {
		out.BatchStats = append(out.BatchStats, *bs)
	}
	sort.Slice(out.BatchStats, func(i, j int) bool { return out.BatchStats[i].BatchSize < out.BatchStats[j].BatchSize })
	return out
}

// phases are the parts of one request's time.
type phases struct {
	queue, input, infer, output time.Duration
}
