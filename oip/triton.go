package oip

import (
	"context"
	"strings"

	pb "github.com/switchyard-dev/switchyard/oip/inferencepb"
)

// This file holds Triton's extensions that its clients call: the model
// configuration (GET /v2/models/{m}[/versions/{v}]/config, gRPC
// ModelConfig) and statistics (GET /v2/models[/{m}[/versions/{v}]]/stats,
// gRPC ModelStatistics). The JSON field names are those of Triton's REST
// answers (protobuf field names of model_config.proto and
// grpc_service.proto, int64 fields as numbers, enums by name).

// ConfigServer is implemented by a Server that describes its models'
// configuration. NewHTTPHandler and NewGRPCService look for it once; a
// Server without it answers the config endpoints NotFound / Unimplemented.
type ConfigServer interface {
	ModelConfig(ctx context.Context, name, version string) (*ModelConfig, error)
}

// StatsServer is implemented by a Server that keeps Triton's statistics.
// name "" asks for every model, version "" for every served version.
type StatsServer interface {
	ModelStatistics(ctx context.Context, name, version string) ([]ModelStatistics, error)
}

// ModelConfig is a model's configuration in Triton's form (the fields of
// model_config.proto a Switchyard backend fills).
type ModelConfig struct {
	Name            string                 `json:"name"`
	Platform        string                 `json:"platform"`
	Backend         string                 `json:"backend,omitempty"`
	VersionPolicy   *ConfigVersionPolicy   `json:"version_policy,omitempty"`
	MaxBatchSize    int32                  `json:"max_batch_size"`
	Input           []ConfigTensor         `json:"input"`
	Output          []ConfigTensor         `json:"output"`
	DynamicBatching *ConfigDynamicBatching `json:"dynamic_batching,omitempty"`
	InstanceGroup   []ConfigInstanceGroup  `json:"instance_group"`
	// DefaultModelFilename is the model file within a version folder.
	DefaultModelFilename string                     `json:"default_model_filename,omitempty"`
	Parameters           map[string]ConfigParameter `json:"parameters,omitempty"`
}

// ConfigParameter is a user-specified model parameter.
type ConfigParameter struct {
	StringValue string `json:"string_value"`
}

// ConfigTensor is an input or output of a ModelConfig. DataType is Triton's
// enum name (ConfigDataType); Dims leave out the batch dimension when
// MaxBatchSize > 0, and -1 is a variable dimension.
type ConfigTensor struct {
	Name     string  `json:"name"`
	DataType string  `json:"data_type"`
	Dims     []int64 `json:"dims"`
}

// ConfigVersionPolicy is one of Triton's version policies.
type ConfigVersionPolicy struct {
	Latest   *ConfigLatest   `json:"latest,omitempty"`
	All      *struct{}       `json:"all,omitempty"`
	Specific *ConfigSpecific `json:"specific,omitempty"`
}

// ConfigLatest serves the NumVersions highest versions.
type ConfigLatest struct {
	NumVersions uint32 `json:"num_versions"`
}

// ConfigSpecific serves the versions listed.
type ConfigSpecific struct {
	Versions []int64 `json:"versions"`
}

// ConfigDynamicBatching is the dynamic batcher's configuration.
type ConfigDynamicBatching struct {
	PreferredBatchSize        []int32 `json:"preferred_batch_size"`
	MaxQueueDelayMicroseconds uint64  `json:"max_queue_delay_microseconds"`
	PreserveOrdering          bool    `json:"preserve_ordering"`
}

// ConfigInstanceGroup is a group of model instances; Kind is Triton's enum
// name (KIND_CPU, KIND_GPU, ...).
type ConfigInstanceGroup struct {
	Name  string  `json:"name"`
	Kind  string  `json:"kind"`
	Count int32   `json:"count"`
	GPUs  []int32 `json:"gpus"`
}

// ConfigDataType is Triton's model-configuration name of a datatype:
// "TYPE_FP32" for FP32, "TYPE_STRING" for BYTES.
func ConfigDataType(d Datatype) string {
	if d == BYTES {
		return "TYPE_STRING"
	}
	return "TYPE_" + string(d)
}

// DatatypeFromConfig is the inverse of ConfigDataType.
func DatatypeFromConfig(s string) (Datatype, error) {
	if s == "TYPE_STRING" {
		return BYTES, nil
	}
	name, ok := strings.CutPrefix(s, "TYPE_")
	if !ok {
		return "", Errorf(InvalidArgument, "data type %q: not a model configuration data type (TYPE_FP32, ...)", s)
	}
	return ParseDatatype(name)
}

// StatisticDuration is a cumulative count and duration in nanoseconds.
type StatisticDuration struct {
	Count uint64 `json:"count"`
	Ns    uint64 `json:"ns"`
}

