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
package oip
