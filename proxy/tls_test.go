package proxy

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/switchyard-dev/switchyard/api"
	"github.com/switchyard-dev/switchyard/controlplane"
	"github.com/switchyard-dev/switchyard/controlplane/auth"
	"github.com/switchyard-dev/switchyard/inference-backend/backendtest"
	"github.com/switchyard-dev/switchyard/internal/tlsutil"
	pb "github.com/switchyard-dev/switchyard/oip/inferencepb"
)

// testPKI is a development CA in a temporary folder and the certificates
// issued from it (internal/tlsutil, the code behind `switchyard certs`).
type testPKI struct {
	t   testing.TB
	dir string
	ca  *tlsutil.CA
}

func newTestPKI(t testing.TB) *testPKI {
	t.Helper()
	ca, err := tlsutil.NewCA("test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := ca.Write(dir); err != nil {
		t.Fatal(err)
	}
	return &testPKI{t: t, dir: dir, ca: ca}
}

// issue writes KIND-NAME.crt/.key (spiffe://switchyard.local/KIND/NAME)
// and returns them with the CA.
func (k *testPKI) issue(kind, name string) tlsutil.Files {
	k.t.Helper()
	c, key, err := k.ca.Issue(tlsutil.LocalLeaf(tlsutil.DefaultTrustDomain, kind, name, time.Hour, nil, nil))
	if err != nil {
		k.t.Fatal(err)
	}
	if err := tlsutil.WritePair(k.dir, kind+"-"+name, c, key); err != nil {
		k.t.Fatal(err)
	}
	return tlsutil.Files{Cert: filepath.Join(k.dir, kind+"-"+name+".crt"), Key: filepath.Join(k.dir, kind+"-"+name+".key"), CA: filepath.Join(k.dir, "ca.crt")}
}

func (k *testPKI) client(f tlsutil.Files) *tls.Config {
	k.t.Helper()
	c, err := tlsutil.NewClientConfig(tlsutil.Files{Cert: f.Cert, Key: f.Key, CA: filepath.Join(k.dir, "ca.crt")}, tlsutil.ClientOptions{})
	if err != nil {
		k.t.Fatal(err)
	}
	return c
}

const cpOperatorToken = "operator-token-0123456789"

