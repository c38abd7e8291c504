package xdsconv

import (
	"strings"
	"testing"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/google/go-cmp/cmp"

	"github.com/switchyard-dev/switchyard/api"
)

// TestUpstreamTLSTransportSocket: a version's tls becomes its cluster's
// transport_socket (UpstreamTlsContext with file names, SNI, h2 for gRPC)
// and is read back from there; tls.disabled and no tls leave none.
func TestUpstreamTLSTransportSocket(t *testing.T) {
	m := recommender(t)
	m.Spec.Versions[0].TLS = &api.UpstreamTLS{CAFile: "/etc/sy/ca.crt", CertFile: "/etc/sy/proxy.crt", KeyFile: "/etc/sy/proxy.key", ServerName: "backend.local"}
	m.Spec.Versions[1].TLS = &api.UpstreamTLS{Disabled: true}
	g := model(t, grpcDNSYAML)
	g.Spec.Versions[0].TLS = &api.UpstreamTLS{CAFile: "/ca.crt"}
	res, err := Translate([]api.Model{m, g}, "1")
	if err != nil {
		t.Fatal(err)
	}
	r, err := ResourcesFromMap(res)
	if err != nil {
		t.Fatal(err)
	}
	c := cluster(r, ClusterName(m.Metadata.Name, m.Spec.Versions[0].Name))
	if err := c.ValidateAll(); err != nil {
		t.Fatalf("the cluster with a transport_socket is not valid Envoy config: %v", err)
	}
	ts := c.GetTransportSocket()
	if ts.GetName() != TransportSocketTLS {
		t.Fatalf("transport_socket %v", ts)
	}
	var ctx tlsv3.UpstreamTlsContext
	if err := ts.GetTypedConfig().UnmarshalTo(&ctx); err != nil {
		t.Fatal(err)
	}
	if err := ctx.ValidateAll(); err != nil {
		t.Fatalf("UpstreamTlsContext: %v", err)
	}
	cc := ctx.GetCommonTlsContext()
	if ctx.GetSni() != "backend.local" || cc.GetValidationContext().GetTrustedCa().GetFilename() != "/etc/sy/ca.crt" ||
		cc.GetTlsCertificates()[0].GetCertificateChain().GetFilename() != "/etc/sy/proxy.crt" || cc.GetTlsCertificates()[0].GetPrivateKey().GetFilename() != "/etc/sy/proxy.key" {
		t.Fatalf("UpstreamTlsContext %v", &ctx)
	}
	if c := cluster(r, ClusterName(m.Metadata.Name, m.Spec.Versions[1].Name)); c.GetTransportSocket() != nil {
		t.Fatalf("tls.disabled: transport_socket %v", c.GetTransportSocket())
	}
	var gctx tlsv3.UpstreamTlsContext
	if err := cluster(r, ClusterName(g.Metadata.Name, g.Spec.Versions[0].Name)).GetTransportSocket().GetTypedConfig().UnmarshalTo(&gctx); err != nil {
		t.Fatal(err)
	}
	if a := gctx.GetCommonTlsContext().GetAlpnProtocols(); len(a) != 1 || a[0] != "h2" {
		t.Fatalf("gRPC version ALPN %v", a)
	}
	got, err := r.Models()
	if err != nil {
		t.Fatal(err)
	}
	want := []api.Model{g, m}
	sortModels(want)
	if d := cmp.Diff(want, got); d != "" {
		t.Fatalf("round trip (-want +got):\n%s", d)
	}

	// The transport_socket is what the proxy reads: one the document
	// lacks (an Envoy-side edit) is taken, an unsupported one refused.
	m2 := recommender(t)
	res2, _ := Translate([]api.Model{m2}, "1")
	r2, _ := ResourcesFromMap(res2)
	v := m.Spec.Versions[0]
	cluster(r2, ClusterName(m2.Metadata.Name, v.Name)).TransportSocket = upstreamTransportSocket(&v)
	got2, err := r2.Models()
	if err != nil {
		t.Fatal(err)
	}
	if tl := got2[0].Spec.Versions[0].TLS; tl == nil || tl.CAFile != "/etc/sy/ca.crt" || tl.KeyFile != "/etc/sy/proxy.key" {
		t.Fatalf("TLS read from the transport_socket: %+v", tl)
	}
	cluster(r2, ClusterName(m2.Metadata.Name, v.Name)).TransportSocket.Name = "envoy.transport_sockets.raw_buffer"
	if _, err := r2.Models(); err == nil || !strings.Contains(err.Error(), "only envoy.transport_sockets.tls is supported") {
		t.Fatalf("an unsupported transport_socket: %v", err)
	}
}
