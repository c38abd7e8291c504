package oip

// Regenerate the gRPC code in inferencepb (committed; builds need no protoc).
// Needs protoc 3.21+, protoc-gen-go and protoc-gen-go-grpc on PATH or in
// $HOME/go/bin.
//go:generate sh -c "PATH=\"$PATH:$HOME/go/bin:/root/go/bin\" protoc -I proto --go_out=inferencepb --go_opt=paths=source_relative --go-grpc_out=inferencepb --go-grpc_opt=paths=source_relative proto/grpc_predict_v2.proto proto/model_config.proto"
