package upstream

import (
	"context"
	"crypto/tls"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	protoenc "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"

	"github.com/switchyard-dev/switchyard/internal/h2"
	pb "github.com/switchyard-dev/switchyard/oip/inferencepb"
	"github.com/switchyard-dev/switchyard/oip/pbwire"
)

// RawMessage is a gRPC message in its protobuf wire form (a ModelInfer
// request or answer passed through): RawCodec sends B as it is and
// receives into it without decoding.
type RawMessage struct{ B []byte }

// RawCodec is the proto codec that passes *RawMessage through as bytes
// and hands every other message to grpc-go's proto codec. It keeps the
// name "proto", so the content type on the wire stays application/grpc:
// peers see no difference.
type RawCodec struct{}

var protoCodec = encoding.GetCodecV2(protoenc.Name)

// Name implements encoding.CodecV2.
func (RawCodec) Name() string { return protoenc.Name }

// Marshal implements encoding.CodecV2.
func (RawCodec) Marshal(v any) (mem.BufferSlice, error) {
	if m, ok := v.(*RawMessage); ok {
		return mem.BufferSlice{mem.SliceBuffer(m.B)}, nil
	}
	return protoCodec.Marshal(v)
}

// Unmarshal implements encoding.CodecV2. A *RawMessage gets a copy of the
// bytes (grpc-go reuses its buffers once Unmarshal returns).
func (RawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	if m, ok := v.(*RawMessage); ok {
		m.B = data.Materialize()
		return nil
	}
	return protoCodec.Unmarshal(data, v)
}

var rawCall = grpc.ForceCodecV2(RawCodec{})

// WindowSize is the HTTP/2 flow-control window (per stream and per
// connection) of the proxy's gRPC connections, both ways: the largest
// grpc-go's estimator grows to (16 MiB). A fixed window turns the
// estimator off; it pings the peer after nearly every message received
// (a ping and its ack: system calls and wake-ups on each side).
const WindowSize = 16 << 20

// DialOptions are the upstream gRPC connections' options for the request
// path (NewGRPCEndpoint puts them before its callers' own): the fixed
// windows.
func DialOptions() []grpc.DialOption {
	return []grpc.DialOption{grpc.WithInitialWindowSize(WindowSize), grpc.WithInitialConnWindowSize(WindowSize)}
}

// RawInfer reports whether the endpoint can take ModelInferRaw.
func (e *Endpoint) RawInfer() bool { return e.conn != nil }

// UseLeanClient makes ModelInferRaw go through internal/h2's lean client
// (its own HTTP/2 connection to the endpoint; over TLS with tlsCfg, the
// configuration grpc-go's connection was given, nil for plaintext); every
// other call stays on grpc-go's connection.
func (e *Endpoint) UseLeanClient(tlsCfg *tls.Config) {
	e.lean = &h2.Client{Addr: e.Addr, TLS: tlsCfg, StreamWindow: WindowSize, ConnWindow: WindowSize}
}

// ModelInferRaw calls ModelInfer with a request in its wire form and
// returns the answer in its wire form. The answer is checked as
// proto.Unmarshal would decode it (pbwire.Check): one that is not
// decodable fails as grpc-go's decoding does (codes.Internal), so a
// version answering garbage is judged as before and the client never gets
// bytes it cannot decode.
func (e *Endpoint) ModelInferRaw(ctx context.Context, req []byte) ([]byte, error) {
	var b []byte
	if e.lean != nil {
		var err error
		if b, err = e.lean.Invoke(ctx, pb.GRPCInferenceService_ModelInfer_FullMethodName, req); err != nil {
			return nil, err
		}
	} else {
		in, out := RawMessage{B: req}, RawMessage{}
		if err := e.conn.Invoke(ctx, pb.GRPCInferenceService_ModelInfer_FullMethodName, &in, &out, rawCall); err != nil {
			return nil, err
		}
		b = out.B
	}
	if err := pbwire.Check(pbwire.Response, b); err != nil {
		return nil, status.Errorf(codes.Internal, "grpc: failed to unmarshal the received message: %v", err)
	}
	return b, nil
}
