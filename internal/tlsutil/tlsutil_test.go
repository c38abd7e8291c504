package tlsutil

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// devFiles makes a CA in dir and a leaf NAME.crt/.key for kind/name.
func devFiles(t *testing.T, dir string, ca *CA, kind, name string) Files {
	t.Helper()
	c, k, err := ca.Issue(LocalLeaf(DefaultTrustDomain, kind, name, time.Hour, nil, nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := WritePair(dir, name, c, k); err != nil {
		t.Fatal(err)
	}
	return Files{Cert: filepath.Join(dir, name+".crt"), Key: filepath.Join(dir, name+".key"), CA: filepath.Join(dir, "ca.crt")}
}

func newCA(t *testing.T, dir string) *CA {
	t.Helper()
	ca, err := NewCA("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.Write(dir); err != nil {
		t.Fatal(err)
	}
	return ca
}

// serveTLS accepts TLS connections on 127.0.0.1 and sends each one's
// handshake result (the peer identity, or the error) on the channel.
func serveTLS(t *testing.T, cfg *tls.Config) (string, chan string) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	got := make(chan string, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tc := c.(*tls.Conn)
			tc.SetDeadline(time.Now().Add(10 * time.Second))
			if err := tc.Handshake(); err != nil {
				got <- "error: " + err.Error()
			} else {
				cs := tc.ConnectionState()
				got <- "ok: " + PeerIdentity(&cs)
			}
			tc.Close()
		}
	}()
	return ln.Addr().String(), got
}