// InferStatistics are a model version's cumulative request statistics.
type InferStatistics struct {
	Success       StatisticDuration `json:"success"`
	Fail          StatisticDuration `json:"fail"`
	Queue         StatisticDuration `json:"queue"`
	ComputeInput  StatisticDuration `json:"compute_input"`
	ComputeInfer  StatisticDuration `json:"compute_infer"`
	ComputeOutput StatisticDuration `json:"compute_output"`
	CacheHit      StatisticDuration `json:"cache_hit"`
	CacheMiss     StatisticDuration `json:"cache_miss"`
}

// BatchStatistics are the statistics of the executions of one batch size.
type BatchStatistics struct {
	BatchSize     uint64            `json:"batch_size"`
	ComputeInput  StatisticDuration `json:"compute_input"`
	ComputeInfer  StatisticDuration `json:"compute_infer"`
	ComputeOutput StatisticDuration `json:"compute_output"`
}

// ModelStatistics are one model version's statistics. LastInference is
// milliseconds since the epoch (0: none yet); InferenceCount counts rows
// of successful requests, ExecutionCount model runs.
type ModelStatistics struct {
	Name           string            `json:"name"`
	Version        string            `json:"version"`
	LastInference  uint64            `json:"last_inference"`
	InferenceCount uint64            `json:"inference_count"`
	ExecutionCount uint64            `json:"execution_count"`
	InferenceStats InferStatistics   `json:"inference_stats"`
	BatchStats     []BatchStatistics `json:"batch_stats"`
}

// ModelConfigToProto converts a configuration to its gRPC message.
func ModelConfigToProto(c *ModelConfig) *pb.ModelConfig {
	m := &pb.ModelConfig{
		Name:                 c.Name,
		Platform:             c.Platform,
		Backend:              c.Backend,
		MaxBatchSize:         c.MaxBatchSize,
		DefaultModelFilename: c.DefaultModelFilename,
	}
	if p := c.VersionPolicy; p != nil {
		switch {
		case p.Latest != nil:
			m.VersionPolicy = &pb.ModelVersionPolicy{PolicyChoice: &pb.ModelVersionPolicy_Latest_{Latest: &pb.ModelVersionPolicy_Latest{NumVersions: p.Latest.NumVersions}}}
		case p.All != nil:
			m.VersionPolicy = &pb.ModelVersionPolicy{PolicyChoice: &pb.ModelVersionPolicy_All_{All: &pb.ModelVersionPolicy_All{}}}
		case p.Specific != nil:
			m.VersionPolicy = &pb.ModelVersionPolicy{PolicyChoice: &pb.ModelVersionPolicy_Specific_{Specific: &pb.ModelVersionPolicy_Specific{Versions: p.Specific.Versions}}}
		}
	}
	for _, t := range c.Input {
		m.Input = append(m.Input, &pb.ModelInput{Name: t.Name, DataType: pb.DataType(pb.DataType_value[t.DataType]), Dims: t.Dims})
	}
	for _, t := range c.Output {
		m.Output = append(m.Output, &pb.ModelOutput{Name: t.Name, DataType: pb.DataType(pb.DataType_value[t.DataType]), Dims: t.Dims})
	}
	if d := c.DynamicBatching; d != nil {
		m.SchedulingChoice = &pb.ModelConfig_DynamicBatching{DynamicBatching: &pb.ModelDynamicBatching{
			PreferredBatchSize:        d.PreferredBatchSize,
			MaxQueueDelayMicroseconds: d.MaxQueueDelayMicroseconds,
			PreserveOrdering:          d.PreserveOrdering,
		}}
	}
	for _, g := range c.InstanceGroup {
		m.InstanceGroup = append(m.InstanceGroup, &pb.ModelInstanceGroup{
			Name: g.Name, Kind: pb.ModelInstanceGroup_Kind(pb.ModelInstanceGroup_Kind_value[g.Kind]), Count: g.Count, Gpus: g.GPUs,
		})
	}
	if len(c.Parameters) > 0 {
		m.Parameters = make(map[string]*pb.ModelParameter, len(c.Parameters))
		for k, v := range c.Parameters {
			m.Parameters[k] = &pb.ModelParameter{StringValue: v.StringValue}
		}
	}
	return m
}

