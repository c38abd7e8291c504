package backend_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/switchyard-dev/switchyard/inference-backend/backend"
	"github.com/switchyard-dev/switchyard/inference-backend/backendtest"
	"github.com/switchyard-dev/switchyard/inference-backend/demomodels"
	"github.com/switchyard-dev/switchyard/internal/tlsutil"
	pb "github.com/switchyard-dev/switchyard/oip/inferencepb"
)

// do sends one REST request with the given headers (name, value, ...).
func do(t *testing.T, hc *http.Client, method, url string, header ...string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

func grpcConn(t *testing.T, addr string, creds credentials.TransportCredentials) pb.GRPCInferenceServiceClient {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return pb.NewGRPCInferenceServiceClient(cc)
}

// The repository API takes a bearer token (REST and gRPC); missing and
// wrong tokens are refused with 401 / UNAUTHENTICATED and listed in the
// security log; loads of names the repository lacks leave no index entry
// and no metric series, and no answer names a server path.
func TestRepositoryAPIGuard(t *testing.T) {
	be := backendtest.Start(t, backendtest.Options{RepositoryAccess: &backend.RepositoryAccess{Tokens: []string{"s3cret"}}})
	base := "http://" + be.HTTPAddr
	hc := &http.Client{Timeout: 30 * time.Second}
	unload := base + "/v2/repository/models/" + demomodels.V2 + "/unload"
	bearer := func(tok string) []string { return []string{"Authorization", "Bearer " + tok} }

	code, hdr, body := do(t, hc, "POST", unload)
	if code != 401 || !strings.Contains(body, "needs a credential") || !strings.HasPrefix(hdr.Get("WWW-Authenticate"), "Bearer") {
		t.Fatalf("unload without a token: %d %q %s", code, hdr.Get("WWW-Authenticate"), body)
	}
	if code, _, body = do(t, hc, "POST", unload, bearer("guess")...); code != 401 || !strings.Contains(body, "not accepted") {
		t.Fatalf("unload with a wrong token: %d %s", code, body)
	}
	if ready, _ := be.Backend.ModelReady(context.Background(), demomodels.V2, ""); !ready {
		t.Fatal("a refused unload unloaded the model")
	}
	// Reading stays open.
	if code, _, body = do(t, hc, "POST", base+"/v2/repository/index"); code != 200 {
		t.Fatalf("index: %d %s", code, body)
	}

	gc := grpcConn(t, be.GRPCAddr, insecure.NewCredentials())
	ctx := context.Background()
	_, err := gc.RepositoryModelUnload(ctx, &pb.RepositoryModelUnloadRequest{ModelName: demomodels.V2})
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("gRPC unload without a token: %v", err)
	}
	authed := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer s3cret")
	if _, err := gc.RepositoryModelUnload(authed, &pb.RepositoryModelUnloadRequest{ModelName: demomodels.V2}); err != nil {
		t.Fatalf("gRPC unload with the token: %v", err)
	}
	if code, _, body = do(t, hc, "POST", base+"/v2/repository/models/"+demomodels.V2+"/load", bearer("s3cret")...); code != 200 {
		t.Fatalf("load with the token: %d %s", code, body)
	}

	// Loads of names the repository does not hold.
	metricsLines := func() int {
		_, _, m := do(t, hc, "GET", base+"/metrics")
		return strings.Count(m, "\n")
	}
	indexLen := func() int {
		_, _, ix := do(t, hc, "POST", base+"/v2/repository/index")
		var entries []json.RawMessage
		if err := json.Unmarshal([]byte(ix), &entries); err != nil {
			t.Fatalf("index %s: %v", ix, err)
		}
		return len(entries)
	}
	lines0, index0 := metricsLines(), indexLen()
	for i := range 60 {
		name := fmt.Sprintf("nosuch-%d", i)
		want := 404
		switch i % 3 {
		case 1:
			name, want = "..%2F..%2Fetc", 400
		case 2:
			name, want = ".hidden", 400
		}
		code, _, body := do(t, hc, "POST", base+"/v2/repository/models/"+name+"/load", bearer("s3cret")...)
		if code != want || strings.Contains(body, be.Repository) || strings.Contains(body, "/tmp") {
			t.Fatalf("load %s: %d %s (want %d, no server path)", name, code, body, want)
		}
	}
	if l, n := metricsLines(), indexLen(); l != lines0 || n != index0 {
		t.Fatalf("after 60 loads of unknown names: /metrics %d lines (was %d), index %d entries (was %d)", l, lines0, n, index0)
	}

	// The refusals are listed (to a caller with the credential).
	if code, _, _ := do(t, hc, "GET", base+backend.SecurityEventsPath); code != 401 {
		t.Fatalf("security events without a token: %d", code)
	}
	_, _, evs := do(t, hc, "GET", base+backend.SecurityEventsPath, bearer("s3cret")...)
	var list struct {
		Events []struct {
			Remote, Method, Path, Reason string
		} `json:"events"`
	}
	if err := json.Unmarshal([]byte(evs), &list); err != nil {
		t.Fatalf("events %s: %v", evs, err)
	}
	var reasons []string
	for _, e := range list.Events {
		if !strings.HasPrefix(e.Remote, "127.0.0.1:") {
			t.Errorf("event without the remote address: %+v", e)
		}
		reasons = append(reasons, e.Reason+" "+e.Method+" "+e.Path)
	}
	want := []string{
		"no_credential POST /v2/repository/models/" + demomodels.V2 + "/unload",
		"bad_credential POST /v2/repository/models/" + demomodels.V2 + "/unload",
		"no_credential /inference.GRPCInferenceService/RepositoryModelUnload ",
		"no_credential GET " + backend.SecurityEventsPath,
	}
	if strings.Join(reasons, "\n") != strings.Join(want, "\n") {
		t.Fatalf("security events:\n%s\nwant:\n%s", strings.Join(reasons, "\n"), strings.Join(want, "\n"))
	}
}