// TestTLSListenersAndControlPlaneMTLS: the proxy serves REST, gRPC and
// admin over mTLS, and reaches a control plane that serves xDS and stats
// over mTLS and takes tokens on its API: the proxy's certificate
// (spiffe://…/proxy/edge-1) authenticates its xDS and stats streams. A
// second proxy with the same certificate claiming another node id is
// refused (PERMISSION_DENIED) and gets no configuration.
func TestTLSListenersAndControlPlaneMTLS(t *testing.T) {
	pki := newTestPKI(t)
	cpFiles, edge, ops := pki.issue("controlplane", "cp"), pki.issue("proxy", "edge-1"), pki.issue("client", "ops")
	be := backendtest.Start(t, backendtest.Options{})
	auth, err := auth.NewAuthenticator([]auth.Token{{Subject: "olga", Role: "operator", Token: cpOperatorToken}})
	if err != nil {
		t.Fatal(err)
	}
	cp, err := controlplane.New(controlplane.Config{StatePath: filepath.Join(t.TempDir(), "state.db"), APIAddr: "127.0.0.1:0",
		XDSAddr: "127.0.0.1:0", Auth: auth, TLS: &cpFiles})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cp.EnableCanary(controlplane.CanaryOptions{Interval: time.Hour}); err != nil {
		cp.Close()
		t.Fatal(err)
	}
	if err := cp.Start(context.Background()); err != nil {
		cp.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { cp.Close() })
	putModel(t, cp, demoModel(be, map[string]int{"v1": 100}))

	p := startProxy(t, Config{XDSAddr: cp.XDSAddr(), NodeID: "edge-1", TLS: &edge, ControlPlaneTLS: &edge,
		StatsInterval: 50 * time.Millisecond, XDSBackoffMin: 20 * time.Millisecond, XDSBackoffMax: 200 * time.Millisecond})
	waitFor(t, "the configuration over mTLS", func() bool { return p.Route("recommender") != nil })

	// REST over mTLS.
	hc := func(cfg *tls.Config) *http.Client {
		return &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true}}
	}
	url := "https://" + p.HTTPAddr() + "/v2/models/recommender/infer"
	for i := range 3 {
		if a := post(t, hc(pki.client(ops)), url, inferBody(i), nil); a.status != 200 || a.variant != "v1" {
			t.Fatalf("REST infer over mTLS: %d %s %s", a.status, a.variant, a.body)
		}
	}
	if a := post(t, hc(pki.client(tlsutil.Files{})), url, inferBody(0), nil); a.status != -1 {
		t.Fatalf("REST infer without a client certificate: %d %s, want a refused handshake", a.status, a.body)
	}
	if a := post(t, newHTTPClient(), "http://"+p.HTTPAddr()+"/v2/models/recommender/infer", inferBody(0), nil); a.status == 200 {
		t.Fatal("plaintext REST answered on the TLS listener")
	}
	// gRPC over mTLS.
	conn, err := grpc.NewClient(p.GRPCAddr(), grpc.WithTransportCredentials(credentials.NewTLS(pki.client(ops))))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if r, err := pb.NewGRPCInferenceServiceClient(conn).ModelReady(ctx, &pb.ModelReadyRequest{Name: "recommender"}); err != nil || !r.Ready {
		t.Fatalf("gRPC ModelReady over mTLS: %v %v", r, err)
	}
	// Admin over mTLS: /ready open; /config_dump to a loopback caller.
	for _, path := range []string{"/ready", "/config_dump"} {
		resp, err := hc(pki.client(ops)).Get("https://" + p.AdminAddr() + path)
		if err != nil {
			t.Fatalf("admin %s over mTLS: %v", path, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("admin %s: %d %s", path, resp.StatusCode, b)
		}
	}
	// The control plane knows the proxy by its node id, its admin as https,
	// and its stats stream is acknowledged.
	waitFor(t, "stats reports acknowledged", func() bool { return p.StatsReporterStatus().Acked > 0 })
	var admin string
	for _, ps := range cp.Tracker().Proxies() {
		if ps.Node == "edge-1" {
			admin = ps.Admin
		}
	}
	if admin != "https://"+p.AdminAddr() {
		t.Fatalf("control plane sees edge-1's admin at %q, want https://%s", admin, p.AdminAddr())
	}

	// The same certificate claiming another node id.
	imp := startProxy(t, Config{XDSAddr: cp.XDSAddr(), NodeID: "edge-2", ControlPlaneTLS: &edge,
		StatsInterval: 50 * time.Millisecond, XDSBackoffMin: 20 * time.Millisecond, XDSBackoffMax: 200 * time.Millisecond})
	waitFor(t, "the impostor's xDS refusal", func() bool { return strings.Contains(imp.XDSStatus().LastError, "PermissionDenied") })
	waitFor(t, "the impostor's stats refusal", func() bool { return strings.Contains(imp.StatsReporterStatus().LastError, "PermissionDenied") })
	if imp.Route("recommender") != nil || imp.StatsReporterStatus().Acked != 0 {
		t.Fatal("a proxy claiming another node id got a configuration or an acknowledged report")
	}
	if e := imp.XDSStatus().LastError; !strings.Contains(e, `xDS node id "edge-2" is not the caller's: spiffe://switchyard.local/proxy/edge-1 may only use "edge-1"`) {
		t.Errorf("impostor's xDS error %q", e)
	}
}

