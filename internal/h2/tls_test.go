package h2

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/switchyard-dev/switchyard/internal/tlsutil"
	pb "github.com/switchyard-dev/switchyard/oip/inferencepb"
)

// TestTLS: the lean server over TLS (ALPN h2, client certificates
// required) with a grpc-go client: fast calls see the connection's TLS
// state, fallback streams are served over the same connection.
func TestTLS(t *testing.T) {
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
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	srvCert := pair(tlsutil.Leaf{CommonName: "server", IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, ValidFor: time.Hour})
	cliCert := pair(tlsutil.Leaf{CommonName: "client-1", ValidFor: time.Hour})
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
