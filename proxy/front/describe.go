package front

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/switchyard-dev/switchyard/proxy/pipeline"

	"github.com/switchyard-dev/switchyard/oip"
	pb "github.com/switchyard-dev/switchyard/oip/inferencepb"
	"github.com/switchyard-dev/switchyard/proxy/upstream"
)

// Describing a virtual model: metadata, configuration, statistics and
// readiness (REST GET /v2/models/{m}[/versions/{v}][/config|/stats|/ready],
// gRPC ModelMetadata, ModelConfig, ModelStatistics, ModelReady).
//
// The rule: the answer describes one version of the route, under the
// virtual name —
//
//   - the version the request names (REST /versions/{v}/, gRPC version,
//     or the override header), if it names one;
//   - else the serving version: the largest weight, the first in document
//     order on a tie (routing.Picker.Serving), so the answer does not
//     alternate under a split.
//
// The backend's answer is renamed: metadata and configuration carry the
// virtual model's name, and metadata lists the virtual versions (v1, v2,
// ...), each of which works in /versions/{v}/ paths and gRPC
// model_version; statistics carry the virtual model's name and version.
// Every version of the route may be named, whatever its weight or canary
// state, as with the override header (routing.Picker.Pick).

// describeTarget is the version a describe request is answered from.
func describeTarget(s *pipeline.Snapshot, model, version, override string) (*pipeline.Route, *pipeline.Variant, *oip.Error) {
	if s == nil {
		return nil, nil, oip.Errorf(oip.Unavailable, "no configuration yet: the proxy has not reached its control plane and has no persisted configuration")
	}
	r := s.Route(model)
	if r == nil {
		return nil, nil, oip.Errorf(oip.NotFound, "unknown model %q; known models: %s", model, s.Names())
	}
	if version != "" {
		v := r.Variant(version)
		if v == nil {
			return nil, nil, pipeline.NoSuchVersion(r, version)
		}
		return r, v, nil
	}
	if override != "" {
		if v := r.Variant(override); v != nil {
			return r, v, nil
		}
	}
	return r, r.Variants[r.Picker.Serving()], nil
}

