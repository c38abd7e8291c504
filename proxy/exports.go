package proxy

import (
	"github.com/switchyard-dev/switchyard/proxy/front"
	"github.com/switchyard-dev/switchyard/proxy/pipeline"
)

// The pipeline's names that the proxy's API uses (Config, Route, Metrics).
type (
	// FeaturesConfig configures the prediction cache, fallback and shadow
	// policies (Config.Features).
	FeaturesConfig = pipeline.FeaturesConfig
	// Route is a model's compiled route (Proxy.Route).
	Route = pipeline.Route
	// Variant is one version of a Route.
	Variant = pipeline.Variant
	// Metrics are the proxy's metrics (Proxy.Metrics).
	Metrics = pipeline.Metrics
)

// Where mirrored requests are called and compared (FeaturesConfig.ShadowProcess).
const (
	ShadowAgent  = pipeline.ShadowAgent  // in a low-priority child process, the shadow agent (the default)
	ShadowInline = pipeline.ShadowInline // in the proxy's process (also what the agent itself runs)
)

// EnvShadowAgent is set (to "1") in the shadow agent's environment.
const EnvShadowAgent = pipeline.EnvShadowAgent

// The gRPC transports (Config.GRPCTransport).
const (
	GRPCLean = front.GRPCLean
	GRPCGo   = front.GRPCGo
)

// DefaultMaxBufferedBytes is Config.MaxBufferedBytes's default.
const DefaultMaxBufferedBytes = pipeline.DefaultMaxBufferedBytes
