package stats

import (
	"context"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchyard-dev/switchyard/api"
	"github.com/switchyard-dev/switchyard/inference-backend/backendtest"
	"github.com/switchyard-dev/switchyard/inference-backend/demomodels"
	"github.com/switchyard-dev/switchyard/internal/tlsutil"
	"github.com/switchyard-dev/switchyard/proxy"
)

// TestShadowRecordsPresentProxyAdminToken: the shadow report's fetch of a
// proxy's records presents the proxies' admin token (a real proxy whose
// admin pages need it), and a wrong one is named in the error.
func TestShadowRecordsPresentProxyAdminToken(t *testing.T) {
	be := backendtest.Start(t, backendtest.Options{})
	m := api.Model{
		Metadata: api.Metadata{Name: "recommender"},
		Spec: api.Spec{
			Versions: []api.Version{
				{Name: "v1", Endpoints: []string{be.HTTPAddr}, BackendModel: demomodels.V1},
				{Name: "v2", Endpoints: []string{be.HTTPAddr}, BackendModel: demomodels.V1},
			},
			Traffic: api.Traffic{Weights: map[string]int{"v1": 100}},
			Timeout: api.Duration(2 * time.Second),
			Shadow:  &api.Shadow{Version: "v2", Percent: 100},
		},
	}
	const token = "proxy-admin-token-0123456"
	p, err := proxy.New(proxy.Config{AdminAddr: "127.0.0.1:0", Models: []api.Model{m}, AdminToken: token})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	client := &http.Client{Timeout: 5 * time.Second}
	if _, err := fetchShadowRecords(context.Background(), client, p.AdminAddr(), token, "recommender", time.Minute); err != nil {
		t.Fatalf("with the token: %v", err)
	}
	if _, err := fetchShadowRecords(context.Background(), client, p.AdminAddr(), "", "recommender", time.Minute); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("without the token: %v", err)
	}

	// A proxy whose admin serves mTLS: asked at https:// (its node
	// metadata says so) with the control plane's own certificate.
	dir := t.TempDir()
	ca, err := tlsutil.NewCA("test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ca.Write(dir)
	files := map[string]tlsutil.Files{}
	for _, kind := range []string{"proxy", "controlplane"} {
		c, k, err := ca.Issue(tlsutil.LocalLeaf(tlsutil.DefaultTrustDomain, kind, "x", time.Hour, nil, nil))
		if err != nil {
			t.Fatal(err)
		}
		tlsutil.WritePair(dir, kind, c, k)
		files[kind] = tlsutil.Files{Cert: filepath.Join(dir, kind+".crt"), Key: filepath.Join(dir, kind+".key"), CA: filepath.Join(dir, "ca.crt")}
	}
	pf := files["proxy"]
	tp, err := proxy.New(proxy.Config{AdminAddr: "127.0.0.1:0", Models: []api.Model{m}, AdminToken: token, TLS: &pf})
	if err != nil {
		t.Fatal(err)
	}
	if err := tp.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tp.Close() })
	cc, err := tlsutil.NewClientConfig(files["controlplane"], tlsutil.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: cc, DisableKeepAlives: true}}
	if _, err := fetchShadowRecords(context.Background(), tc, "https://"+tp.AdminAddr(), token, "recommender", time.Minute); err != nil {
		t.Fatalf("over mTLS: %v", err)
	}
	if _, err := fetchShadowRecords(context.Background(), client, "https://"+tp.AdminAddr(), token, "recommender", time.Minute); err == nil {
		t.Fatal("over TLS without the control plane's certificate: answered")
	}
}
