package backend

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"log/slog"
	"net/http"
	"slices"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/switchyard-dev/switchyard/internal/seclog"
	"github.com/switchyard-dev/switchyard/internal/tlsutil"
	"github.com/switchyard-dev/switchyard/oip"
)

// EnvRepositoryToken is the environment variable holding a bearer token
// accepted by the repository API (besides --repository-token-file).
const EnvRepositoryToken = "SWITCHYARD_REPOSITORY_TOKEN"

// SecurityEventsPath lists the refused calls (seclog) on the REST port; it
// takes the repository API's credential.
const SecurityEventsPath = "/v2/security/events"

// RepositoryAccess says who may call the model repository API's load and
// unload (REST POST /v2/repository/models/{m}/load|unload, gRPC
// RepositoryModelLoad/Unload) and list the security log. The zero value
// turns them off: every such call is refused with 403. The index and
// everything else stay open.
type RepositoryAccess struct {
	// Tokens are accepted bearer tokens (Authorization: Bearer T on REST,
	// metadata "authorization: Bearer T" on gRPC).
	Tokens []string
	// Identities are accepted mTLS client identities (tlsutil.Identity:
	// the spiffe:// URI SAN, else the CN); they need TLS with a client CA.
	Identities []string
	// Open accepts every caller (development only).
	Open bool
}

func (a RepositoryAccess) enabled() bool { return a.Open || len(a.Tokens) > 0 || len(a.Identities) > 0 }

// credential is what a caller presented.
type credential struct {
	bearer    string
	hasBearer bool
	identity  string // verified mTLS identity, "" if none
}

// verdict is the access decision for one call.
type verdict struct {
	ok      bool
	reason  seclog.Reason
	subject string // the identity the decision was about ("" if none)
	msg     string
}

// decideAccess is the pure access rule of the repository API.
func decideAccess(a RepositoryAccess, hashes [][32]byte, c credential) verdict {
	switch {
	case !a.enabled():
		return verdict{reason: seclog.Disabled, subject: c.identity, msg: "the model repository API is off on this backend (start it with --repository-token-file, $" + EnvRepositoryToken + " or --repository-allow; docs/security.md)"}
	case a.Open:
		return verdict{ok: true, subject: c.identity}
	case c.identity != "" && slices.Contains(a.Identities, c.identity):
		return verdict{ok: true, subject: c.identity}
	case c.hasBearer:
		h := sha256.Sum256([]byte(c.bearer))
		match := 0
		for _, w := range hashes {
			match |= subtle.ConstantTimeCompare(h[:], w[:])
		}
		if match == 1 {
			return verdict{ok: true, subject: c.identity}
		}
		return verdict{reason: seclog.BadCredential, subject: c.identity, msg: "the bearer token is not accepted by this backend's repository API"}
	case c.identity != "":
		return verdict{reason: seclog.NotAllowed, subject: c.identity, msg: "identity " + c.identity + " may not use this backend's repository API"}
	}
	return verdict{reason: seclog.NoCredential, msg: "the model repository API needs a credential: Authorization: Bearer <token>, or a client certificate whose identity is allowed"}
}

// status is the verdict's REST status and gRPC code.
func (v verdict) status() (int, codes.Code) {
	if v.reason == seclog.NoCredential || v.reason == seclog.BadCredential {
		return http.StatusUnauthorized, codes.Unauthenticated
	}
	return http.StatusForbidden, codes.PermissionDenied
}

// repoGuard applies RepositoryAccess on both transports and records
// refusals in the security log.
type repoGuard struct {
	access RepositoryAccess
	hashes [][32]byte
	log    *seclog.Log
}

func newRepoGuard(a RepositoryAccess, log *slog.Logger, reg prometheus.Registerer) (*repoGuard, error) {
	g := &repoGuard{access: a, log: seclog.New(seclog.Options{Component: "backend", Logger: log, Registerer: reg})}
	for _, t := range a.Tokens {
		if t = strings.TrimSpace(t); t != "" {
			g.hashes = append(g.hashes, sha256.Sum256([]byte(t)))
		}
	}
	return g, nil
}

// guardedREST reports whether a REST call needs the credential.
func guardedREST(path string) bool {
	if path == SecurityEventsPath {
		return true
	}
	r := oip.ParseHTTPPath(path)
	return r.Kind == oip.RouteRepositoryLoad || r.Kind == oip.RouteRepositoryUnload
}

func bearerOf(v string) (string, bool) {
	if len(v) > 7 && strings.EqualFold(v[:7], "bearer ") {
		return strings.TrimSpace(v[7:]), true
	}
	return "", v != ""
}

func (g *repoGuard) http(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !guardedREST(r.URL.EscapedPath()) || g.allowHTTP(w, r) {
			next.ServeHTTP(w, r)
		}
	})
}

// allowHTTP decides a REST call; a refused one is answered here.
func (g *repoGuard) allowHTTP(w http.ResponseWriter, r *http.Request) bool {
	var c credential
	c.bearer, c.hasBearer = bearerOf(r.Header.Get("Authorization"))
	c.identity = tlsutil.PeerIdentity(r.TLS)
	v := decideAccess(g.access, g.hashes, c)
	if v.ok {
		return true
	}
	g.log.Refuse(seclog.Event{Subject: v.subject, Remote: r.RemoteAddr, Method: r.Method, Path: r.URL.Path, Reason: v.reason, Detail: v.msg})
	st, _ := v.status()
	if st == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="switchyard-backend"`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(st)
	b, _ := json.Marshal(struct {
		Error string `json:"error"`
	}{v.msg})
	w.Write(b)
	return false
}

func (g *repoGuard) eventsHandler() http.Handler { return g.http(g.log.Handler()) }

// guardedGRPC are the gRPC methods that need the credential.
func guardedGRPC(fullMethod string) bool {
	return strings.HasSuffix(fullMethod, "/RepositoryModelLoad") || strings.HasSuffix(fullMethod, "/RepositoryModelUnload")
}

func (g *repoGuard) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if !guardedGRPC(info.FullMethod) {
		return handler(ctx, req)
	}
	var c credential
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if a := md.Get("authorization"); len(a) > 0 {
			c.bearer, c.hasBearer = bearerOf(a[0])
		}
	}
	remote := ""
	if p, ok := peer.FromContext(ctx); ok {
		remote = p.Addr.String()
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok {
			c.identity = tlsutil.PeerIdentity(&ti.State)
		}
	}
	v := decideAccess(g.access, g.hashes, c)
	if v.ok {
		return handler(ctx, req)
	}
	g.log.Refuse(seclog.Event{Subject: v.subject, Remote: remote, Method: info.FullMethod, Reason: v.reason, Detail: v.msg})
	_, code := v.status()
	return nil, status.Error(code, v.msg)
}
