package xds_test

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/switchyard-dev/switchyard/api"
	"github.com/switchyard-dev/switchyard/api/statspb"
	"github.com/switchyard-dev/switchyard/controlplane"
	"github.com/switchyard-dev/switchyard/controlplane/auth"
	"github.com/switchyard-dev/switchyard/controlplane/cptest"
	"github.com/switchyard-dev/switchyard/controlplane/store"
	"github.com/switchyard-dev/switchyard/internal/tlsutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

const proxyToken = "proxy-1-token-0123456789"

// xdsReq is a first ADS request of node.
func xdsReq(node string) *discoveryv3.DiscoveryRequest {
	return &discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: node}, TypeUrl: resource.ClusterType}
}

// adsOnce opens an ADS stream on conn (ctx carries any token), sends the
// first request of node and returns the first answer's error.
func adsOnce(t *testing.T, ctx context.Context, conn *grpc.ClientConn, node string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	s, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		return err
	}
	if err := s.Send(xdsReq(node)); err != nil && err != io.EOF {
		return err
	}
	_, err = s.Recv()
	return err
}

// reportOnce sends one stats report on a new stream and returns the
// answer's error.
func reportOnce(t *testing.T, ctx context.Context, conn *grpc.ClientConn, r *statspb.Report) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	s, err := statspb.NewStatsClient(conn).Stream(ctx)
	if err != nil {
		return err
	}
	if err := s.Send(r); err != nil && err != io.EOF {
		return err
	}
	_, err = s.Recv()
	return err
}

func wantCode(t *testing.T, what string, err error, code codes.Code, msg string) {
	t.Helper()
	if status.Code(err) != code || !strings.Contains(status.Convert(err).Message(), msg) {
		t.Errorf("%s: %v; want %s naming %q", what, err, code, msg)
	}
}

func bearerCtx(tok string) context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+tok)
}

