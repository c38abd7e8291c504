package main

import (
	"crypto/tls"
	"path/filepath"
	"strings"
	"testing"

	"github.com/switchyard-dev/switchyard/internal/tlsutil"
)

// `switchyard certs dev` writes a CA and one pair per component whose
// identities are the SPIFFE URIs; `issue` adds one; bad flags are named.
func TestCertsCommand(t *testing.T) {
	dir := t.TempDir()
	if err := runCerts([]string{"dev", "--dir", dir}); err != nil {
		t.Fatal(err)
	}
	if err := runCerts([]string{"issue", "--dir", dir, "--kind", "proxy", "--name", "edge-1", "--ip", "10.0.0.5"}); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"controlplane": "spiffe://switchyard.local/controlplane/controlplane",
		"proxy":        "spiffe://switchyard.local/proxy/default",
		"backend":      "spiffe://switchyard.local/backend/default",
		"syctl":        "spiffe://switchyard.local/client/syctl",
		"proxy-edge-1": "spiffe://switchyard.local/proxy/edge-1",
	}
	for file, id := range want {
		pair, err := tls.LoadX509KeyPair(filepath.Join(dir, file+".crt"), filepath.Join(dir, file+".key"))
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if got := tlsutil.Identity(pair.Leaf); got != id {
			t.Errorf("%s: identity %q, want %q", file, got, id)
		}
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"dev", "--dir", dir}, "already holds a ca.key"},
		{[]string{"issue", "--dir", dir, "--kind", "robot", "--name", "r"}, "--kind"},
		{[]string{"issue", "--dir", dir, "--kind", "proxy", "--name", "a/b"}, "--name"},
		{[]string{"issue", "--dir", dir, "--kind", "proxy", "--name", "x", "--ip", "nope"}, "--ip"},
		{[]string{"issue", "--dir", t.TempDir(), "--kind", "proxy", "--name", "x"}, "read the CA"},
		{[]string{"ca"}, "--dir is required"},
		{[]string{"sign"}, "unknown subcommand"},
	} {
		if err := runCerts(c.args); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("certs %v: %v, want an error naming %q", c.args, err, c.want)
		}
	}
}
