package xds

import (
	"strings"
	"testing"
)

func TestNodeName(t *testing.T) {
	for subject, want := range map[string]string{
		"proxy-1":                                 "proxy-1",
		"spiffe://switchyard.local/proxy/edge-1":  "edge-1",
		"spiffe://example.org/proxy/p":            "p",
		"spiffe://switchyard.local/client/syctl":  "error: not a proxy's",
		"spiffe://switchyard.local/proxy":         "error: not a proxy's",
		"spiffe://switchyard.local/proxy/a/b":     "error: not a proxy's",
		"spiffe://switchyard.local/backend/model": "error: not a proxy's",
	} {
		got, err := nodeName(subject)
		if err != nil {
			got = "error: " + err.Error()
		}
		if !strings.HasPrefix(want, "error: ") && got != want || strings.HasPrefix(want, "error: ") && !strings.Contains(got, strings.TrimPrefix(want, "error: ")) {
			t.Errorf("nodeName(%q) = %q, want %q", subject, got, want)
		}
	}
}

func TestNodeMatches(t *testing.T) {
	for _, c := range []struct {
		name, node string
		want       bool
	}{
		{"p1", "p1", true}, {"p1", "p2", false}, {"p1", "p1x", false},
		{"switchyard-proxy-*", "switchyard-proxy-7d9f-abcde", true}, {"edge-envoy*", "edge-envoy", true},
		{"switchyard-proxy-*", "product-service-1", false}, {"*", "anything", false}, {"*", "", false},
	} {
		if got := nodeMatches(c.name, c.node); got != c.want {
			t.Errorf("nodeMatches(%q, %q) = %v, want %v", c.name, c.node, got, c.want)
		}
	}
}
