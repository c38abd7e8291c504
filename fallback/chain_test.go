package fallback

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/switchyard-dev/switchyard/oip"
)

func TestParseChain(t *testing.T) {
	got, err := ParseChain([]string{"cache", "backup", "static", "empty"})
	if err != nil || !reflect.DeepEqual(got, []Step{StepCache, StepBackup, StepStatic, StepEmpty}) {
		t.Fatalf("ParseChain = %v, %v", got, err)
	}
	for _, bad := range [][]string{{"cache", "cache"}, {"popular"}} {
		if _, err := ParseChain(bad); err == nil {
			t.Errorf("%v: want error", bad)
		}
	}
	_, err = ParseChain([]string{"backup", "popular"})
	if err == nil || !strings.Contains(err.Error(), "fallback.chain[1]") || !strings.Contains(err.Error(), `"popular"`) {
		t.Errorf("error must name the field and value: %v", err)
	}
}

func TestPlan(t *testing.T) {
	all := []Step{StepCache, StepBackup, StepStatic, StepEmpty}
	cases := map[string]struct {
		chain   []Step
		avail   Availability
		want    []Step
		skipped []Step
	}{
		"everything available": {all, Availability{true, true, true}, all, nil},
		"no last good":         {all, Availability{false, true, true}, []Step{StepBackup, StepStatic, StepEmpty}, []Step{StepCache}},
		"only empty":           {all, Availability{}, []Step{StepEmpty}, []Step{StepCache, StepBackup, StepStatic}},
		"chain order kept":     {[]Step{StepStatic, StepCache}, Availability{true, true, true}, []Step{StepStatic, StepCache}, nil},
		"empty chain":          {nil, Availability{true, true, true}, nil, nil},
		"nothing available":    {[]Step{StepCache, StepBackup}, Availability{Static: true}, nil, []Step{StepCache, StepBackup}},
	}
	for name, c := range cases {
		got, skipped := Plan(c.chain, c.avail)
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: Plan = %v, want %v", name, got, c.want)
		}
		var sk []Step
		for _, a := range skipped {
			sk = append(sk, a.Step)
		}
		if !reflect.DeepEqual(sk, c.skipped) {
			t.Errorf("%s: skipped = %v, want %v", name, sk, c.skipped)
		}
	}
}

func TestWalk(t *testing.T) {
	chain := []Step{StepCache, StepBackup, StepStatic}
	var tried []Step
	step, err := Walk(chain, Availability{LastGood: false, Backup: true, Static: true}, Timeout, func(s Step) error {
		tried = append(tried, s)
		if s == StepBackup {
			return errors.New("connect_error")
		}
		return nil
	})
	if err != nil || step != StepStatic || !reflect.DeepEqual(tried, []Step{StepBackup, StepStatic}) {
		t.Fatalf("Walk = %v, %v; tried %v", step, err, tried)
	}
	if step.String() != "static" {
		t.Errorf("label %q", step)
	}

	_, err = Walk(chain, Availability{Backup: true}, NaNOutput, func(s Step) error { return errors.New("backup timed out") })
	var ex *ExhaustedError
	if !errors.As(err, &ex) {
		t.Fatalf("want *ExhaustedError, got %v", err)
	}
	want := "upstream failed (nan_output) and every fallback failed: cache: skipped (no last good answer for this input); backup: backup timed out; static: skipped (no static answer configured)"
	if err.Error() != want {
		t.Errorf("message\n got %q\nwant %q", err, want)
	}
	if oe := ex.OIP(); oe.HTTPStatus() != 503 || oe.GRPCCode().String() != "Unavailable" {
		t.Errorf("exhausted must be 503/UNAVAILABLE, got %d %v", oe.HTTPStatus(), oe.GRPCCode())
	}

	_, err = Walk(nil, Availability{}, BreakerOpen, func(Step) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "breaker_open") || !strings.Contains(err.Error(), "no fallback chain") {
		t.Errorf("empty chain: %v", err)
	}
}

func TestEmptyResponse(t *testing.T) {
	like := []oip.Tensor{{Name: "scores", Datatype: oip.FP32, Shape: []int64{1, 100}}, {Name: "n", Datatype: oip.INT64}}
	r := EmptyResponse("rec", "req-1", like, -1)
	if r.ModelName != "rec" || r.ID != "req-1" || len(r.Outputs) != 2 {
		t.Fatalf("%+v", r)
	}
	for _, o := range r.Outputs {
		if err := o.Validate(); err != nil {
			t.Errorf("empty output invalid: %v", err)
		}
		if o.NumElements() != 0 {
			t.Errorf("output %q has %d elements", o.Name, o.NumElements())
		}
	}
	if !reflect.DeepEqual(r.Outputs[0].Shape, []int64{1, 0}) || like[0].Shape[1] != 100 {
		t.Errorf("shape %v (template must not change: %v)", r.Outputs[0].Shape, like[0].Shape)
	}
}

// TestEmptyResponseFollowsRows: the empty answer's batch dimension is the
// request's.
func TestEmptyResponseFollowsRows(t *testing.T) {
	like := []oip.Tensor{{Name: "scores", Datatype: oip.FP32, Shape: []int64{1, 100}}, {Name: "flat", Datatype: oip.FP32, Shape: []int64{7}}}
	r := EmptyResponse("rec", "", like, 3)
	if !reflect.DeepEqual(r.Outputs[0].Shape, []int64{3, 0}) || !reflect.DeepEqual(r.Outputs[1].Shape, []int64{0}) {
		t.Fatalf("shapes %v %v, want [3 0] and [0]", r.Outputs[0].Shape, r.Outputs[1].Shape)
	}
}
