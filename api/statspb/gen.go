// Package statspb holds the generated gRPC code of the proxy → control
// plane stats stream (proto/stats.proto).
package statspb

//go:generate sh -c "PATH=\"$PATH:$HOME/go/bin:/root/go/bin\" protoc -I proto --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative proto/stats.proto"
