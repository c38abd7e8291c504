package backend

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// ModelConfig is a model's optional DIR/<model>/config.yaml. Unknown fields
// are an error. Defaults (see DefaultModelConfig):
//
//	max_batch_size: 0          # largest dim 0 a request (or joined batch) may have; 0 = no limit, no batching
//	dynamic_batching:          # absent = off; needs max_batch_size > 0
//	  max_queue_delay: 0s      # how long the first request of a batch waits for more (0: join only what is already queued)
//	  preferred_batch_sizes: []# run at once when the batch reaches one of these sizes
//	warmup: 1                  # synthetic requests (zeros; dynamic dims = 1) run before the model reports ready
//	instance_count: 1          # batches of this model run at once (dynamic batching only; Triton's instance_group count)
//	intra_op_threads: 1        # ONNX Runtime threads inside one operator (0 = ONNX Runtime's default: all cores)
//	inter_op_threads: 1        # 0 = ONNX Runtime's default
//	allow_spinning: true       # intra-op threads busy-wait for work (ONNX Runtime's default); false frees the cores between runs
//	versions: {latest: 1}      # which versions to serve: {latest: N} | {specific: [1, 3]} | {all: true}
//	execution_provider: cpu    # cpu | cuda (falls back to cpu, with a warning, where CUDA is unavailable)
//	queue_policy: {...}        # absent = no admission queue (see QueuePolicy)
//	priority_levels: 0         # request priorities 1..N (see QueuePolicy)
//	default_priority_level: 0
type ModelConfig struct {
	MaxBatchSize      int              `yaml:"max_batch_size"`
	DynamicBatching   *DynamicBatching `yaml:"dynamic_batching"`
	Warmup            int              `yaml:"warmup"`
	InstanceCount     int              `yaml:"instance_count"`
	IntraOpThreads    int              `yaml:"intra_op_threads"`
	InterOpThreads    int              `yaml:"inter_op_threads"`
	AllowSpinning     *bool            `yaml:"allow_spinning"`
	Versions          VersionPolicy    `yaml:"versions"`
	ExecutionProvider string           `yaml:"execution_provider"`
	QueuePolicy       *QueuePolicy     `yaml:"queue_policy"`
	PriorityLevels    int              `yaml:"priority_levels"`
	DefaultPriority   int              `yaml:"default_priority_level"`
}

// queued reports whether requests pass an admission queue (QueuePolicy).
func (c *ModelConfig) queued() bool { return c.QueuePolicy != nil || c.PriorityLevels > 0 }

// slots is the number of requests the queue lets run at once.
func (c *ModelConfig) slots() int {
	if c.batching() {
		return c.InstanceCount * c.MaxBatchSize
	}
	return c.InstanceCount
}

// DynamicBatching configures joining concurrent requests into one run.
type DynamicBatching struct {
	MaxQueueDelay       time.Duration `yaml:"max_queue_delay"`
	PreferredBatchSizes []int         `yaml:"preferred_batch_sizes"`
}

// VersionPolicy chooses which of a model's version folders are served. Set
// at most one field; all zero means {latest: 1}.
type VersionPolicy struct {
	Latest   int     `yaml:"latest"`
	Specific []int64 `yaml:"specific"`
	All      bool    `yaml:"all"`
}

// DefaultModelConfig is the configuration of a model without config.yaml.
func DefaultModelConfig() ModelConfig {
	return ModelConfig{
		Warmup:            1,
		InstanceCount:     1,
		IntraOpThreads:    1,
		InterOpThreads:    1,
		Versions:          VersionPolicy{Latest: 1},
		ExecutionProvider: "cpu",
	}
}

// ParseModelConfig decodes config.yaml strictly over the defaults and
// validates the result. An empty document gives the defaults.
func ParseModelConfig(b []byte) (ModelConfig, error) {
	cfg := DefaultModelConfig()
	cfg.Versions = VersionPolicy{} // a policy in the file replaces the default one, fields and all
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return cfg, err
	}
	if cfg.Versions.Latest == 0 && len(cfg.Versions.Specific) == 0 && !cfg.Versions.All {
		cfg.Versions.Latest = 1
	}
	return cfg, cfg.Validate()
}

