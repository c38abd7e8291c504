// Package agent is the shadow agent: a child process that runs the
// proxy's shadow mirrors out of the proxy's process, at SCHED_IDLE
// priority (Init.Priority; taken once the agent has answered its first
// call, so its start never waits for an idle core), and the proxy's side
// of it.
//
// Mirroring a request costs tens of microseconds of CPU (decoding the
// request and the primary's answer, the shadow call, the comparison, the
// record). Inside the proxy that work runs at the request path's priority;
// in the agent it runs when a core is otherwise idle, and the proxy keeps
// only the capture and a memory copy into a hand-off buffer
// (docs/benchmarks.md, "What the shadow agent buys").
//
// # Pieces
//
//   - Client (Start): the proxy's side. It starts the agent — this same
//     executable re-run with EnvVar=1, on a socketpair (the agent's end is
//     descriptor 3), Pdeathsig SIGKILL so the agent dies with the proxy —
//     checks that it answers, restarts it with backoff when it ends, and
//     takes captured mirrors (Offer) without ever blocking the request
//     path. SetModels sends the live configuration; Report, Records and
//     Status ask the agent for the proxy's admin pages; the agent's
//     switchyard_shadow_* metric families are gathered into the proxy's
//     registry at scrape time (the last answer again, with its age, when
//     the agent does not answer within 2 s).
//   - Main and Serve: the agent's side. Main, called from an init function
//     of the package that supplies the Engine (the proxy package does), runs
//     the agent when EnvVar=1 and exits, so every binary linking that
//     package — switchyard and every test binary — is its own agent. Serve
//     reads frames and feeds an Engine: the proxy's in-process mirrors in a
//     headless proxy (no listeners, no xDS).
//   - The frame codec (frame.go): pure, fuzzed.
//
// This package imports api, internal/backoff, internal/tlsutil and
// telemetry, never the proxy: the proxy passes in what the agent needs
// (Options' funcs, the Engine, the Exchange of each mirror).
//
// # Wire protocol
//
// One unix stream socket per agent process, full duplex. Every message is
// a frame:
//
//	frame = length:uint32 little-endian, type:byte, body   (length counts type + body)
//
// at most 64 MiB (a bigger length is a corrupt stream, refused before
// allocating). Inside bodies, integers are varints and strings and byte
// strings are a uvarint length and the bytes. Frame types:
//
//	1 init    proxy → agent  JSON Init: protocol version, record directory
//	                         and limits, ring size, default upstream TLS;
//	                         the first frame, exactly once
//	2 config  proxy → agent  JSON {version, models}: the live models that
//	                         shadow (cache, fallback, canary sections
//	                         stripped); sent on every change and first
//	                         thing after every (re)start
//	3 job     proxy → agent  one mirrored request: flags (noise floor,
//	                         gRPC, primary error, primary NaN, protobuf
//	                         answer), model, primary and shadow versions,
//	                         start time, primary latency, the client's
//	                         request bytes (OIP REST body with its JSON
//	                         header length, or a protobuf
//	                         ModelInferRequest), then either the primary's
//	                         error (oip code, message) or its answer
//	                         (status, header length, bytes)
//	4 call    proxy → agent  id, kind, arguments: 1 report, 2 records
//	                         (JSON {model, window}), 3 metrics, 4 status
//	                         (a model; none: a liveness check)
//	5 reply   agent → proxy  id, ok, body: the engine's JSON (report,
//	                         records, status), the switchyard_shadow_*
//	                         families as length-delimited protobuf
//	                         (metrics), or the error message when !ok
//	6 events  agent → proxy  comparison counts per (model, shadow version):
//	                         compared, disagreed; sent at most every 50 ms
//	                         while comparisons happen; they feed the
//	                         proxy's canary shadow-disagreement gate
//
// Any malformed frame, unknown type or frame in the wrong direction ends
// the connection (the agent exits with an error; the proxy restarts it).
// Jobs for a model or versions the agent's configuration does not have
// (a configuration in flight) are dropped and counted there (reason
// "config").
//
// Versioning: Init carries ProtocolVersion (now 1). Both ends are the same
// executable, so they agree; an agent given another version refuses the
// connection. A change to a frame's layout bumps the version; JSON bodies
// may gain fields (unknown ones are ignored).
//
// # Backpressure, crashes, shutdown
//
// The request path never waits for the agent. Once a request's answer is
// written, its goroutine frames the mirror into the hand-off buffer (a
// copy under a mutex) and writes the buffer, with one non-blocking write,
// when its oldest job is 5 ms old or it holds 64 KiB; a flusher goroutine
// ticking every 20 ms while mirrors flow (parked otherwise) writes what a
// quiet moment left and finishes writes the socket did not take at once
// (the socket has 4 MiB of buffer each way). Mirrors are dropped, and
// counted by the proxy in switchyard_shadow_dropped_total{reason}, when:
//
//   - handoff_full: the buffer holds Options.Buffer bytes (default 8 MiB)
//     because the agent is not keeping up (a starved SCHED_IDLE process on
//     a saturated node, by design);
//   - agent_down: no agent is connected (starting, restarting), or the
//     connection broke with the mirror still buffered.
//
// Inside the agent, each model's mirror has its bounded queue as in the
// proxy (queue_full drops, counted by the agent).
//
// When the agent dies or its connection breaks, the supervisor kills what
// is left of it, restarts it after a backoff (Options.RestartBackoff,
// doubling to 5 s, reset after 30 s of uptime;
// switchyard_shadow_agent_restarts_total, switchyard_shadow_agent_up),
// and sends Init and the current configuration again; the new agent's
// counters and report ring start empty. Calls in flight fail; the admin
// pages answer with the error. If the first start fails (the agent does
// not answer a status call within 10 s) Start returns an error and the
// proxy mirrors in its own process instead.
//
// Shutdown: Client.Close writes what is buffered, closes the socket; the
// agent drains its mirrors (up to 5 s), flushes its record files, sends
// its last counts and exits; it is killed if it has not ended after 8 s.
package agent