// TestFakeStatsCannotMoveCanary is issue 18's attack: with the API on
// tokens, stats reports sent without a credential (or by a subject for
// another proxy) are refused and do not roll a running canary back; the
// same reports from the proxy itself, with its token, do.
func TestFakeStatsCannotMoveCanary(t *testing.T) {
	auth, err := auth.NewAuthenticator([]auth.Token{
		{Subject: "vera", Role: "viewer", Token: cptest.ViewerToken},
		{Subject: "olga", Role: "operator", Token: cptest.OperatorToken},
		{Subject: "proxy-1", Role: "viewer", Token: proxyToken},
	})
	if err != nil {
		t.Fatal(err)
	}
	cp := cptest.Start(t, controlplane.Config{Auth: auth}, &controlplane.CanaryOptions{Interval: time.Hour, AckWait: time.Millisecond})
	cc := cp.Canary
	ctx := context.Background()
	if _, err := cp.Store().Put(ctx, cptest.CanaryModel(t, map[string]int{"v1": 90, "v2": 10}, &api.Canary{Version: "v2",
		StepDuration: api.Duration(time.Hour), MinRequests: 10, ConsecutiveFailures: 1}), store.Precondition{}, store.Change{Subject: "t", Action: "put"}); err != nil {
		t.Fatal(err)
	}
	cc.TickOnce(ctx)
	phase := func() string {
		s, err := cc.Status(ctx, "m")
		if err != nil {
			t.Fatal(err)
		}
		return s.Phase
	}
	if p := phase(); p != "progressing" {
		t.Fatalf("canary phase %q, want progressing", p)
	}

	conn, err := grpc.NewClient(cp.XDSAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	bad := func(proxy string, seq uint64) *statspb.Report {
		r := cptest.Report(proxy, "boot-x", seq, 1000, time.Millisecond)
		r.Entries[0].Version = "v2"
		r.Entries[0].Errors = map[string]uint64{"status_5xx": 1000}
		return r
	}
	for i := range 4 {
		wantCode(t, "anonymous report", reportOnce(t, ctx, conn, bad("proxy-1", uint64(i+1))), codes.Unauthenticated, "need a credential")
	}
	wantCode(t, "a viewer's token reporting as proxy-1", reportOnce(t, bearerCtx(cptest.ViewerToken), conn, bad("proxy-1", 9)),
		codes.PermissionDenied, `stats report proxy "proxy-1" is not the caller's: vera may only use "vera"`)
	wantCode(t, "a bad token", reportOnce(t, bearerCtx("not-a-token-at-all-000"), conn, bad("proxy-1", 10)), codes.Unauthenticated, "not accepted")
	wantCode(t, "anonymous ADS", adsOnce(t, ctx, conn, "proxy-1"), codes.Unauthenticated, "need a credential")
	wantCode(t, "ADS as another node", adsOnce(t, bearerCtx(proxyToken), conn, "proxy-2"), codes.PermissionDenied, `xDS node id "proxy-2" is not the caller's`)
	if err := adsOnce(t, bearerCtx(proxyToken), conn, "proxy-1"); err != nil {
		t.Fatalf("ADS with the proxy's own token: %v", err)
	}
	cc.TickOnce(ctx)
	if p := phase(); p != "progressing" {
		t.Fatalf("after refused fake reports the canary is %q, want still progressing", p)
	}
	m := cptest.Metrics(t, cp)
	for _, want := range []string{`switchyard_controlplane_streams_refused_total{service="stats"} 6`, `switchyard_controlplane_streams_refused_total{service="ads"} 2`,
		`switchyard_security_refused_total{component="controlplane",reason="no_credential"} 5`} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	ev := string(cptest.Call(t, cp, "GET", "/v1/security/events", cptest.OperatorToken, nil).Body)
	for _, want := range []string{`"method":"/switchyard.stats.v1.Stats/Stream"`, `"reason":"no_credential"`, `"subject":"vera"`, `"reason":"not_allowed"`} {
		if !strings.Contains(ev, want) {
			t.Errorf("security events lack %s: %s", want, ev)
		}
	}
	if r := cptest.Call(t, cp, "GET", "/v1/security/events", cptest.ViewerToken, nil); r.Code != http.StatusForbidden {
		t.Errorf("security events for a viewer: %d", r.Code)
	}

	// The same figures from proxy-1 itself count: the canary rolls back.
	if err := reportOnce(t, bearerCtx(proxyToken), conn, bad("proxy-1", 1)); err != nil {
		t.Fatalf("proxy-1's own report: %v", err)
	}
	cc.TickOnce(ctx)
	if p := phase(); p != "rolled_back" {
		t.Fatalf("after proxy-1's own failing report the canary is %q, want rolled_back", p)
	}
}

// TestXDSAndAPIOverMutualTLS: the control plane serves its API and xDS
// over TLS with client certificates; a proxy's certificate
// (spiffe://…/proxy/NAME) is its credential on xDS and binds its node id;
// other identities and certificates of another CA are refused.
func TestXDSAndAPIOverMutualTLS(t *testing.T) {
	dir, other := t.TempDir(), t.TempDir()
	ca, err := tlsutil.NewCA("test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	otherCA, _ := tlsutil.NewCA("other", time.Hour)
	if err := ca.Write(dir); err != nil {
		t.Fatal(err)
	}
	issue := func(ca *tlsutil.CA, dir, kind, name string) tlsutil.Files {
		c, k, err := ca.Issue(tlsutil.LocalLeaf(tlsutil.DefaultTrustDomain, kind, name, time.Hour, nil, nil))
		if err != nil {
			t.Fatal(err)
		}
		if err := tlsutil.WritePair(dir, kind+"-"+name, c, k); err != nil {
			t.Fatal(err)
		}
		return tlsutil.Files{Cert: filepath.Join(dir, kind+"-"+name+".crt"), Key: filepath.Join(dir, kind+"-"+name+".key"), CA: filepath.Join(dir, "ca.crt")}
	}
	srv := issue(ca, dir, "controlplane", "cp")
	edge := issue(ca, dir, "proxy", "edge-1")
	syctl := issue(ca, dir, "client", "syctl")
	intruder := issue(otherCA, other, "proxy", "edge-1")
	cp := cptest.Start(t, controlplane.Config{TLS: &srv}, &controlplane.CanaryOptions{Interval: time.Hour})
	clientCfg := func(f tlsutil.Files) *tls.Config {
		c, err := tlsutil.NewClientConfig(tlsutil.Files{Cert: f.Cert, Key: f.Key, CA: srv.CA}, tlsutil.ClientOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	dial := func(f tlsutil.Files) *grpc.ClientConn {
		conn, err := grpc.NewClient(cp.XDSAddr(), grpc.WithTransportCredentials(credentials.NewTLS(clientCfg(f))))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	ctx := context.Background()
	if !strings.HasPrefix(cp.APIURL(), "https://") {
		t.Fatalf("APIURL %s", cp.APIURL())
	}
	if err := adsOnce(t, ctx, dial(edge), "edge-1"); err != nil {
		t.Fatalf("ADS with the proxy's certificate: %v", err)
	}
	wantCode(t, "ADS as another node", adsOnce(t, ctx, dial(edge), "edge-2"), codes.PermissionDenied,
		`xDS node id "edge-2" is not the caller's: spiffe://switchyard.local/proxy/edge-1 may only use "edge-1"`)
	wantCode(t, "ADS with a client certificate", adsOnce(t, ctx, dial(syctl), "syctl"), codes.PermissionDenied, "is not a proxy's")
	wantCode(t, "report as another proxy", reportOnce(t, ctx, dial(edge), cptest.Report("edge-2", "b", 1, 1, time.Millisecond)), codes.PermissionDenied, `stats report proxy "edge-2"`)
	if err := reportOnce(t, ctx, dial(edge), cptest.Report("edge-1", "b", 1, 1, time.Millisecond)); err != nil {
		t.Fatalf("the proxy's own report: %v", err)
	}
	for name, f := range map[string]tlsutil.Files{"no certificate": {}, "another CA's certificate": intruder} {
		if err := adsOnce(t, ctx, dial(f), "edge-1"); status.Code(err) != codes.Unavailable {
			t.Errorf("ADS with %s: %v, want a refused handshake (Unavailable)", name, err)
		}
	}

	// The API over mTLS: a client certificate and a token.
	hc := func(f tlsutil.Files) *http.Client {
		return &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{TLSClientConfig: clientCfg(f), DisableKeepAlives: true}}
	}
	get := func(c *http.Client, path, token string) (int, string, error) {
		req, _ := http.NewRequest("GET", cp.APIURL()+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := c.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), nil
	}
	if code, body, err := get(hc(syctl), "/v1/models", cptest.ViewerToken); err != nil || code != 200 {
		t.Fatalf("API over mTLS: %d %s %v", code, body, err)
	}
	if code, _, err := get(hc(syctl), "/v1/models", ""); err != nil || code != 401 {
		t.Fatalf("API over mTLS without a token: %d %v", code, err)
	}
	if _, _, err := get(hc(tlsutil.Files{}), "/v1/models", cptest.ViewerToken); err == nil {
		t.Fatal("API without a client certificate answered")
	}
	_, ev, _ := get(hc(syctl), "/v1/security/events", cptest.OperatorToken)
	for _, want := range []string{`"path":"/v1/models","reason":"no_credential"`, `"subject":"spiffe://switchyard.local/client/syctl"`, `"subject":"spiffe://switchyard.local/proxy/edge-1"`} {
		if !strings.Contains(ev, want) {
			t.Errorf("security events lack %s: %s", want, ev)
		}
	}
}
