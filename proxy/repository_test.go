package proxy

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/switchyard-dev/switchyard/oip/inferencepb"
	"github.com/switchyard-dev/switchyard/proxy/front"
)

// TestRepositoryExtensionRefusedWithReason: the repository calls get the
// same explanation on both transports (gRPC used to answer a bare
// "unknown method").
func TestRepositoryExtensionRefusedWithReason(t *testing.T) {
	p := startProxy(t, Config{})
	c := dialProxy(t, p)
	ctx := context.Background()
	calls := map[string]func() error{
		"RepositoryIndex": func() error { _, err := c.RepositoryIndex(ctx, &pb.RepositoryIndexRequest{}); return err },
		"RepositoryModelLoad": func() error {
			_, err := c.RepositoryModelLoad(ctx, &pb.RepositoryModelLoadRequest{ModelName: "recommender"})
			return err
		},
		"RepositoryModelUnload": func() error {
			_, err := c.RepositoryModelUnload(ctx, &pb.RepositoryModelUnloadRequest{ModelName: "recommender"})
			return err
		},
	}
	for name, call := range calls {
		st := status.Convert(call())
		if st.Code() != codes.Unimplemented || st.Message() != front.NoRepository {
			t.Errorf("%s: %v %q, want UNIMPLEMENTED %q", name, st.Code(), st.Message(), front.NoRepository)
		}
	}
	resp, err := http.Post("http://"+p.HTTPAddr()+"/v2/repository/index", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e struct{ Error string }
	if resp.StatusCode != 404 || json.NewDecoder(resp.Body).Decode(&e) != nil || e.Error != front.NoRepository {
		t.Fatalf("REST repository index: %d %q, want 404 %q", resp.StatusCode, e.Error, front.NoRepository)
	}
}