// TestControlPlaneToken: over plaintext, a proxy presents a token of the
// control plane's tokens file (subject = its node id) on xDS and stats;
// without it, it gets nothing.
func TestControlPlaneToken(t *testing.T) {
	be := backendtest.Start(t, backendtest.Options{})
	const tok = "proxy-a-token-0123456789"
	auth, err := auth.NewAuthenticator([]auth.Token{{Subject: "proxy-a", Role: "viewer", Token: tok}})
	if err != nil {
		t.Fatal(err)
	}
	cp, err := controlplane.New(controlplane.Config{StatePath: filepath.Join(t.TempDir(), "state.db"), APIAddr: "127.0.0.1:0", XDSAddr: "127.0.0.1:0", Auth: auth})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cp.EnableCanary(controlplane.CanaryOptions{Interval: time.Hour}); err != nil {
		cp.Close()
		t.Fatal(err)
	}
	if err := cp.Start(context.Background()); err != nil {
		cp.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { cp.Close() })
	putModel(t, cp, demoModel(be, map[string]int{"v1": 100}))
	cfg := Config{XDSAddr: cp.XDSAddr(), NodeID: "proxy-a", StatsInterval: 50 * time.Millisecond,
		XDSBackoffMin: 20 * time.Millisecond, XDSBackoffMax: 200 * time.Millisecond}
	anon := startProxy(t, cfg)
	cfg.ControlPlaneToken = tok
	p := startProxy(t, cfg)
	waitFor(t, "the configuration with a token", func() bool { return p.Route("recommender") != nil })
	waitFor(t, "stats with a token", func() bool { return p.StatsReporterStatus().Acked > 0 })
	waitFor(t, "the anonymous proxy's refusal", func() bool { return strings.Contains(anon.XDSStatus().LastError, "Unauthenticated") })
	waitFor(t, "the anonymous stats refusal", func() bool { return strings.Contains(anon.StatsReporterStatus().LastError, "Unauthenticated") })
	if anon.Route("recommender") != nil {
		t.Fatal("an anonymous proxy got the configuration")
	}
}