// Without a credential configured the repository API is off.
func TestRepositoryAPIOffByDefault(t *testing.T) {
	be := backendtest.Start(t, backendtest.Options{RepositoryAccess: &backend.RepositoryAccess{}})
	code, _, body := do(t, &http.Client{Timeout: 30 * time.Second}, "POST", "http://"+be.HTTPAddr+"/v2/repository/models/"+demomodels.V1+"/unload", "Authorization", "Bearer anything")
	if code != 403 || !strings.Contains(body, "is off on this backend") {
		t.Fatalf("unload on a backend without a credential: %d %s", code, body)
	}
}

// Both listeners serve TLS from files reloaded when they are rewritten;
// with a client CA they refuse a client without a certificate and one
// from another CA, and an allowed mTLS identity may unload without a
// token.
func TestTLSListeners(t *testing.T) {
	dir, other := t.TempDir(), t.TempDir()
	ca, err := tlsutil.NewCA("test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	otherCA, _ := tlsutil.NewCA("other", time.Hour)
	ca.Write(dir)
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
	srv := issue(ca, dir, "backend", "b1")
	ops := issue(ca, dir, "client", "ops")
	intruder := issue(otherCA, other, "client", "ops") // the same name, the wrong CA
	be := backendtest.Start(t, backendtest.Options{TLS: &srv, RepositoryAccess: &backend.RepositoryAccess{Identities: []string{tlsutil.SPIFFEID(tlsutil.DefaultTrustDomain, "client", "ops")}}})

	clientCfg := func(f tlsutil.Files) *tls.Config {
		cfg, err := tlsutil.NewClientConfig(f, tlsutil.ClientOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	https := func(f tlsutil.Files) *http.Client {
		return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: clientCfg(f), DisableKeepAlives: true}}
	}
	base := "https://" + be.HTTPAddr
	good := https(ops)
	code, _, body := do(t, good, "POST", base+"/v2/repository/models/"+demomodels.V2+"/unload")
	if code != 200 {
		t.Fatalf("unload by an allowed identity over mTLS: %d %s", code, body)
	}
	for name, f := range map[string]tlsutil.Files{"no certificate": {CA: srv.CA}, "another CA's certificate": {CA: srv.CA, Cert: intruder.Cert, Key: intruder.Key}} {
		if resp, err := https(f).Get(base + "/v2/health/ready"); err == nil {
			resp.Body.Close()
			t.Errorf("REST with %s: HTTP %d, want a refused handshake", name, resp.StatusCode)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		_, err := grpcConn(t, be.GRPCAddr, credentials.NewTLS(clientCfg(f))).ServerLive(ctx, &pb.ServerLiveRequest{})
		cancel()
		if err == nil {
			t.Errorf("gRPC with %s: answered", name)
		}
	}
	gc := grpcConn(t, be.GRPCAddr, credentials.NewTLS(clientCfg(ops)))
	if _, err := gc.RepositoryModelLoad(context.Background(), &pb.RepositoryModelLoadRequest{ModelName: demomodels.V2}); err != nil {
		t.Fatalf("gRPC load by an allowed identity: %v", err)
	}

	// Rotate the backend's certificate under the same file names: new
	// handshakes get it (checked at most once a second).
	c2, k2, err := ca.Issue(tlsutil.Leaf{CommonName: "b1-rotated", DNSNames: []string{"localhost"}, IPs: tlsutil.LocalLeaf("", "", "", 0, nil, nil).IPs, ValidFor: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if err := tlsutil.WritePair(dir, "backend-b1", c2, k2); err != nil {
		t.Fatal(err)
	}
	var served string
	for range 100 {
		conn, err := tls.Dial("tcp", be.HTTPAddr, clientCfg(ops))
		if err != nil {
			t.Fatal(err)
		}
		served = conn.ConnectionState().PeerCertificates[0].Subject.CommonName
		conn.Close()
		if served == "b1-rotated" {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if served != "b1-rotated" {
		t.Fatalf("after rewriting the files the backend still serves %q", served)
	}
	if code, _, body := do(t, good, "GET", base+"/v2/health/ready"); code != 200 {
		t.Fatalf("ready after the rotation: %d %s", code, body)
	}
}
