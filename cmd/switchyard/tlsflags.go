package main

import (
	"flag"
	"fmt"

	"github.com/switchyard-dev/switchyard/internal/tlsutil"
)

// serverTLSFlags are a server's --tls-cert, --tls-key and --tls-client-ca
// (the same names on the backend, the proxy and the control plane).
type serverTLSFlags struct{ cert, key, ca *string }

func addServerTLSFlags(fs *flag.FlagSet, what string) serverTLSFlags {
	return serverTLSFlags{
		cert: fs.String("tls-cert", "", "serve "+what+" over TLS with this certificate `FILE` (PEM; reloaded when the file changes); needs --tls-key"),
		key:  fs.String("tls-key", "", "the key `FILE` of --tls-cert (PEM)"),
		ca:   fs.String("tls-client-ca", "", "require client certificates that chain to this CA `FILE` (mTLS); needs --tls-cert"),
	}
}

// files is nil without TLS; errors name the flag that is missing.
func (f serverTLSFlags) files() (*tlsutil.Files, error) {
	switch {
	case *f.cert != "" && *f.key != "":
		return &tlsutil.Files{Cert: *f.cert, Key: *f.key, CA: *f.ca}, nil
	case *f.cert != "" || *f.key != "":
		return nil, fmt.Errorf("--tls-cert and --tls-key go together")
	case *f.ca != "":
		return nil, fmt.Errorf("--tls-client-ca needs --tls-cert and --tls-key")
	}
	return nil, nil
}
