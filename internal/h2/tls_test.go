package h2

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/switchyard-dev/switchyard/internal/backoff"
	"github.com/switchyard-dev/switchyard/internal/tlsutil"
	pb "github.com/switchyard-dev/switchyard/oip/inferencepb"
)

// testCerts are a CA, a server certificate for 127.0.0.1 and a client
// certificate (CN client-1) it issued.
func testCerts(t *testing.T) (pool *x509.CertPool, srv, cli tls.Certificate) {
	t.Helper()
	ca, err := tlsutil.NewCA("h2 test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pair := func(l tlsutil.Leaf) tls.Certificate {
		c, k, err := ca.Issue(l)
		if err != nil {
			t.Fatal(err)
		}
		cert, err := tls.X509KeyPair(c, k)
		if err != nil {
			t.Fatal(err)
		}
		return cert
	}
	pool = x509.NewCertPool()
	pool.AddCert(ca.Cert)
	return pool, pair(tlsutil.Leaf{CommonName: "server", IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, ValidFor: time.Hour}),
		pair(tlsutil.Leaf{CommonName: "client-1", ValidFor: time.Hour})
}

// TestClientTLS: the lean client over TLS (ALPN h2, a client
// certificate) to grpc-go's server and to the lean server, both requiring
// client certificates; without its certificate it is refused, with
// UNAVAILABLE naming the handshake; a TLS server that does not negotiate
// HTTP/2 is refused as not a gRPC server.
func TestClientTLS(t *testing.T) {
	pool, srvCert, cliCert := testCerts(t)
	srvTLS := func() *tls.Config {
		return &tls.Config{Certificates: []tls.Certificate{srvCert}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, NextProtos: []string{"h2"}}
	}
	_, gaddr := plainGRPC(t, grpc.Creds(credentials.NewTLS(srvTLS())))
	_, laddr := start(t, &fastOIP{}, func(s *Server) { s.TLSConfig = srvTLS() })
	for name, addr := range map[string]string{"grpc-go": gaddr, "lean": laddr} {
		t.Run(name, func(t *testing.T) {
			c := &Client{Addr: addr, TLS: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cliCert}}}
			defer c.Close()
			for i := range 3 { // one connection, several calls
				out, err := invoke(t, c, context.Background(), &pb.ModelInferRequest{Id: "t"})
				want := map[string]string{"grpc-go": "fallback:t", "lean": "t"}[name]
				if err != nil || out.GetId() != want {
					t.Fatalf("call %d over TLS: %v %v", i, out, err)
				}
			}
			bare := &Client{Addr: addr, TLS: &tls.Config{RootCAs: pool}, Redial: backoff.Backoff{Initial: time.Millisecond, Max: time.Millisecond}}
			defer bare.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := invoke(t, bare, ctx, &pb.ModelInferRequest{Id: "t"})
			if st := status.Convert(err); st.Code() != codes.Unavailable {
				t.Fatalf("a client without a certificate: %v", err)
			}
			t.Logf("without a certificate: %v", err)
		})
	}
	// A TLS server that ignores ALPN (no protocols of its own, as an old
	// HTTP/1.1 server): the handshake succeeds, the connection is refused.
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{srvCert}})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			nc, err := l.Accept()
			if err != nil {
				return
			}
			go func() { nc.(*tls.Conn).Handshake(); io.Copy(io.Discard, nc); nc.Close() }()
		}
	}()
	c := &Client{Addr: l.Addr().String(), TLS: &tls.Config{RootCAs: pool}}
	defer c.Close()
	_, err = invoke(t, c, context.Background(), &pb.ModelInferRequest{Id: "t"})
	if st := status.Convert(err); st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "did not negotiate HTTP/2") {
		t.Fatalf("a TLS server without ALPN: %v", err)
	}
}

// TestTLS: the lean server over TLS (ALPN h2, client certificates
// required) with a grpc-go client: fast calls see the connection's TLS
// state, fallback streams are served over the same connection.
func TestTLS(t *testing.T) {
	pool, srvCert, cliCert := testCerts(t)
	sawTLS := make(chan string, 1)
	f := &fastOIP{}
	_, addr := start(t, f, func(s *Server) {
		s.TLSConfig = &tls.Config{Certificates: []tls.Certificate{srvCert}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, NextProtos: []string{"h2"}}
		inner := s.Route
		s.Route = func(m string) FastFunc {
			ff := inner(m)
			if ff == nil {
				return nil
			}
			return func(ctx context.Context, c *Call) Answer {
				if c.TLS != nil && len(c.TLS.PeerCertificates) > 0 {
					select {
					case sawTLS <- c.TLS.PeerCertificates[0].Subject.CommonName:
					default:
					}
				}
				return ff(ctx, c)
			}
		}
	})
	creds := credentials.NewTLS(&tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cliCert}})
	c := client(t, addr, grpc.WithTransportCredentials(creds))
	if out, err := c.ModelInfer(context.Background(), &pb.ModelInferRequest{Id: "t"}); err != nil || out.GetId() != "t" {
		t.Fatalf("fast over TLS: %v %v", out, err)
	}
	if cn := <-sawTLS; cn != "client-1" {
		t.Fatalf("the fast call saw peer %q", cn)
	}
	if r, err := c.ServerLive(context.Background(), &pb.ServerLiveRequest{}); err != nil || !r.GetLive() {
		t.Fatalf("fallback over TLS: %v %v", r, err)
	}
	// A client without a certificate is refused.
	bare := client(t, addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool})))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := bare.ModelInfer(ctx, &pb.ModelInferRequest{Id: "t"}); err == nil {
		t.Fatal("a client without a certificate was served")
	}
}
