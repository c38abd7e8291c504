// Package front holds the proxy's front-ends, thin adapters over the
// request pipeline (package proxy/pipeline): each turns its wire into an
// Exchange (route, pick, body within the buffered-bytes budget, headers),
// runs the pipeline (Begin, Serve) and turns the Result back into its wire,
// then closes the exchange (Finish, HandOff).
//
//   - fastfront.go: the lean REST server (internal/h1), every POST .../infer
//   - http.go: the net/http handler for the rest of REST (health, server
//     and model metadata, readiness, configuration, statistics)
//   - grpc.go: GRPCInferenceService, unary ModelInfer on the lean HTTP/2
//     server (internal/h2) and every other stream on grpc-go's server
//   - describe.go: the describe answers by the virtual-model rule
//   - repository.go: the model repository calls, refused with a reason
//
// Package proxy builds the servers (NewFastServer, RegisterGRPCFront,
// NewLeanGRPC) on its listeners.
package front
