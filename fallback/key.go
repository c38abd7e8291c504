package fallback

import (
	"crypto/sha256"

	"github.com/switchyard-dev/switchyard/oip"
)

// Key identifies one cached prediction: the virtual model, the version that
// answered, the response encoding (e.g. "json" or "grpc": the cache holds
// encoded bytes, so REST and gRPC answers are kept apart), and the SHA-256
// of the request's canonical form. Versions never share entries because the
// version is part of the key.
type Key struct {
	Model   string
	Version string
	Format  string
	Hash    [32]byte
}

// NewKey hashes req's canonical form (oip.AppendCanonical). ignore, when not nil, names request
// parameters that do not change the answer (e.g. a trace id) and are left
// out of the hash.
func NewKey(model, version, format string, req *oip.InferRequest, ignore func(param string) bool) (Key, error) {
	var buf [512]byte
	c, err := oip.AppendCanonical(buf[:0], req, ignore)
	if err != nil {
		return Key{}, err
	}
	return Key{Model: model, Version: version, Format: format, Hash: sha256.Sum256(c)}, nil
}
