package main

import (
	"path/filepath"
	"strings"
	"testing"
)

// The TLS flags of the proxy and the control plane: incomplete pairs and
// files that do not load are named before anything listens.
func TestTLSFlagErrors(t *testing.T) {
	dir := t.TempDir()
	if err := runCerts([]string{"dev", "--dir", dir}); err != nil {
		t.Fatal(err)
	}
	f := func(n string) string { return filepath.Join(dir, n) }
	state := filepath.Join(t.TempDir(), "s.db")
	for _, c := range []struct {
		run  func([]string) error
		args []string
		want string
	}{
		{runProxy, []string{"--tls-cert", f("proxy.crt")}, "--tls-cert and --tls-key go together"},
		{runProxy, []string{"--tls-client-ca", f("ca.crt")}, "--tls-client-ca needs --tls-cert and --tls-key"},
		{runProxy, []string{"--control-plane-cert", f("proxy.crt")}, "--control-plane-cert and --control-plane-key go together"},
		{runProxy, []string{"--control-plane-cert", f("proxy.crt"), "--control-plane-key", f("proxy.key")}, "--control-plane-cert needs --control-plane-ca"},
		{runProxy, []string{"--upstream-cert", f("proxy.crt"), "--upstream-key", f("proxy.key")}, "--upstream-cert needs --upstream-ca"},
		{runProxy, []string{"--node-id", "p", "--http", "127.0.0.1:0", "--grpc", "", "--admin", "", "--tls-cert", f("proxy.crt"), "--tls-key", f("nope.key")}, "nope.key"},
		{runProxy, []string{"--node-id", "p", "--http", "127.0.0.1:0", "--grpc", "", "--admin", "", "--control-plane-ca", f("nope.crt")}, "nope.crt"},
		{runProxy, []string{"--control-plane-token-file", f("nope.token")}, "--control-plane-token-file"},
		{runControlPlane, []string{"--state", state, "--insecure-loopback-no-auth", "--api", "127.0.0.1:0", "--xds", "127.0.0.1:0", "--tls-key", f("controlplane.key")}, "--tls-cert and --tls-key go together"},
		{runControlPlane, []string{"--state", state, "--insecure-loopback-no-auth", "--api", "127.0.0.1:0", "--xds", "127.0.0.1:0", "--tls-cert", f("controlplane.crt"), "--tls-key", f("controlplane.key"), "--tls-client-ca", f("nope.crt")}, "nope.crt"},
	} {
		err := c.run(c.args)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want an error naming %q", c.args, err, c.want)
		}
	}
}
