// Package h2 is Switchyard's lean HTTP/2 server for gRPC's hot path, as
// internal/h1 is for REST: one goroutine reading frames per connection
// (golang.org/x/net/http2's Framer and hpack), a unary call's answer
// (HEADERS, DATA and trailers) written with one system call, the request
// message gathered in place and handed to a FastFunc on a pooled worker
// goroutine, with no per-stream transport goroutines or channels.
//
// The decision is per stream: a stream whose method has a FastFunc
// (Server.Route), with content-type application/grpc[+proto] and no
// grpc-encoding other than identity, is a fast stream; every other stream
// (other methods, streaming RPCs, reflection, compressed messages) goes to
// Server.Fallback (a *grpc.Server's ServeHTTP) through an
// http.ResponseWriter, http.Flusher and request body fed from the
// stream's DATA frames, so it behaves as grpc-go's own server.
//
// What it does: the client preface and SETTINGS (acknowledged), PING,
// flow control both ways (a window it advertises per stream and per
// connection, credit returned as a fast stream's data arrives or as a
// fallback stream's handler reads it; DATA sent within the peer's
// windows, waiting for its WINDOW_UPDATE), RST_STREAM both ways (a reset
// cancels the stream's context), CONTINUATION (merged by the Framer),
// MAX_CONCURRENT_STREAMS (streams past it are refused), a header list
// size limit, a message size limit (RESOURCE_EXHAUSTED as grpc-go words
// it), grpc-timeout as the context's deadline, GOAWAY on Shutdown with the
// streams in flight finishing, and a GOAWAY naming the error for a
// malformed frame (connection errors) or RST_STREAM (stream errors).
//
// Client is the matching unary client (plaintext, prior knowledge): the
// caller writes its stream's HEADERS and DATA itself and waits for the
// connection's one reader goroutine to hand it the answer (see Client).
//
// Measured (docs/benchmarks.md, "The gRPC path"): the proxy's CPU per
// gRPC request at 1000 rps fell by 43–52 % against grpc-go's transport,
// to 1.16–1.55× nginx's grpc_pass (three sittings).
package h2