// describeCall is one describe call to a version's backend, over the
// version's protocol: viaHTTP gets path's JSON into out, viaGRPC calls the
// gRPC client.
func describeCall(ctx context.Context, v *pipeline.Variant, path string, out any, viaGRPC func(context.Context, pb.GRPCInferenceServiceClient) error) error {
	ctx, cancel := context.WithTimeout(ctx, v.Route.Timeout)
	defer cancel()
	e := upstream.PickP2C(v.Endpoints, rand.Uint64(), time.Now().UnixNano(), nil)
	if e.GRPC != nil {
		if err := viaGRPC(ctx, e.GRPC); err != nil {
			oe := oip.AsError(oip.ErrorFromGRPC(err))
			return &oip.Error{Code: oe.Code, Msg: fmt.Sprintf("model %q version %q: %s", v.Route.Name, v.Name, oe.Msg)}
		}
		return nil
	}
	deadline, _ := ctx.Deadline()
	var resp upstream.Response
	if err := e.HTTP.Do(deadline, &upstream.Request{Method: http.MethodGet, Path: path, Ctx: ctx}, &resp); err != nil {
		return oip.Errorf(oip.Unavailable, "model %q version %q: %v", v.Route.Name, v.Name, err)
	}
	if resp.Status != http.StatusOK {
		msg, ok := pipeline.ErrorMessage(resp.Body)
		if !ok {
			msg = fmt.Sprintf("the backend answered %d", resp.Status)
		}
		return &oip.Error{Code: oip.CodeFromHTTPStatus(resp.Status), Msg: fmt.Sprintf("model %q version %q: %s", v.Route.Name, v.Name, msg)}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(resp.Body, out); err != nil {
		return oip.Errorf(oip.Internal, "model %q version %q: the backend's answer is not what OIP v2 says: %v", v.Route.Name, v.Name, err)
	}
	return nil
}

// metadata is v's metadata under the virtual model's name and versions.
func modelMetadata(ctx context.Context, v *pipeline.Variant) (*oip.ModelMetadata, error) {
	md := &oip.ModelMetadata{}
	err := describeCall(ctx, v, v.MetadataPath, md, func(ctx context.Context, c pb.GRPCInferenceServiceClient) error {
		resp, err := c.ModelMetadata(ctx, &pb.ModelMetadataRequest{Name: v.BackendModel, Version: v.BackendVersion})
		if err == nil {
			md = oip.ModelMetadataFromProto(resp)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	md.Name, md.Versions = v.Route.Name, v.Route.Model.VersionNames()
	return md, nil
}

// ready reports whether v's backend serves it. A backend's own "no" (a
// REST answer other than 200, gRPC ready false or NOT_FOUND for a model it
// does not know: Triton's answer) is not ready; a backend that cannot be
// reached is an error.
func ready(ctx context.Context, v *pipeline.Variant) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, v.Route.Timeout)
	defer cancel()
	e := upstream.PickP2C(v.Endpoints, rand.Uint64(), time.Now().UnixNano(), nil)
	if e.GRPC != nil {
		resp, err := e.GRPC.ModelReady(ctx, &pb.ModelReadyRequest{Name: v.BackendModel, Version: v.BackendVersion})
		switch oe := oip.ErrorFromGRPC(err); {
		case err == nil:
			return resp.GetReady(), nil
		case oip.CodeOf(oe) == oip.NotFound:
			return false, nil
		default:
			return false, &oip.Error{Code: oip.Unavailable, Msg: fmt.Sprintf("model %q version %q: %s", v.Route.Name, v.Name, oip.AsError(oe).Msg)}
		}
	}
	deadline, _ := ctx.Deadline()
	var resp upstream.Response
	if err := e.HTTP.Do(deadline, &upstream.Request{Method: http.MethodGet, Path: v.ReadyPath, Ctx: ctx}, &resp); err != nil {
		return false, oip.Errorf(oip.Unavailable, "model %q version %q: %v", v.Route.Name, v.Name, err)
	}
	return resp.Status == http.StatusOK, nil
}

// config is v's model configuration under the virtual model's name.
func config(ctx context.Context, v *pipeline.Variant) (*oip.ModelConfig, error) {
	c := &oip.ModelConfig{}
	err := describeCall(ctx, v, v.ConfigPath, c, func(ctx context.Context, cl pb.GRPCInferenceServiceClient) error {
		resp, err := cl.ModelConfig(ctx, &pb.ModelConfigRequest{Name: v.BackendModel, Version: v.BackendVersion})
		if err == nil {
			c = oip.ModelConfigFromProto(resp.GetConfig())
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	c.Name = v.Route.Name
	return c, nil
}

// statistics are v's statistics under the virtual model's name and v's
// version name.
func statistics(ctx context.Context, v *pipeline.Variant) ([]oip.ModelStatistics, error) {
	var body struct {
		ModelStats []oip.ModelStatistics `json:"model_stats"`
	}
	err := describeCall(ctx, v, v.StatsPath, &body, func(ctx context.Context, c pb.GRPCInferenceServiceClient) error {
		resp, err := c.ModelStatistics(ctx, &pb.ModelStatisticsRequest{Name: v.BackendModel, Version: v.BackendVersion})
		if err == nil {
			body.ModelStats = oip.ModelStatisticsFromProto(resp)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	for i := range body.ModelStats {
		body.ModelStats[i].Name, body.ModelStats[i].Version = v.Route.Name, v.Name
	}
	if body.ModelStats == nil {
		body.ModelStats = []oip.ModelStatistics{}
	}
	return body.ModelStats, nil
}

// allStatistics are every virtual model's statistics (its serving
// version), in name order; a version that cannot answer is left out (and
// named in the log), so one down backend does not hide the others.
func allStatistics(ctx context.Context, p *pipeline.Pipeline) []oip.ModelStatistics {
	all := []oip.ModelStatistics{}
	s := p.Snapshot()
	if s == nil {
		return all
	}
	for _, m := range s.Models() {
		r := s.Route(m.Metadata.Name)
		st, err := statistics(ctx, r.Variants[r.Picker.Serving()])
		if err != nil {
			p.Logger().Warn("statistics left out", "model", r.Name, "error", err)
			continue
		}
		all = append(all, st...)
	}
	return all
}
