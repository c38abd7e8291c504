package main

import (
	"os"
	"path/filepath"
	"time"

	"github.com/switchyard-dev/switchyard/internal/tlsutil"
)

// upProxyNode is the node id of `switchyard up`'s proxy (with --tls also
// its certificate's name: spiffe://switchyard.local/proxy/local-proxy).
const upProxyNode = "local-proxy"

// upPKI is the development CA and certificates of `switchyard up --tls`.
type upPKI struct {
	dir string
	ca  string // ca.crt
}

func (k *upPKI) file(name, ext string) string { return filepath.Join(k.dir, name+ext) }

// serverArgs are a component's --tls-cert, --tls-key and --tls-client-ca.
func (k *upPKI) serverArgs(name string) []string {
	return []string{"--tls-cert", k.file(name, ".crt"), "--tls-key", k.file(name, ".key"), "--tls-client-ca", k.ca}
}

// upCertValidity is how long up's certificates are valid (issued anew at
// every start; the CA is kept, so syctl's files stay good).
const upCertValidity = 30 * 24 * time.Hour

// writeUpPKI keeps (or makes) the CA in dir and issues the stack's
// certificates: controlplane, proxy (named upProxyNode), backend, and
// syctl (a client certificate for syctl, curl and tests).
func writeUpPKI(dir string) (*upPKI, error) {
	k := &upPKI{dir: dir, ca: filepath.Join(dir, "ca.crt")}
	ca, err := tlsutil.LoadCA(dir)
	if err != nil {
		if _, serr := os.Stat(filepath.Join(dir, "ca.key")); serr == nil {
			return nil, err // a CA that does not load: say so rather than replace it
		}
		if ca, err = tlsutil.NewCA("Switchyard development CA (switchyard up)", 365*24*time.Hour); err != nil {
			return nil, err
		}
		if err := ca.Write(dir); err != nil {
			return nil, err
		}
	}
	for _, c := range []struct{ file, kind, name string }{
		{"controlplane", "controlplane", "controlplane"},
		{"proxy", "proxy", upProxyNode},
		{"backend", "backend", "default"},
		{"syctl", "client", "syctl"},
	} {
		cert, key, err := ca.Issue(tlsutil.LocalLeaf(tlsutil.DefaultTrustDomain, c.kind, c.name, upCertValidity, nil, nil))
		if err != nil {
			return nil, err
		}
		if err := tlsutil.WritePair(dir, c.file, cert, key); err != nil {
			return nil, err
		}
	}
	return k, nil
}
