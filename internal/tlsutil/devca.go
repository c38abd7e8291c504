package tlsutil

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// DefaultTrustDomain is the SPIFFE trust domain of development
// certificates: identities read spiffe://switchyard.local/KIND/NAME.
const DefaultTrustDomain = "switchyard.local"

// CA is a development certificate authority (ECDSA P-256), for local
// stacks and tests; production certificates come from the cluster's own
// issuer (cert-manager, SPIRE, ...).
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
}

// NewCA makes a self-signed CA valid from a minute ago for validFor.
func NewCA(commonName string, validFor time.Duration) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: commonName, Organization: []string{"Switchyard development"}},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(validFor),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: c, Key: key}, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return n
}

// Leaf describes a certificate to issue.
type Leaf struct {
	// CommonName is the subject's CN (the identity when there is no URI).
	CommonName string
	// URIs are URI SANs (spiffe://switchyard.local/proxy/default).
	URIs []string
	// DNSNames and IPs are the names a server answers to.
	DNSNames []string
	IPs      []net.IP
	// ValidFor from a minute ago.
	ValidFor time.Duration
	// NotBefore, if set, replaces "a minute ago" (tests of expiry).
	NotBefore time.Time
}

// SPIFFEID is spiffe://trustDomain/kind/name.
func SPIFFEID(trustDomain, kind, name string) string {
	return (&url.URL{Scheme: "spiffe", Host: trustDomain, Path: "/" + kind + "/" + name}).String()
}

// Issue signs a leaf certificate usable both as a server and as a client
// certificate; it returns the certificate and key in PEM.
func (ca *CA) Issue(l Leaf) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	nb := l.NotBefore
	if nb.IsZero() {
		nb = time.Now().Add(-time.Minute)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: l.CommonName},
		NotBefore:    nb,
		NotAfter:     nb.Add(l.ValidFor),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:     l.DNSNames,
		IPAddresses:  l.IPs,
	}
	for _, s := range l.URIs {
		u, err := url.Parse(s)
		if err != nil || u.Scheme == "" {
			return nil, nil, fmt.Errorf("URI SAN %q: not an absolute URI", s)
		}
		tmpl.URIs = append(tmpl.URIs, u)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, nil, err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), nil
}

// CertPEM is the CA certificate in PEM.
func (ca *CA) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw})
}

// Write writes ca.crt and ca.key into dir.
func (ca *CA) Write(dir string) error {
	kder, err := x509.MarshalECPrivateKey(ca.Key)
	if err != nil {
		return err
	}
	return WritePair(dir, "ca", ca.CertPEM(), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}))
}

// LoadCA reads ca.crt and ca.key from dir (written by Write).
func LoadCA(dir string) (*CA, error) {
	cb, err := os.ReadFile(filepath.Join(dir, "ca.crt"))
	if err != nil {
		return nil, err
	}
	kb, err := os.ReadFile(filepath.Join(dir, "ca.key"))
	if err != nil {
		return nil, err
	}
	c, _ := pem.Decode(cb)
	k, _ := pem.Decode(kb)
	if c == nil || k == nil {
		return nil, errors.New("ca.crt or ca.key in " + dir + " is not PEM")
	}
	cert, err := x509.ParseCertificate(c.Bytes)
	if err != nil {
		return nil, fmt.Errorf("ca.crt: %w", err)
	}
	key, err := x509.ParseECPrivateKey(k.Bytes)
	if err != nil {
		return nil, fmt.Errorf("ca.key: %w", err)
	}
	if !cert.IsCA {
		return nil, errors.New("ca.crt in " + dir + " is not a CA certificate")
	}
	return &CA{Cert: cert, Key: key}, nil
}

// WritePair writes NAME.crt (0644) and NAME.key (0600) into dir, each
// through a temporary file renamed into place (a reloading listener never
// reads half a file).
func WritePair(dir, name string, certPEM, keyPEM []byte) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := writeAtomic(filepath.Join(dir, name+".key"), keyPEM, 0o600); err != nil {
		return err
	}
	return writeAtomic(filepath.Join(dir, name+".crt"), certPEM, 0o644)
}

func writeAtomic(path string, b []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// LocalLeaf is a development leaf for one Switchyard component: CN name,
// URI SAN spiffe://trustDomain/kind/name, and the loopback names
// (localhost, 127.0.0.1, ::1) plus any extra DNS names and IPs.
func LocalLeaf(trustDomain, kind, name string, validFor time.Duration, dns []string, ips []net.IP) Leaf {
	return Leaf{
		CommonName: name,
		URIs:       []string{SPIFFEID(trustDomain, kind, name)},
		DNSNames:   append([]string{"localhost"}, dns...),
		IPs:        append([]net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, ips...),
		ValidFor:   validFor,
	}
}
