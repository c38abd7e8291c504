package tlsutil

import (
	"crypto/tls"
	"crypto/x509"
)

// Identity is a certificate's identity: its first spiffe:// URI SAN, else
// its first URI SAN, else its subject's common name ("" if none of them).
func Identity(c *x509.Certificate) string {
	if c == nil {
		return ""
	}
	for _, u := range c.URIs {
		if u.Scheme == "spiffe" {
			return u.String()
		}
	}
	if len(c.URIs) > 0 {
		return c.URIs[0].String()
	}
	return c.Subject.CommonName
}

// PeerIdentity is the identity of a connection's peer certificate (the
// leaf): "" for a plain connection or a peer without a certificate. Only
// meaningful where the certificate was verified (a Server with a CA).
func PeerIdentity(cs *tls.ConnectionState) string {
	if cs == nil || len(cs.PeerCertificates) == 0 {
		return ""
	}
	return Identity(cs.PeerCertificates[0])
}