// TestUpstreamMTLS: a backend that requires client certificates
// (--tls-client-ca) is reached through the proxy over mTLS, REST and gRPC
// versions alike: per version from the Model document, carried by the
// control plane in the xDS clusters' transport_socket; and from the
// proxy's default (Config.UpstreamTLS). Without a client certificate the
// backend refuses the proxy.
func TestUpstreamMTLS(t *testing.T) {
	pki := newTestPKI(t)
	beFiles, proxyFiles := pki.issue("backend", "b1"), pki.issue("proxy", "p1")
	be := backendtest.Start(t, backendtest.Options{TLS: &beFiles})
	withTLS := func(tl *api.UpstreamTLS) api.Model {
		m := demoModel(be, map[string]int{"v1": 50, "v3": 50})
		for i := range m.Spec.Versions {
			m.Spec.Versions[i].TLS = tl
		}
		return m
	}
	call := func(p *Proxy, version string) answer {
		return post(t, newHTTPClient(), "http://"+p.HTTPAddr()+"/v2/models/recommender/versions/"+version+"/infer", inferBody(1), nil)
	}

	// Per version, through xDS.
	cp, err := controlplane.New(controlplane.Config{StatePath: filepath.Join(t.TempDir(), "state.db"), APIAddr: "127.0.0.1:0",
		XDSAddr: "127.0.0.1:0", InsecureLoopbackNoAuth: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := cp.Start(context.Background()); err != nil {
		cp.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { cp.Close() })
	putModel(t, cp, withTLS(&api.UpstreamTLS{CAFile: proxyFiles.CA, CertFile: proxyFiles.Cert, KeyFile: proxyFiles.Key}))
	p := startProxy(t, Config{XDSAddr: cp.XDSAddr(), NodeID: "p1", XDSBackoffMin: 20 * time.Millisecond, XDSBackoffMax: 200 * time.Millisecond})
	waitFor(t, "the configuration", func() bool { return p.Route("recommender") != nil })
	models, _, _ := p.Models()
	if tl := models[0].Spec.Versions[0].TLS; tl == nil || tl.CertFile != proxyFiles.Cert {
		t.Fatalf("the proxy's model lacks the version's TLS: %+v", tl)
	}
	for _, v := range []string{"v1", "v3"} {
		if a := call(p, v); a.status != 200 || a.variant != v {
			t.Fatalf("%s over per-version mTLS: %d %s %s", v, a.status, a.variant, a.body)
		}
	}
	// gRPC to the gRPC version: passed through on the lean client, over mTLS.
	grpcV3 := func(p *Proxy) error {
		cc, err := grpc.NewClient(p.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		_, err = pb.NewGRPCInferenceServiceClient(cc).ModelInfer(context.Background(), &pb.ModelInferRequest{ModelName: "recommender", ModelVersion: "v3",
			Inputs: []*pb.ModelInferRequest_InferInputTensor{{Name: "features", Datatype: "FP32", Shape: []int64{1, 32}, Contents: &pb.InferTensorContents{Fp32Contents: make([]float32, 32)}}}})
		return err
	}
	if err := grpcV3(p); err != nil {
		t.Fatalf("gRPC to v3 over per-version mTLS: %v", err)
	}

	// The proxy-wide default, and a CA without a client certificate.
	def := startProxy(t, Config{Models: []api.Model{withTLS(nil)}, UpstreamTLS: &proxyFiles})
	for _, v := range []string{"v1", "v3"} {
		if a := call(def, v); a.status != 200 || a.variant != v {
			t.Fatalf("%s over the default mTLS: %d %s %s", v, a.status, a.variant, a.body)
		}
	}
	noCert := withTLS(&api.UpstreamTLS{CAFile: proxyFiles.CA})
	noCert.Spec.Retries = nil
	anon := startProxy(t, Config{Models: []api.Model{noCert}})
	for _, v := range []string{"v1", "v3"} {
		if a := call(anon, v); a.status == 200 {
			t.Fatalf("%s without a client certificate answered 200; the backend requires one", v)
		}
	}
	if err := grpcV3(anon); err == nil {
		t.Fatal("gRPC to v3 without a client certificate answered; the backend requires one")
	}
	// A version that names files that are not there is refused.
	bad := withTLS(&api.UpstreamTLS{CAFile: filepath.Join(t.TempDir(), "nope.crt")})
	if _, err := New(Config{Models: []api.Model{bad}}); err == nil || !strings.Contains(err.Error(), "nope.crt") {
		t.Fatalf("a missing CA file: %v", err)
	}
}

// TestProxyCertificateReload: the proxy's REST, gRPC and admin listeners
// serve a rewritten certificate at the next handshakes, no restart.
func TestProxyCertificateReload(t *testing.T) {
	pki := newTestPKI(t)
	files := pki.issue("proxy", "p1")
	p := startProxy(t, Config{TLS: &files})
	served := func(addr string, protos ...string) string {
		cfg := pki.client(tlsutil.Files{})
		cfg.NextProtos = protos
		c, err := tls.Dial("tcp", addr, cfg)
		if err != nil {
			t.Fatalf("dial %s: %v", addr, err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].Subject.CommonName
	}
	for _, a := range []string{p.HTTPAddr(), p.AdminAddr()} {
		if cn := served(a, "http/1.1"); cn != "p1" {
			t.Fatalf("%s serves %q", a, cn)
		}
	}
	if cn := served(p.GRPCAddr(), "h2"); cn != "p1" {
		t.Fatalf("gRPC serves %q", cn)
	}
	c, k, err := pki.ca.Issue(tlsutil.Leaf{CommonName: "p1-rotated", DNSNames: []string{"localhost"},
		IPs: tlsutil.LocalLeaf("", "", "", 0, nil, nil).IPs, ValidFor: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if err := tlsutil.WritePair(pki.dir, "proxy-p1", c, k); err != nil {
		t.Fatal(err)
	}
	for _, l := range []struct {
		addr  string
		proto string
	}{{p.HTTPAddr(), "http/1.1"}, {p.GRPCAddr(), "h2"}, {p.AdminAddr(), "http/1.1"}} {
		var cn string
		for range 100 { // checked at most once a second
			if cn = served(l.addr, l.proto); cn == "p1-rotated" {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if cn != "p1-rotated" {
			t.Errorf("%s still serves %q after the files were rewritten", l.addr, cn)
		}
	}
}
