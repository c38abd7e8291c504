package xds

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"sync"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/switchyard-dev/switchyard/api/statspb"
	"github.com/switchyard-dev/switchyard/controlplane/auth"
	"github.com/switchyard-dev/switchyard/internal/seclog"
	"github.com/switchyard-dev/switchyard/internal/tlsutil"
)

// The xDS gRPC server (ADS and the stats stream) authenticates its
// callers whenever the REST API does (a tokens file, not
// --insecure-loopback-no-auth): a stream needs a verified client
// certificate (mTLS: its identity, spiffe://DOMAIN/proxy/NAME or the CN)
// or a token of the tokens file in its metadata ("authorization: Bearer
// <token>": the subject is the identity). Whatever authenticates a stream
// binds it: its xDS node id and every stats report's proxy must be the
// name the identity gives (nodeName), so a proxy reads and reports only as
// itself. A credential that is presented is checked even where none is
// required (mTLS on an insecure-loopback control plane). Refusals:
// UNAUTHENTICATED (no or a bad credential), PERMISSION_DENIED (a node or
// proxy that is not the identity's), each one named in the message,
// counted and logged through internal/seclog.

// xdsAuth is the xDS server's authentication (streamInterceptor).
type xdsAuth struct {
	auth     *auth.Authenticator // tokens (nil: none)
	required bool                // a credential is needed
	sec      *seclog.Log
	onRefuse func(service string) // the stats counter (nil: none)
}

// caller is who opened a stream: the subjects its credentials give (the
// certificate's identity, the token's subject), nil if anonymous.
type caller struct {
	subjects []string
}

// authenticate reads a stream's credentials.
func (x *xdsAuth) authenticate(ctx context.Context) (caller, seclog.Reason, string) {
	var c caller
	if p, ok := peer.FromContext(ctx); ok {
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok {
			if id := tlsutil.PeerIdentity(&ti.State); id != "" && len(ti.State.VerifiedChains) > 0 {
				c.subjects = append(c.subjects, id)
			}
		}
	}
	if vals := metadata.ValueFromIncomingContext(ctx, "authorization"); len(vals) > 0 {
		scheme, tok, found := strings.Cut(vals[0], " ")
		if !found || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
			return c, seclog.BadCredential, "authorization metadata: want \"Bearer <token>\""
		}
		id, ok := x.auth.Lookup(strings.TrimSpace(tok))
		if !ok {
			return c, seclog.BadCredential, "the bearer token in the authorization metadata is not accepted"
		}
		c.subjects = append(c.subjects, id.Subject)
	}
	if len(c.subjects) == 0 && x.required {
		return c, seclog.NoCredential, "xDS and stats need a credential: a client certificate (mTLS) or \"authorization: Bearer <token>\" metadata"
	}
	return c, "", ""
}

// nodeName is the proxy name an identity may use as its node id: NAME of
// spiffe://DOMAIN/proxy/NAME, and a token subject or certificate CN as it
// is. Other SPIFFE kinds (client, backend, ...) are no proxies.
func nodeName(subject string) (string, error) {
	if !strings.HasPrefix(subject, "spiffe://") {
		return subject, nil
	}
	u, err := url.Parse(subject)
	if err != nil {
		return "", fmt.Errorf("identity %s is not a valid SPIFFE ID", subject)
	}
	kind, name, ok := strings.Cut(strings.TrimPrefix(u.Path, "/"), "/")
	if !ok || kind != "proxy" || name == "" || strings.Contains(name, "/") {
		return "", fmt.Errorf("identity %s is not a proxy's (want spiffe://%s/proxy/NAME)", subject, u.Host)
	}
	return name, nil
}

// bind checks that node (an xDS node id or a report's proxy) is the
// caller's own name ("" error if so). A name that ends in "*" (a token
// subject such as "switchyard-proxy-*", for the pods of one Deployment,
// whose node ids are their pod names) admits the node ids with that
// prefix; a bare "*" admits none.
func (c caller) bind(what, node string) string {
	for _, s := range c.subjects {
		name, err := nodeName(s)
		if err != nil {
			return err.Error()
		}
		if !nodeMatches(name, node) {
			return fmt.Sprintf("%s %q is not the caller's: %s may only use %q", what, node, s, name)
		}
	}
	return ""
}