// ModelConfigFromProto converts a gRPC configuration back (the fields
// ModelConfig carries; others are dropped).
func ModelConfigFromProto(m *pb.ModelConfig) *ModelConfig {
	c := &ModelConfig{
		Name:                 m.GetName(),
		Platform:             m.GetPlatform(),
		Backend:              m.GetBackend(),
		MaxBatchSize:         m.GetMaxBatchSize(),
		DefaultModelFilename: m.GetDefaultModelFilename(),
		Input:                []ConfigTensor{},
		Output:               []ConfigTensor{},
		InstanceGroup:        []ConfigInstanceGroup{},
	}
	if p := m.GetVersionPolicy(); p != nil {
		switch {
		case p.GetLatest() != nil:
			c.VersionPolicy = &ConfigVersionPolicy{Latest: &ConfigLatest{NumVersions: p.GetLatest().GetNumVersions()}}
		case p.GetAll() != nil:
			c.VersionPolicy = &ConfigVersionPolicy{All: &struct{}{}}
		case p.GetSpecific() != nil:
			c.VersionPolicy = &ConfigVersionPolicy{Specific: &ConfigSpecific{Versions: p.GetSpecific().GetVersions()}}
		}
	}
	for _, t := range m.GetInput() {
		c.Input = append(c.Input, ConfigTensor{Name: t.GetName(), DataType: t.GetDataType().String(), Dims: nonNilDims(t.GetDims())})
	}
	for _, t := range m.GetOutput() {
		c.Output = append(c.Output, ConfigTensor{Name: t.GetName(), DataType: t.GetDataType().String(), Dims: nonNilDims(t.GetDims())})
	}
	if d := m.GetDynamicBatching(); d != nil {
		c.DynamicBatching = &ConfigDynamicBatching{
			PreferredBatchSize:        d.GetPreferredBatchSize(),
			MaxQueueDelayMicroseconds: d.GetMaxQueueDelayMicroseconds(),
			PreserveOrdering:          d.GetPreserveOrdering(),
		}
	}
	for _, g := range m.GetInstanceGroup() {
		c.InstanceGroup = append(c.InstanceGroup, ConfigInstanceGroup{Name: g.GetName(), Kind: g.GetKind().String(), Count: g.GetCount(), GPUs: g.GetGpus()})
	}
	for k, v := range m.GetParameters() {
		if c.Parameters == nil {
			c.Parameters = map[string]ConfigParameter{}
		}
		c.Parameters[k] = ConfigParameter{StringValue: v.GetStringValue()}
	}
	return c
}

func nonNilDims(d []int64) []int64 {
	if d == nil {
		return []int64{}
	}
	return d
}

func durToProto(d StatisticDuration) *pb.StatisticDuration {
	return &pb.StatisticDuration{Count: d.Count, Ns: d.Ns}
}

func durFromProto(d *pb.StatisticDuration) StatisticDuration {
	return StatisticDuration{Count: d.GetCount(), Ns: d.GetNs()}
}

// ModelStatisticsToProto converts statistics to their gRPC message.
func ModelStatisticsToProto(stats []ModelStatistics) *pb.ModelStatisticsResponse {
	out := &pb.ModelStatisticsResponse{ModelStats: make([]*pb.ModelStatistics, 0, len(stats))}
	for _, s := range stats {
		is := s.InferenceStats
		m := &pb.ModelStatistics{
			Name: s.Name, Version: s.Version, LastInference: s.LastInference,
			InferenceCount: s.InferenceCount, ExecutionCount: s.ExecutionCount,
			InferenceStats: &pb.InferStatistics{
				Success: durToProto(is.Success), Fail: durToProto(is.Fail), Queue: durToProto(is.Queue),
				ComputeInput: durToProto(is.ComputeInput), ComputeInfer: durToProto(is.ComputeInfer), ComputeOutput: durToProto(is.ComputeOutput),
				CacheHit: durToProto(is.CacheHit), CacheMiss: durToProto(is.CacheMiss),
			},
		}
		for _, b := range s.BatchStats {
			m.BatchStats = append(m.BatchStats, &pb.InferBatchStatistics{
				BatchSize: b.BatchSize, ComputeInput: durToProto(b.ComputeInput), ComputeInfer: durToProto(b.ComputeInfer), ComputeOutput: durToProto(b.ComputeOutput),
			})
		}
		out.ModelStats = append(out.ModelStats, m)
	}
	return out
}

// ModelStatisticsFromProto converts the gRPC message back.
func ModelStatisticsFromProto(m *pb.ModelStatisticsResponse) []ModelStatistics {
	out := make([]ModelStatistics, 0, len(m.GetModelStats()))
	for _, s := range m.GetModelStats() {
		is := s.GetInferenceStats()
		ms := ModelStatistics{
			Name: s.GetName(), Version: s.GetVersion(), LastInference: s.GetLastInference(),
			InferenceCount: s.GetInferenceCount(), ExecutionCount: s.GetExecutionCount(),
			InferenceStats: InferStatistics{
				Success: durFromProto(is.GetSuccess()), Fail: durFromProto(is.GetFail()), Queue: durFromProto(is.GetQueue()),
				ComputeInput: durFromProto(is.GetComputeInput()), ComputeInfer: durFromProto(is.GetComputeInfer()), ComputeOutput: durFromProto(is.GetComputeOutput()),
				CacheHit: durFromProto(is.GetCacheHit()), CacheMiss: durFromProto(is.GetCacheMiss()),
			},
			BatchStats: []BatchStatistics{},
		}
		for _, b := range s.GetBatchStats() {
			ms.BatchStats = append(ms.BatchStats, BatchStatistics{
				BatchSize: b.GetBatchSize(), ComputeInput: durFromProto(b.GetComputeInput()), ComputeInfer: durFromProto(b.GetComputeInfer()), ComputeOutput: durFromProto(b.GetComputeOutput()),
			})
		}
		out = append(out, ms)
	}
	return out
}