func dial(addr string, cfg *tls.Config) (*x509.Certificate, error) {
	d := &net.Dialer{Timeout: 10 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	// TLS 1.3: a refused client certificate shows at the first read.
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err != nil && !strings.Contains(err.Error(), "EOF") {
		return nil, err
	}
	return c.ConnectionState().PeerCertificates[0], nil
}

// The server picks up rewritten certificate files at the next handshake,
// without a restart; files that cannot be loaded keep the old pair.
func TestServerReloadsRewrittenFiles(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, dir)
	f := devFiles(t, dir, ca, "backend", "b1")
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	srv, err := NewServer(Files{Cert: f.Cert, Key: f.Key}, ServerOptions{Name: "test", CheckInterval: -1, Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	addr, _ := serveTLS(t, srv.Config("http/1.1"))
	client, err := NewClientConfig(Files{CA: f.CA}, ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	first, err := dial(addr, client)
	if err != nil {
		t.Fatal(err)
	}
	if first.Subject.CommonName != "b1" || first.NotAfter.Unix() != srv.NotAfter().Unix() {
		t.Fatalf("served %s until %v", first.Subject.CommonName, first.NotAfter)
	}
	if got := testutil.ToFloat64(m.NotAfter.WithLabelValues("test")); got != float64(first.NotAfter.Unix()) {
		t.Fatalf("not_after metric %v, want %v", got, first.NotAfter.Unix())
	}

	// Rotate: a new pair under the same file names.
	c2, k2, err := ca.Issue(Leaf{CommonName: "b1-rotated", IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, ValidFor: 2 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if err := WritePair(dir, "b1", c2, k2); err != nil {
		t.Fatal(err)
	}
	second, err := dial(addr, client)
	if err != nil {
		t.Fatal(err)
	}
	if second.Subject.CommonName != "b1-rotated" || second.SerialNumber.Cmp(first.SerialNumber) == 0 {
		t.Fatalf("after the rewrite the server still serves %s (serial %v)", second.Subject.CommonName, second.SerialNumber)
	}
	if got := testutil.ToFloat64(m.NotAfter.WithLabelValues("test")); got != float64(second.NotAfter.Unix()) {
		t.Fatalf("not_after metric %v after the reload, want %v", got, second.NotAfter.Unix())
	}

	// A broken rewrite: the rotated pair stays served, the error is counted.
	if err := os.WriteFile(f.Cert, []byte("not a certificate"), 0o644); err != nil {
		t.Fatal(err)
	}
	third, err := dial(addr, client)
	if err != nil {
		t.Fatal(err)
	}
	if third.SerialNumber.Cmp(second.SerialNumber) != 0 {
		t.Fatalf("a broken rewrite changed the served certificate to %s", third.Subject.CommonName)
	}
	if n := testutil.ToFloat64(m.Reloads.WithLabelValues("test", "error")); n < 1 {
		t.Fatalf("reload errors %v, want ≥ 1", n)
	}
	if n := testutil.ToFloat64(m.Reloads.WithLabelValues("test", "ok")); n != 1 {
		t.Fatalf("reloads ok %v, want 1", n)
	}
}

// With a client CA the server refuses a client without a certificate and
// one whose certificate another CA signed, and reads the identity of one
// it accepts from its URI SAN.
func TestMutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, dir)
	sf := devFiles(t, dir, ca, "backend", "b1")
	srv, err := NewServer(sf, ServerOptions{CheckInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	if !srv.MutualTLS() {
		t.Fatal("a server with a CA file does not require client certificates")
	}
	addr, got := serveTLS(t, srv.Config())

	other := t.TempDir()
	otherCA := newCA(t, other)
	forged := devFiles(t, other, otherCA, "proxy", "intruder")
	good := devFiles(t, dir, ca, "proxy", "p1")
	cases := []struct {
		name  string
		files Files
		want  string // server side: "ok: identity" or an error substring
	}{
		{"no certificate", Files{CA: sf.CA}, "error: tls: client didn't provide a certificate"},
		{"another CA's certificate", Files{CA: sf.CA, Cert: forged.Cert, Key: forged.Key}, "error: tls: failed to verify certificate"},
		{"this CA's certificate", Files{CA: sf.CA, Cert: good.Cert, Key: good.Key}, "ok: spiffe://switchyard.local/proxy/p1"},
	}
	for _, c := range cases {
		cfg, err := NewClientConfig(c.files, ClientOptions{})
		if err != nil {
			t.Fatal(err)
		}
		_, cerr := dial(addr, cfg)
		s := <-got
		if !strings.HasPrefix(s, c.want) {
			t.Errorf("%s: server saw %q, want %q", c.name, s, c.want)
		}
		if ok := strings.HasPrefix(c.want, "ok"); ok != (cerr == nil) {
			t.Errorf("%s: client error %v", c.name, cerr)
		}
	}
}

func TestIdentity(t *testing.T) {
	u := func(s string) *url.URL { x, _ := url.Parse(s); return x }
	cases := map[string]struct {
		cert *x509.Certificate
		want string
	}{
		"spiffe URI wins":       {&x509.Certificate{Subject: pkix.Name{CommonName: "cn"}, URIs: []*url.URL{u("https://x/y"), u("spiffe://td/proxy/a")}}, "spiffe://td/proxy/a"},
		"other URI before CN":   {&x509.Certificate{Subject: pkix.Name{CommonName: "cn"}, URIs: []*url.URL{u("https://x/y")}}, "https://x/y"},
		"CN without URIs":       {&x509.Certificate{Subject: pkix.Name{CommonName: "cn"}}, "cn"},
		"nothing":               {&x509.Certificate{}, ""},
		"no certificate at all": {nil, ""},
	}
	for name, c := range cases {
		if got := Identity(c.cert); got != c.want {
			t.Errorf("%s: %q, want %q", name, got, c.want)
		}
	}
	if PeerIdentity(nil) != "" || PeerIdentity(&tls.ConnectionState{}) != "" {
		t.Error("a connection without certificates has an identity")
	}
}

func TestNewServerErrorsNameTheFile(t *testing.T) {
	dir := t.TempDir()
	_, err := NewServer(Files{Cert: filepath.Join(dir, "missing.crt"), Key: filepath.Join(dir, "missing.key")}, ServerOptions{})
	if err == nil || !strings.Contains(err.Error(), "missing.crt") {
		t.Fatalf("missing files: %v", err)
	}
	if _, err := NewServer(Files{Cert: "a.crt"}, ServerOptions{}); err == nil || !strings.Contains(err.Error(), "key") {
		t.Fatalf("no key: %v", err)
	}
	ca := newCA(t, dir)
	f := devFiles(t, dir, ca, "backend", "b")
	os.WriteFile(f.CA, []byte("junk"), 0o644)
	if _, err := NewServer(f, ServerOptions{}); err == nil || !strings.Contains(err.Error(), "ca.crt holds no PEM") {
		t.Fatalf("bad CA: %v", err)
	}
}

// LoadCA reads back what Write wrote, and issued leaves verify against it.
func TestDevCARoundTrip(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, dir)
	back, err := LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	c, _, err := back.Issue(LocalLeaf("td", "controlplane", "cp", time.Hour, []string{"cp.svc"}, nil))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	pair, err := tls.X509KeyPair(c, func() []byte { _, k, _ := back.Issue(Leaf{CommonName: "x", ValidFor: time.Hour}); return k }())
	if err == nil {
		t.Fatal("a key from another issue matched the certificate")
	}
	_ = pair
	block, _ := pemDecode(c)
	leaf, err := x509.ParseCertificate(block)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"localhost", "127.0.0.1", "cp.svc"} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: name, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Errorf("verify for %s: %v", name, err)
		}
	}
	if Identity(leaf) != "spiffe://td/controlplane/cp" {
		t.Errorf("identity %q", Identity(leaf))
	}
}

func pemDecode(b []byte) ([]byte, error) {
	p, _ := pem.Decode(b)
	if p == nil {
		return nil, os.ErrInvalid
	}
	return p.Bytes, nil
}
