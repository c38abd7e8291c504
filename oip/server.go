package oip

import "context"

// ServerMetadata is the answer to GET /v2 (ServerMetadata on gRPC).
type ServerMetadata struct {
	Name       string   `json:"name"`
	Version    string   `json:"version"`
	Extensions []string `json:"extensions"`
}

// TensorMetadata describes one model input or output. A dimension of -1 is
// variable.
type TensorMetadata struct {
	Name     string   `json:"name"`
	Datatype Datatype `json:"datatype"`
	Shape    []int64  `json:"shape"`
}

// ModelMetadata is the answer to GET /v2/models/{name}[/versions/{v}].
type ModelMetadata struct {
	Name     string           `json:"name"`
	Versions []string         `json:"versions,omitempty"`
	Platform string           `json:"platform"`
	Inputs   []TensorMetadata `json:"inputs"`
	Outputs  []TensorMetadata `json:"outputs"`
}

// RepositoryModel is one entry of the model repository index.
type RepositoryModel struct {
	Name    string `json:"name"`
	Version string `json:"version,omitempty"`
	State   string `json:"state,omitempty"` // READY, UNAVAILABLE, LOADING, UNLOADING
	Reason  string `json:"reason,omitempty"`
}

// Server is what a model server implements; NewHTTPHandler and the gRPC
// service adapt it to the two transports. version "" means the default
// (latest served) version. Errors should be *Error so the transports can map
// them; any other error is reported as internal.
type Server interface {
	Live(ctx context.Context) bool
	Ready(ctx context.Context) bool
	ServerMetadata(ctx context.Context) ServerMetadata
	ModelReady(ctx context.Context, name, version string) (bool, error)
	ModelMetadata(ctx context.Context, name, version string) (*ModelMetadata, error)
	Infer(ctx context.Context, req *InferRequest) (*InferResponse, error)
	RepositoryIndex(ctx context.Context, readyOnly bool) ([]RepositoryModel, error)
	LoadModel(ctx context.Context, name string) error
	UnloadModel(ctx context.Context, name string) error
}
