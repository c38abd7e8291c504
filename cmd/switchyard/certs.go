package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/switchyard-dev/switchyard/internal/tlsutil"
)

func init() {
	register("certs", "development CA and certificates for TLS/mTLS (dev | ca | issue; docs/security.md)", runCerts)
}

// devComponents are the certificates `switchyard certs dev` issues: file
// name, SPIFFE kind and name.
var devComponents = []struct{ file, kind, name string }{
	{"controlplane", "controlplane", "controlplane"},
	{"proxy", "proxy", "default"},
	{"backend", "backend", "default"},
	{"syctl", "client", "syctl"},
}

func runCerts(args []string) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return fmt.Errorf("usage: switchyard certs dev|ca|issue [flags] (switchyard certs dev -h)")
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("switchyard certs "+sub, flag.ContinueOnError)
	dir := fs.String("dir", "", "folder of ca.crt/ca.key and the certificates (required)")
	td := fs.String("trust-domain", tlsutil.DefaultTrustDomain, "SPIFFE trust domain of the URI SANs (spiffe://DOMAIN/KIND/NAME)")
	days := fs.Int("days", 30, "validity in days")
	var kind, name, file *string
	var dns, ips *string
	if sub == "issue" {
		kind = fs.String("kind", "", "component kind in the URI SAN: controlplane, proxy, backend, client (required)")
		name = fs.String("name", "", "component name in the URI SAN and the subject CN (required)")
		file = fs.String("file", "", "file name without extension (default: KIND-NAME)")
	}
	if sub == "issue" || sub == "dev" {
		dns = fs.String("dns", "", "extra DNS names, comma-separated (localhost is always in)")
		ips = fs.String("ip", "", "extra IP addresses, comma-separated (127.0.0.1 and ::1 are always in)")
	}
	switch sub {
	case "dev", "ca", "issue":
	default:
		return fmt.Errorf("certs: unknown subcommand %q (dev, ca, issue)", sub)
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if *dir == "" {
		return errors.New("--dir is required")
	}
	if *days < 1 || *days > 3650 {
		return fmt.Errorf("--days: %d is not in 1..3650", *days)
	}
	validFor := time.Duration(*days) * 24 * time.Hour
	var extraDNS []string
	var extraIPs []net.IP
	if dns != nil {
		for _, d := range splitList(*dns) {
			extraDNS = append(extraDNS, d)
		}
		for _, s := range splitList(*ips) {
			ip := net.ParseIP(s)
			if ip == nil {
				return fmt.Errorf("--ip: %q is not an IP address", s)
			}
			extraIPs = append(extraIPs, ip)
		}
	}
	issue := func(ca *tlsutil.CA, file, kind, name string) error {
		c, k, err := ca.Issue(tlsutil.LocalLeaf(*td, kind, name, validFor, extraDNS, extraIPs))
		if err != nil {
			return err
		}
		if err := tlsutil.WritePair(*dir, file, c, k); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "wrote %s.crt and %s.key: %s\n", filepath.Join(*dir, file), filepath.Join(*dir, file), tlsutil.SPIFFEID(*td, kind, name))
		return nil
	}
	switch sub {
	case "ca", "dev":
		if _, err := os.Stat(filepath.Join(*dir, "ca.key")); err == nil {
			return fmt.Errorf("%s already holds a ca.key; remove it first or use `switchyard certs issue`", *dir)
		}
		ca, err := tlsutil.NewCA("Switchyard development CA", validFor)
		if err != nil {
			return err
		}
		if err := ca.Write(*dir); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "wrote %s and %s\n", filepath.Join(*dir, "ca.crt"), filepath.Join(*dir, "ca.key"))
		if sub == "ca" {
			return nil
		}
		for _, c := range devComponents {
			if err := issue(ca, c.file, c.kind, c.name); err != nil {
				return err
			}
		}
		return nil
	default: // issue
		switch *kind {
		case "controlplane", "proxy", "backend", "client":
		default:
			return fmt.Errorf("--kind: %q is not controlplane, proxy, backend or client", *kind)
		}
		if *name == "" || strings.ContainsAny(*name, "/ ") {
			return fmt.Errorf("--name: %q: want a non-empty name without / or spaces", *name)
		}
		f := *file
		if f == "" {
			f = *kind + "-" + *name
		}
		ca, err := tlsutil.LoadCA(*dir)
		if err != nil {
			return fmt.Errorf("read the CA (make one with `switchyard certs ca --dir %s`): %w", *dir, err)
		}
		return issue(ca, f, *kind, *name)
	}
}

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