// nodeMatches: node is name, or starts with name's prefix before a final
// "*" (a non-empty one).
func nodeMatches(name, node string) bool {
	if prefix, ok := strings.CutSuffix(name, "*"); ok {
		return prefix != "" && strings.HasPrefix(node, prefix)
	}
	return node == name
}

// streamInterceptor authenticates every stream and binds its messages.
func (x *xdsAuth) streamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	c, reason, detail := x.authenticate(ss.Context())
	if reason != "" {
		return x.refuse(ss.Context(), info.FullMethod, c, reason, codes.Unauthenticated, detail)
	}
	if len(c.subjects) == 0 {
		return handler(srv, ss) // anonymous, allowed (no tokens)
	}
	w := &boundStream{ServerStream: ss, x: x, c: c, method: info.FullMethod}
	// The first message is read here so that a refused one ends the
	// stream with its own status (go-control-plane's server ends a stream
	// whose Recv fails without passing the error on).
	first, err := w.recvChecked(info.FullMethod)
	if err != nil {
		return err
	}
	w.first, w.started = first, true
	err = handler(srv, w)
	if refused := w.refused(); refused != nil {
		return refused
	}
	return err
}

// unaryInterceptor refuses unary calls as streams are (the xDS server
// serves none of its own; reflection and health would be here).
func (x *xdsAuth) unaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	c, reason, detail := x.authenticate(ctx)
	if reason != "" {
		return nil, x.refuse(ctx, info.FullMethod, c, reason, codes.Unauthenticated, detail)
	}
	return handler(ctx, req)
}

func (x *xdsAuth) refuse(ctx context.Context, method string, c caller, reason seclog.Reason, code codes.Code, detail string) error {
	remote := ""
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		remote = p.Addr.String()
	}
	x.sec.Refuse(seclog.Event{Subject: strings.Join(c.subjects, ","), Remote: remote, Method: method, Reason: reason, Detail: detail})
	if x.onRefuse != nil {
		x.onRefuse(method)
	}
	return status.Error(code, detail)
}

// boundStream checks each message a bound stream receives.
type boundStream struct {
	grpc.ServerStream
	x      *xdsAuth
	c      caller
	method string

	first   any  // the message read by the interceptor, handed out first
	started bool // the first message was read (later ones may omit the node)

	mu  sync.Mutex
	err error // the refusal that ended the stream
}

func (w *boundStream) refused() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// recvChecked reads one message of the stream's type and binds it.
func (w *boundStream) recvChecked(method string) (any, error) {
	var m any
	switch {
	case strings.HasSuffix(method, "/StreamAggregatedResources"):
		m = new(discoveryv3.DiscoveryRequest)
	case method == statspb.Stats_Stream_FullMethodName:
		m = new(statspb.Report)
	default:
		return nil, w.x.refuse(w.Context(), method, w.c, seclog.NotAllowed, codes.PermissionDenied, "method "+method+" is not served to authenticated callers")
	}
	if err := w.ServerStream.RecvMsg(m); err != nil {
		return nil, err
	}
	if err := w.check(m); err != nil {
		return nil, err
	}
	return m, nil
}

func (w *boundStream) check(m any) error {
	var what, node string
	switch v := m.(type) {
	case *discoveryv3.DiscoveryRequest:
		what = "xDS node id"
		if v.GetNode() == nil && w.started {
			return nil // node is sent on a stream's first request only
		}
		node = v.GetNode().GetId()
	case *statspb.Report:
		what, node = "stats report proxy", v.GetProxy()
	default:
		return nil
	}
	if msg := w.c.bind(what, node); msg != "" {
		err := w.x.refuse(w.Context(), w.method, w.c, seclog.NotAllowed, codes.PermissionDenied, msg)
		w.mu.Lock()
		w.err = err
		w.mu.Unlock()
		return err
	}
	return nil
}

// RecvMsg hands out the first message, then reads and binds the others.
func (w *boundStream) RecvMsg(m any) error {
	if f := w.first; f != nil {
		w.first = nil
		return copyMsg(m, f)
	}
	if err := w.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	return w.check(m)
}

// copyMsg moves the pre-read message into the one the handler passes.
func copyMsg(dst, src any) error {
	d, ok := dst.(proto.Message)
	sm, ok2 := src.(proto.Message)
	if !ok || !ok2 || d.ProtoReflect().Descriptor() != sm.ProtoReflect().Descriptor() {
		return status.Errorf(codes.Internal, "stream message type %T, want %T", dst, src)
	}
	proto.Reset(d)
	proto.Merge(d, sm)
	return nil
}
