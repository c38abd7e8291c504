// Package oip implements the Open Inference Protocol v2 (the KServe / Triton /
// MLServer "V2" protocol) shared by every Switchyard process: the in-memory
// request and response types, tensor helpers for every datatype ONNX uses,
// protocol errors that map onto HTTP statuses and gRPC codes, the REST/JSON
// codec, the gRPC stubs (package inference, service GRPCInferenceService) and
// server adapters for both transports.
//
// Tensors are held in one canonical form whatever the transport: row-major,
// little-endian raw bytes exactly as the gRPC raw_input_contents /
// raw_output_contents fields carry them. BYTES tensors hold each element as a
// 4-byte little-endian length followed by the bytes (Triton's layout).
//
// # API summary
//
// Types: InferRequest, InferResponse, Tensor (Validate, NumElements,
// BytesElements, Float64s, HasNaNOrInf), RequestedOutput, Datatype (+ the
// constants BOOL..BYTES, ParseDatatype), ModelMetadata, TensorMetadata,
// ServerMetadata, RepositoryModel. Constructors: NewTensor[T], NewBytesTensor,
// View[T] / Values[T] to read Raw, HalfToFloat32 / Float32ToHalf.
//
// Errors: *Error{Code, Msg}; Errorf(code, ...); CodeOf(err) (context errors
// map to DeadlineExceeded / Canceled); AsError(err); Code.HTTPStatus,
// Code.GRPCCode; CodeFromGRPC, CodeFromHTTPStatus; GRPCError(err) (to a gRPC
// status), ErrorFromGRPC(err) (back to *Error).
//
// Server: the interface a model server implements (Live, Ready,
// ServerMetadata, ModelReady, ModelMetadata, Infer, RepositoryIndex,
// LoadModel, UnloadModel). Return *Error for protocol errors.
//
// REST: NewHTTPHandler(s, HTTPOptions{MaxBodyBytes, Logger}) serves
// GET /v2/health/live, /v2/health/ready, /v2, /v2/models/{m}[/versions/{v}],
// .../ready; POST .../infer, /v2/repository/index,
// /v2/repository/models/{m}/load|unload. Health and ready answer 200
// {"ready":true} or 503 {"ready":false}; errors are {"error":"..."} with the
// status of the code; 404 unknown path, 405 wrong method, 413 body over
// MaxBodyBytes (default DefaultMaxBodyBytes = 64 MiB). ParseHTTPPath(escaped
// path) -> HTTPRoute{Kind, Model, Version} for proxies that route first.
//
// JSON codec (hand-written, no reflection on the hot path):
//   - DecodeInferRequest(body, headerLen) / DecodeInferResponse(body,
//     headerLen): headerLen is the Inference-Header-Content-Length value (0 =
//     all JSON). Data flat or nested row-major; BOOL true/false; BYTES
//     strings; integers range-checked; NaN/Inf rejected in requests
//     (accepted in responses, which some servers write). Errors are
//     InvalidArgument naming the field path ("inputs[0].data[3]: ...").
//     Results never alias body.
//   - AppendInferResponse(dst, resp, req) and AppendInferRequest(dst, req,
//     binary) return (out, headerLen, err); headerLen < len(out) means binary
//     tensor data follows and Inference-Header-Content-Length must be set.
//     Responses honour the request's binary_data_output / per-output
//     binary_data parameters (WantsBinaryOutput). JSON cannot carry NaN/Inf:
//     such an output is an Internal error unless it travels binary.
//
// gRPC: RegisterGRPC(gs, s) registers the service and server reflection;
// RegisterGRPCService(registrar, s) the service only; NewGRPCService(s) the
// raw implementation. Create the server with
// grpc.MaxRecvMsgSize(DefaultMaxBodyBytes) to match the REST limit (gRPC's
// own default is 4 MiB). Conversions: InferRequestFromProto /
// InferRequestToProto, InferResponseFromProto / InferResponseToProto (raw
// contents out, typed or raw in, validated), TensorContents (typed),
// ModelMetadata*, ServerMetadata*, RepositoryIndex* To/FromProto.
//
// Clients: package oip/client (client.Client interface; client.NewHTTP,
// client.DialGRPC, client.NewGRPC).
//
// Generated code: oip/inferencepb, from oip/proto/grpc_predict_v2.proto
// (`make gen`).
package oip
