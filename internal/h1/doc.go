// Package h1 is Switchyard's lean HTTP/1.1 server for the Open Inference
// Protocol's hot path: one goroutine per connection, pooled buffered
// readers and writers, request heads parsed in place (no header maps, no
// per-request goroutine or background read), reads and writes with raw
// system calls (internal/rawio) and lazily armed deadlines. A Fast function
// answers the requests it recognises (POST .../infer) straight on the
// connection's buffers; every other request goes to an http.Handler
// through a small adapter. The proxy's REST front-end and the inference
// backend's REST server both run on it.
//
// Measured (docs/benchmarks-proxy.md): net/http's server cost most of the
// proxy's gap to nginx; on this server the proxy matches nginx's requests
// per CPU-second.
//
// What it accepts: HTTP/1.1 and HTTP/1.0, Content-Length or a single
// "chunked" Transfer-Encoding (not both: the request-smuggling shape),
// Expect: 100-continue, pipelining (answers to requests already buffered
// share one write), keep-alive with an idle timeout. Malformed heads get a
// 400 (414, 431, 505 where they apply) with a JSON {"error": ...} body
// naming the problem, then the connection closes with a lingering close
// (as a body over the limit does after its 413): the write side is shut
// and what the client still sends is read and dropped for a bounded time,
// so a client still sending reads the answer instead of a reset.
// Shutdown closes idle connections at once and lets requests in flight
// finish (a body still arriving too).
package h1
