package pipeline

import (
	"bufio"
	"bytes"
	"strings"

	"google.golang.org/grpc/metadata"

	"github.com/switchyard-dev/switchyard/fallback"
)

// Response marks: which fallback step answered and why, and cache hits,
// as REST headers (X-Switchyard-Fallback, X-Switchyard-Fallback-Reason,
// X-Switchyard-Cache) and the same gRPC header metadata keys.

// HeaderShadow marks a mirrored call to a shadow version (REST header and
// gRPC metadata key), so backends and logs can tell it apart.
const HeaderShadow = "x-switchyard-shadow"

// WriteMarks writes the fallback and cache marks of res (REST).
func WriteMarks(bw *bufio.Writer, res *Result) {
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

// AppendMarks adds the fallback and cache marks of res to gRPC header
// metadata.
func AppendMarks(md metadata.MD, res *Result) {
	if res.Fallback != "" {
		md.Append(fallback.HeaderFallback, res.Fallback)
	}
	if res.FallbackReason != "" {
		md.Append(fallback.HeaderFallbackReason, res.FallbackReason)
	}
	if res.Cache != "" {
		md.Append(fallback.HeaderCache, res.Cache)
	}
}

// HasNoCache reports whether a Cache-Control value holds the no-cache (or
// no-store) directive.
func HasNoCache[T string | []byte](v T) bool {
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
