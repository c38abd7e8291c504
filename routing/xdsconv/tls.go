package xdsconv

import (
	"fmt"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/switchyard-dev/switchyard/api"
)

// TransportSocketTLS is the name of Envoy's TLS transport socket.
const TransportSocketTLS = "envoy.transport_sockets.tls"

// upstreamTransportSocket is a version's spec.versions[].tls as a
// cluster's transport_socket: an UpstreamTlsContext naming the files
// (Envoy reads them itself, no SDS), SNI = serverName, ALPN h2 for gRPC.
// Nil without TLS (or with tls.disabled).
func upstreamTransportSocket(v *api.Version) *corev3.TransportSocket {
	t := v.TLS
	if t == nil || t.Disabled {
		return nil
	}
	ctx := &tlsv3.UpstreamTlsContext{Sni: t.ServerName, CommonTlsContext: &tlsv3.CommonTlsContext{
		ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: t.CAFile}},
		}},
	}}
	if t.CertFile != "" {
		ctx.CommonTlsContext.TlsCertificates = []*tlsv3.TlsCertificate{{
			CertificateChain: &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: t.CertFile}},
			PrivateKey:       &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: t.KeyFile}},
		}}
	}
	if v.Protocol == api.ProtocolGRPC {
		ctx.CommonTlsContext.AlpnProtocols = []string{"h2"}
	}
	a, err := anypb.New(ctx)
	if err != nil {
		panic(fmt.Sprintf("xdsconv: marshal UpstreamTlsContext: %v", err)) // plain message: cannot fail
	}
	return &corev3.TransportSocket{Name: TransportSocketTLS, ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: a}}
}

// upstreamTLSFromCluster reads a cluster's transport_socket back (nil, nil
// without one). Only what upstreamTransportSocket writes is understood:
// file names, SNI; inline keys, SDS and other sockets are refused.
func upstreamTLSFromCluster(c *clusterv3.Cluster) (*api.UpstreamTLS, error) {
	ts := c.GetTransportSocket()
	if ts == nil {
		return nil, nil
	}
	if ts.GetName() != TransportSocketTLS {
		return nil, fmt.Errorf("transport_socket %q: only %s is supported", ts.GetName(), TransportSocketTLS)
	}
	var ctx tlsv3.UpstreamTlsContext
	if err := ts.GetTypedConfig().UnmarshalTo(&ctx); err != nil {
		return nil, fmt.Errorf("transport_socket: %v", err)
	}
	cc := ctx.GetCommonTlsContext()
	if len(cc.GetTlsCertificateSdsSecretConfigs()) > 0 || cc.GetValidationContextSdsSecretConfig() != nil {
		return nil, fmt.Errorf("transport_socket: SDS is not supported; name the files")
	}
	t := &api.UpstreamTLS{ServerName: ctx.GetSni(), CAFile: cc.GetValidationContext().GetTrustedCa().GetFilename()}
	if t.CAFile == "" {
		return nil, fmt.Errorf("transport_socket: validation_context.trusted_ca.filename is required")
	}
	switch certs := cc.GetTlsCertificates(); len(certs) {
	case 0:
	case 1:
		t.CertFile, t.KeyFile = certs[0].GetCertificateChain().GetFilename(), certs[0].GetPrivateKey().GetFilename()
		if t.CertFile == "" || t.KeyFile == "" {
			return nil, fmt.Errorf("transport_socket: tls_certificates[0]: want certificate_chain.filename and private_key.filename")
		}
	default:
		return nil, fmt.Errorf("transport_socket: at most one tls_certificate, got %d", len(certs))
	}
	return t, nil
}
