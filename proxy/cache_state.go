package proxy

import (
	"bufio"
	"bytes"
	"net/http"
	"strings"

	"google.golang.org/grpc/metadata"

	"github.com/switchyard-dev/switchyard/fallback"
)

// extState is the per-exchange state the cache, fallback and shadow
// extensions share (Exchange.ext). It is zeroed with the exchange.
type extState struct {
	// noCache: the request said Cache-Control: no-cache (bypass the
	// prediction cache; the answer is still stored).
	noCache bool
	// key is the request's cache key for the variant it was routed to
	// (keyOK once computed; keyErr when the request could not be hashed).
	key           fallback.Key
	keyOK, keyErr bool
	// reqID is the request's id when the key came from the raw-body memo
	// (idOK), so a cache hit needs no JSON decoding at all.
	reqID string
	idOK  bool
	// shadow is the mirror job captured from the primary's answer; it is
	// enqueued once the answer was written (answered).
	shadow *shadowPending
}

// answered runs after the client's answer was written (or handed to
// grpc-go): the only work done there is a non-blocking enqueue of the
// shadow job, if the request was sampled.
func (e *extState) answered(x *Exchange, res *Result) {
	if e.shadow != nil {
		e.shadow.enqueue()
		e.shadow = nil
	}
}

// Header names (canonical form for the REST front-ends).
const (
	hdrFallbackReason = "X-Switchyard-Fallback-Reason"
	hdrCache          = "X-Switchyard-Cache"
	// HeaderShadow marks a mirrored call to a shadow version (REST header
	// and gRPC metadata key), so backends and logs can tell it apart.
	HeaderShadow = "x-switchyard-shadow"
)

// writeExtHeaders writes the fallback and cache marks of res (lean
// front-end).
func writeExtHeaders(bw *bufio.Writer, res *Result) {
	if res.Fallback != "" {
		bw.WriteString("X-Switchyard-Fallback: ")
		bw.WriteString(res.Fallback)
		bw.WriteString("\r\n")
	}
	if res.FallbackReason != "" {
		bw.WriteString("X-Switchyard-Fallback-Reason: ")
		bw.WriteString(res.FallbackReason)
		bw.WriteString("\r\n")
	}
	if res.Cache != "" {
		bw.WriteString("X-Switchyard-Cache: ")
		bw.WriteString(res.Cache)
		bw.WriteString("\r\n")
	}
}

// setExtHeaders sets the fallback reason and cache marks (net/http
// front-end; x-switchyard-fallback is set by the caller).
func setExtHeaders(h http.Header, res *Result) {
	if res.FallbackReason != "" {
		h[hdrFallbackReason] = []string{res.FallbackReason}
	}
	if res.Cache != "" {
		h[hdrCache] = []string{res.Cache}
	}
}

// appendExtMetadata adds the fallback reason and cache marks to gRPC
// header metadata.
func appendExtMetadata(md metadata.MD, res *Result) {
	if res.FallbackReason != "" {
		md.Append(fallback.HeaderFallbackReason, res.FallbackReason)
	}
	if res.Cache != "" {
		md.Append(fallback.HeaderCache, res.Cache)
	}
}

// hasNoCache reports whether a Cache-Control value holds the no-cache (or
// no-store) directive.
func hasNoCache[T string | []byte](v T) bool {
	if len(v) < 8 {
		return false
	}
	switch s := any(v).(type) {
	case string:
		s = strings.ToLower(s)
		return strings.Contains(s, "no-cache") || strings.Contains(s, "no-store")
	case []byte:
		s = bytes.ToLower(s)
		return bytes.Contains(s, []byte("no-cache")) || bytes.Contains(s, []byte("no-store"))
	}
	return false
}