// Validate checks the configuration; errors name the field.
func (c *ModelConfig) Validate() error {
	if c.MaxBatchSize < 0 {
		return fmt.Errorf("max_batch_size: %d is negative", c.MaxBatchSize)
	}
	if c.DynamicBatching != nil {
		if c.MaxBatchSize == 0 {
			return fmt.Errorf("dynamic_batching: needs max_batch_size > 0")
		}
		if c.DynamicBatching.MaxQueueDelay < 0 {
			return fmt.Errorf("dynamic_batching.max_queue_delay: %v is negative", c.DynamicBatching.MaxQueueDelay)
		}
		if c.DynamicBatching.MaxQueueDelay > 10*time.Second {
			return fmt.Errorf("dynamic_batching.max_queue_delay: %v is more than 10s", c.DynamicBatching.MaxQueueDelay)
		}
		for i, s := range c.DynamicBatching.PreferredBatchSizes {
			if s < 1 || s > c.MaxBatchSize {
				return fmt.Errorf("dynamic_batching.preferred_batch_sizes[%d]: %d is not in 1..max_batch_size (%d)", i, s, c.MaxBatchSize)
			}
		}
	}
	if c.Warmup < 0 || c.Warmup > 1000 {
		return fmt.Errorf("warmup: %d is not in 0..1000", c.Warmup)
	}
	if c.InstanceCount < 1 || c.InstanceCount > 64 {
		return fmt.Errorf("instance_count: %d is not in 1..64", c.InstanceCount)
	}
	if c.InstanceCount > 1 && c.DynamicBatching == nil && !c.queued() {
		return fmt.Errorf("instance_count: %d needs dynamic_batching or queue_policy (without them every request already runs on its own)", c.InstanceCount)
	}
	if c.QueuePolicy != nil {
		if err := c.QueuePolicy.validate(); err != nil {
			return err
		}
	}
	if c.PriorityLevels < 0 || c.PriorityLevels > 16 {
		return fmt.Errorf("priority_levels: %d is not in 0..16", c.PriorityLevels)
	}
	if c.DefaultPriority < 0 || c.DefaultPriority > c.PriorityLevels {
		return fmt.Errorf("default_priority_level: %d is not in 0..priority_levels (%d)", c.DefaultPriority, c.PriorityLevels)
	}
	if c.IntraOpThreads < 0 {
		return fmt.Errorf("intra_op_threads: %d is negative", c.IntraOpThreads)
	}
	if c.InterOpThreads < 0 {
		return fmt.Errorf("inter_op_threads: %d is negative", c.InterOpThreads)
	}
	set := 0
	if c.Versions.Latest != 0 {
		set++
		if c.Versions.Latest < 0 {
			return fmt.Errorf("versions.latest: %d is negative", c.Versions.Latest)
		}
	}
	if len(c.Versions.Specific) > 0 {
		set++
		seen := map[int64]bool{}
		for i, v := range c.Versions.Specific {
			if seen[v] {
				return fmt.Errorf("versions.specific[%d]: version %d listed twice", i, v)
			}
			seen[v] = true
			if v < 1 {
				return fmt.Errorf("versions.specific[%d]: %d is not a version (versions are folders named 1, 2, ...)", i, v)
			}
		}
	}
	if c.Versions.All {
		set++
	}
	if set > 1 {
		return fmt.Errorf("versions: set only one of latest, specific, all")
	}
	switch c.ExecutionProvider {
	case "cpu", "cuda":
	default:
		return fmt.Errorf("execution_provider: %q is not cpu or cuda", c.ExecutionProvider)
	}
	return nil
}

// batching reports whether dynamic batching is on.
func (c *ModelConfig) batching() bool { return c.DynamicBatching != nil && c.MaxBatchSize > 0 }

var errNoModelFolder = errors.New("not in the model repository")

// modelSource is what the repository holds for one model: its config and
// the version folders chosen by the version policy.
type modelSource struct {
	Name     string
	Dir      string
	Config   ModelConfig
	Versions []int64 // ascending
}

func (m *modelSource) path(version int64) string {
	return filepath.Join(m.Dir, strconv.FormatInt(version, 10), "model.onnx")
}

// listModels lists the model folders of a repository (those holding at
// least one numeric version folder with a model.onnx, or a config.yaml).
func listModels(repo string) ([]string, error) {
	entries, err := os.ReadDir(repo)
	if err != nil {
		return nil, fmt.Errorf("model repository: %w", err)
	}
	var names []string
	for _, e := range entries {
		if !e.IsDir() || e.Name()[0] == '.' {
			continue
		}
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names, nil
}

// validModelName: a plain folder name (no separators, not hidden).
func validModelName(name string) bool {
	return name != "" && name[0] != '.' && !strings.ContainsAny(name, "/\\\x00") && filepath.Base(name) == name
}

// readModel reads DIR/<name>: config.yaml (optional) and the version folders
// selected by its version policy.
func readModel(repo, name string, override func(*ModelConfig)) (*modelSource, error) {
	if !validModelName(name) {
		return nil, fmt.Errorf("invalid model name %q", name)
	}
	dir := filepath.Join(repo, name)
	st, err := os.Stat(dir)
	if err != nil || !st.IsDir() {
		return nil, fmt.Errorf("model %q: %w (no folder %s)", name, errNoModelFolder, dir)
	}
	src := &modelSource{Name: name, Dir: dir, Config: DefaultModelConfig()}
	if b, err := os.ReadFile(filepath.Join(dir, "config.yaml")); err == nil {
		cfg, err := ParseModelConfig(b)
		if err != nil {
			return nil, fmt.Errorf("model %q: %s: %w", name, filepath.Join(dir, "config.yaml"), err)
		}
		src.Config = cfg
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	if override != nil {
		override(&src.Config)
		if err := src.Config.Validate(); err != nil {
			return nil, fmt.Errorf("model %q: config after overrides: %w", name, err)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var avail []int64
	for _, e := range entries {
		v, err := strconv.ParseInt(e.Name(), 10, 64)
		if err != nil || v < 1 || strconv.FormatInt(v, 10) != e.Name() {
			continue
		}
		if _, err := os.Stat(src.path(v)); err == nil {
			avail = append(avail, v)
		}
	}
	sort.Slice(avail, func(i, j int) bool { return avail[i] < avail[j] })
	if len(avail) == 0 {
		return nil, fmt.Errorf("model %q has no version folders with a model.onnx (want %s/<version>/model.onnx, version = 1, 2, ...)", name, dir)
	}
	p := src.Config.Versions
	switch {
	case p.All:
		src.Versions = avail
	case len(p.Specific) > 0:
		have := map[int64]bool{}
		for _, v := range avail {
			have[v] = true
		}
		for _, v := range p.Specific {
			if !have[v] {
				return nil, fmt.Errorf("model %q: versions.specific names version %d, which has no %s", name, v, src.path(v))
			}
		}
		src.Versions = append([]int64(nil), p.Specific...)
		sort.Slice(src.Versions, func(i, j int) bool { return src.Versions[i] < src.Versions[j] })
	default:
		n := p.Latest
		if n > len(avail) {
			n = len(avail)
		}
		src.Versions = avail[len(avail)-n:]
	}
	return src, nil
}
