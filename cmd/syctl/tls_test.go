package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/controlplane"
	"github.com/switchyard-dev/switchyard/controlplane/cptest"
	"github.com/switchyard-dev/switchyard/internal/tlsutil"
)

// TestTLSControlPlane: syctl talks to a control plane on mTLS with --ca,
// --cert and --key, or the same from SYCTL_CA/SYCTL_CERT/SYCTL_KEY or the
// config file; without a client certificate the handshake is refused.
func TestTLSControlPlane(t *testing.T) {
	dir := t.TempDir()
	ca, err := tlsutil.NewCA("test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.Write(dir); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ file, kind, name string }{{"cp", "controlplane", "cp"}, {"syctl", "client", "syctl"}} {
		crt, key, err := ca.Issue(tlsutil.LocalLeaf(tlsutil.DefaultTrustDomain, c.kind, c.name, time.Hour, nil, nil))
		if err != nil {
			t.Fatal(err)
		}
		if err := tlsutil.WritePair(dir, c.file, crt, key); err != nil {
			t.Fatal(err)
		}
	}
	f := func(n string) string { return filepath.Join(dir, n) }
	cp := cptest.Start(t, controlplane.Config{InsecureLoopbackNoAuth: true, TLS: &tlsutil.Files{Cert: f("cp.crt"), Key: f("cp.key"), CA: f("ca.crt")}}, nil)

	if r := syctl(t, cp, nil, "", "--ca", f("ca.crt"), "--cert", f("syctl.crt"), "--key", f("syctl.key"), "get", "models"); r.code != 0 || !strings.Contains(r.stderr, "no models") {
		t.Fatalf("get models with flags: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	env := map[string]string{"SYCTL_CA": f("ca.crt"), "SYCTL_CERT": f("syctl.crt"), "SYCTL_KEY": f("syctl.key")}
	if r := syctl(t, cp, env, "", "get", "models"); r.code != 0 {
		t.Fatalf("get models with the environment: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	cfg := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfg, []byte("server: "+cp.APIURL()+"\nca: "+f("ca.crt")+"\ncert: "+f("syctl.crt")+"\nkey: "+f("syctl.key")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := syctl(t, nil, nil, "", "--config", cfg, "get", "models"); r.code != 0 {
		t.Fatalf("get models with the config file: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := syctl(t, cp, nil, "", "--ca", f("ca.crt"), "get", "models"); r.code == 0 {
		t.Fatalf("get models without a client certificate answered:\n%s", r.stdout)
	}
	if r := syctl(t, cp, nil, "", "--ca", f("ca.crt"), "--cert", f("syctl.crt"), "get", "models"); r.code != exitUsage || !strings.Contains(r.stderr, "--cert and --key go together") {
		t.Fatalf("--cert without --key: %d %s", r.code, r.stderr)
	}
	if r := syctl(t, cp, nil, "", "--ca", f("nope.crt"), "get", "models"); r.code != exitUsage || !strings.Contains(r.stderr, "nope.crt") {
		t.Fatalf("a missing CA file: %d %s", r.code, r.stderr)
	}
}
