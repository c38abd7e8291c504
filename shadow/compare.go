package shadow

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/switchyard-dev/switchyard/oip"
)

// Mode is how one output tensor is compared.
type Mode string

// Comparison modes.
const (
	Numeric Mode = "numeric" // element-wise, within tolerances
	TopK    Mode = "topk"    // top-k indices of each row (score vectors)
	Argmax  Mode = "argmax"  // the top-1 label of each row (classification)
	Exact   Mode = "exact"   // bit-for-bit (BYTES, integers)
)

// ParseMode reads numeric, topk, argmax or exact ("" is numeric).
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case "":
		return Numeric, nil
	case Numeric, TopK, Argmax, Exact:
		return m, nil
	}
	return "", fmt.Errorf("unknown compare mode %q (allowed: numeric, topk, argmax, exact)", s)
}

// Rule says how to compare one output.
type Rule struct {
	Mode Mode
	// K for topk (default 10; capped at the row length).
	K int
	// AbsTol and RelTol for numeric: shadow value a agrees with primary
	// value b when |a-b| <= AbsTol + RelTol*|b| (defaults 1e-5, 1e-3).
	AbsTol, RelTol float64
	// MinOverlap for topk: a row agrees when at least this share of the
	// primary's top-k indices are among the shadow's (default 0.8).
	MinOverlap float64
}

// Config says how to compare two answers (plain values; Defaults fills
// zero fields).
type Config struct {
	Rule
	// Outputs restricts the comparison to these outputs (default: every
	// output of the primary).
	Outputs []string
	// PerOutput overrides Rule for the named outputs.
	PerOutput map[string]Rule
}

func (r Rule) defaults() Rule {
	if r.Mode == "" {
		r.Mode = Numeric
	}
	if r.K == 0 {
		r.K = 10
	}
	if r.AbsTol == 0 {
		r.AbsTol = 1e-5
	}
	if r.RelTol == 0 {
		r.RelTol = 1e-3
	}
	if r.MinOverlap == 0 {
		r.MinOverlap = 0.8
	}
	return r
}

// Defaults returns c with zero fields set.
func (c Config) Defaults() Config {
	c.Rule = c.Rule.defaults()
	if len(c.PerOutput) > 0 {
		po := make(map[string]Rule, len(c.PerOutput))
		for k, r := range c.PerOutput {
			po[k] = r.defaults()
		}
		c.PerOutput = po
	}
	return c
}

// Validate names the first bad field.
func (c Config) Validate() error {
	check := func(field string, r Rule) error {
		if _, err := ParseMode(string(r.Mode)); err != nil {
			return fmt.Errorf("%s.mode: %w", field, err)
		}
		switch {
		case r.K < 0:
			return fmt.Errorf("%s.k must be >= 0, got %d", field, r.K)
		case r.AbsTol < 0 || r.RelTol < 0:
			return fmt.Errorf("%s: tolerances must be >= 0", field)
		case r.MinOverlap < 0 || r.MinOverlap > 1:
			return fmt.Errorf("%s.minOverlap must be within 0..1, got %g", field, r.MinOverlap)
		}
		return nil
	}
	if err := check("compare", c.Rule); err != nil {
		return err
	}
	for name, r := range c.PerOutput {
		if err := check(fmt.Sprintf("compare.perOutput[%q]", name), r); err != nil {
			return err
		}
	}
	return nil
}

func (c *Config) rule(name string) Rule {
	if r, ok := c.PerOutput[name]; ok {
		return r
	}
	return c.Rule
}

// Result is one side's outcome: the answer or the error, and its latency.
type Result struct {
	Response *oip.InferResponse
	Err      error
	Latency  time.Duration
}

// Comparison is the verdict on one (primary, shadow) pair.
type Comparison struct {
	// Agree: both answered and every compared output agrees, or both
	// failed.
	Agree bool `json:"agree"`
	// Reason names the first disagreement ("" when Agree).
	Reason       string `json:"reason,omitempty"`
	PrimaryError string `json:"primary_error,omitempty"`
	ShadowError  string `json:"shadow_error,omitempty"`
	PrimaryNaN   bool   `json:"primary_nan,omitempty"`
	ShadowNaN    bool   `json:"shadow_nan,omitempty"`
	// LatencyDiff is shadow latency minus primary latency.
	LatencyDiff time.Duration `json:"-"`
	Outputs     []OutputDiff  `json:"outputs,omitempty"`
}

// OutputDiff holds the figures of one compared output. Only the figures of
// its mode are set.
type OutputDiff struct {
	Name   string `json:"name"`
	Mode   Mode   `json:"mode"`
	Agree  bool   `json:"agree"`
	Reason string `json:"reason,omitempty"`
	// NaN: a side of this output holds NaN/Inf. A ranking (topk, argmax)
	// is not computed then, so it has no figures, and reports leave it out
	// of the mode's means.
	NaN bool `json:"nan,omitempty"`
	// Rows compared (topk, argmax: the tensor viewed as rows of its last
	// dimension).
	Rows int `json:"rows,omitempty"`
	// numeric: the largest |a-b| and |a-b|/|b| over all elements.
	MaxAbsDiff float64 `json:"max_abs_diff,omitempty"`
	MaxRelDiff float64 `json:"max_rel_diff,omitempty"`
	// topk: TopKOverlap is |top_k(primary) ∩ top_k(shadow)| / k, averaged
	// over rows (MinTopKOverlap: the worst row). RankAgreement is the share
	// of the k rank positions holding the same index in both, averaged over
	// rows: 1 means the same items in the same order.
	TopKOverlap    float64 `json:"topk_overlap,omitempty"`
	MinTopKOverlap float64 `json:"min_topk_overlap,omitempty"`
	RankAgreement  float64 `json:"rank_agreement,omitempty"`
	K              int     `json:"k,omitempty"`
	// argmax: the share of rows with the same top-1 label.
	ArgmaxAgreement float64 `json:"argmax_agreement,omitempty"`
	// exact: elements that differ, of Elements.
	Mismatches int `json:"mismatches,omitempty"`
	Elements   int `json:"elements,omitempty"`
}

// Compare is the diff engine: a pure function of the two outcomes and cfg
// (which must have been through Defaults).
func Compare(primary, shadow Result, cfg Config) Comparison {
	return compareWith(primary, shadow, cfg, &scratch{})
}

// scratch holds the float64 views of the two outputs being compared; the
// mirror's workers reuse one per comparison so a diff does not allocate
// them. Nothing in a Comparison refers to it.
type scratch struct {
	p, s  []float64
	names []string // the compared outputs' names when Config.Outputs is empty
}

func compareWith(primary, shadow Result, cfg Config, sc *scratch) Comparison {
	c := Comparison{LatencyDiff: shadow.Latency - primary.Latency}
	// A side whose NaN/Inf answer arrived as an error (ErrNaNOutput) counts
	// as a NaN answer, not as a failure; its outputs cannot be compared.
	pNaNErr := primary.Err != nil && errors.Is(primary.Err, ErrNaNOutput)
	sNaNErr := shadow.Err != nil && errors.Is(shadow.Err, ErrNaNOutput)
	if pNaNErr || sNaNErr {
		return compareNaNErrors(c, primary, shadow, pNaNErr, sNaNErr)
	}
	if primary.Err != nil {
		c.PrimaryError = primary.Err.Error()
	}
	if shadow.Err != nil {
		c.ShadowError = shadow.Err.Error()
	}
	if primary.Err == nil && primary.Response != nil {
		c.PrimaryNaN = hasNaN(primary.Response.Outputs)
	}
	if shadow.Err == nil && shadow.Response != nil {
		c.ShadowNaN = hasNaN(shadow.Response.Outputs)
	}
	switch {
	case primary.Err != nil && shadow.Err != nil:
		c.Agree = true
		return c
	case primary.Err != nil:
		c.Reason = "primary failed, shadow answered"
		return c
	case shadow.Err != nil:
		c.Reason = "shadow failed: " + c.ShadowError
		return c
	case primary.Response == nil || shadow.Response == nil:
		c.Reason = "missing response"
		return c
	}
	c.Agree = true
	names := cfg.Outputs
	if len(names) == 0 {
		names = sc.names[:0]
		for i := range primary.Response.Outputs {
			names = append(names, primary.Response.Outputs[i].Name)
		}
		sc.names = names
		defer clear(sc.names) // keep no names of a finished job
	}
	c.Outputs = make([]OutputDiff, 0, len(names))
	for _, name := range names {
		p := findOutput(primary.Response.Outputs, name)
		s := findOutput(shadow.Response.Outputs, name)
		d := compareOutput(name, p, s, cfg.rule(name), sc)
		if !d.Agree && c.Agree {
			c.Agree = false
			c.Reason = fmt.Sprintf("output %q: %s", name, d.Reason)
		}
		c.Outputs = append(c.Outputs, d)
	}
	// NaN/Inf on one side is the disagreement, whatever else differs: the
	// reason says so first.
	switch {
	case c.ShadowNaN && !c.PrimaryNaN:
		c.Agree, c.Reason = false, "shadow output has NaN/Inf"+nanOutputs(c.Outputs)
	case c.PrimaryNaN && !c.ShadowNaN:
		c.Agree, c.Reason = false, "primary output has NaN/Inf"+nanOutputs(c.Outputs)
	}
	return c
}

// nanOutputs names the compared outputs holding NaN/Inf (": output
// "scores""), or "".
func nanOutputs(ds []OutputDiff) string {
	var names []string
	for _, d := range ds {
		if d.NaN {
			names = append(names, strconv.Quote(d.Name))
		}
	}
	if len(names) == 0 {
		return ""
	}
	return ": output " + strings.Join(names, ", ")
}

// compareNaNErrors judges a pair where at least one side's NaN/Inf answer
// arrived as an ErrNaNOutput error.
func compareNaNErrors(c Comparison, primary, shadow Result, pNaNErr, sNaNErr bool) Comparison {
	side := func(r Result, nanErr bool) (nan bool, failed string) {
		switch {
		case nanErr:
			return true, ""
		case r.Err != nil:
			return false, r.Err.Error()
		case r.Response != nil:
			return hasNaN(r.Response.Outputs), ""
		}
		return false, "missing response"
	}
	var pFail, sFail string
	c.PrimaryNaN, pFail = side(primary, pNaNErr)
	c.ShadowNaN, sFail = side(shadow, sNaNErr)
	c.PrimaryError, c.ShadowError = pFail, sFail
	switch {
	case c.PrimaryNaN && c.ShadowNaN:
		c.Agree = true
	case sNaNErr && pFail == "":
		c.Reason = "shadow output has NaN/Inf: " + shadow.Err.Error()
	case sNaNErr:
		c.Reason = "primary failed, shadow output has NaN/Inf"
	case sFail != "":
		c.Reason = "shadow failed: " + sFail
	default:
		c.Reason = "primary output has NaN/Inf: " + primary.Err.Error()
	}
	return c
}

func hasNaN(ts []oip.Tensor) bool {
	for i := range ts {
		if ts[i].HasNaNOrInf() {
			return true
		}
	}
	return false
}

func findOutput(ts []oip.Tensor, name string) *oip.Tensor {
	for i := range ts {
		if ts[i].Name == name {
			return &ts[i]
		}
	}
	return nil
}

func compareOutput(name string, p, s *oip.Tensor, r Rule, sc *scratch) OutputDiff {
	d := OutputDiff{Name: name, Mode: r.Mode}
	switch {
	case p == nil && s == nil:
		d.Agree = true
		return d
	case p == nil:
		d.Reason = "missing in primary"
		return d
	case s == nil:
		d.Reason = "missing in shadow"
		return d
	case !slices.Equal(p.Shape, s.Shape):
		d.Reason = fmt.Sprintf("shape %v vs %v", p.Shape, s.Shape)
		return d
	}
	if p.Datatype == oip.BYTES || s.Datatype == oip.BYTES {
		d.Mode = Exact
	}
	if d.Mode == Exact {
		return compareExact(d, p, s)
	}
	pv, err1 := p.AppendFloat64s(sc.p[:0])
	sv, err2 := s.AppendFloat64s(sc.s[:0])
	sc.p, sc.s = pv, sv
	if err1 != nil || err2 != nil || len(pv) != len(sv) {
		d.Reason = "cannot read values"
		return d
	}
	pNaN, sNaN := anyNaN(pv), anyNaN(sv)
	d.NaN = pNaN || sNaN
	if d.NaN && d.Mode == TopK {
		d.K = r.K
	}
	switch d.Mode {
	case TopK, Argmax:
		// NaN/Inf are not ranked as numbers: no overlap or label
		// figures. Both sides broken alike agree when they are equal
		// element by element (NaN matching NaN).
		switch {
		case pNaN && sNaN:
			d = compareNumeric(d, pv, sv, r)
			if !d.Agree {
				d.Reason = "both outputs have NaN/Inf, at different places: " + d.Reason
			}
			d.MaxAbsDiff, d.MaxRelDiff = 0, 0
			return d
		case sNaN:
			d.Reason = "shadow output has NaN/Inf"
			return d
		case pNaN:
			d.Reason = "primary output has NaN/Inf"
			return d
		}
		return compareRows(d, pv, sv, p.Shape, r)
	}
	return compareNumeric(d, pv, sv, r)
}

func anyNaN(v []float64) bool {
	for _, x := range v {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return true
		}
	}
	return false
}

func compareNumeric(d OutputDiff, pv, sv []float64, r Rule) OutputDiff {
	d.Agree = true
	fail := func(i int, why string) {
		if d.Agree {
			d.Agree, d.Reason = false, fmt.Sprintf("element %d: %s", i, why)
		}
	}
	for i := range pv {
		b, a := pv[i], sv[i]
		if math.IsNaN(a) || math.IsNaN(b) || math.IsInf(a, 0) || math.IsInf(b, 0) {
			// NaN matches NaN and Inf matches the same Inf; anything else
			// is a difference too large to state (JSON has no Inf).
			if a == b || (math.IsNaN(a) && math.IsNaN(b)) {
				continue
			}
			d.MaxAbsDiff, d.MaxRelDiff = math.MaxFloat64, math.MaxFloat64
			fail(i, fmt.Sprintf("%g vs %g", b, a))
			continue
		}
		abs := math.Abs(a - b)
		d.MaxAbsDiff = max(d.MaxAbsDiff, abs)
		switch den := math.Abs(b); {
		case den > 0:
			d.MaxRelDiff = max(d.MaxRelDiff, abs/den)
		case abs > 0:
			d.MaxRelDiff = math.MaxFloat64
		}
		if abs > r.AbsTol+r.RelTol*math.Abs(b) {
			fail(i, fmt.Sprintf("%g vs %g (|diff| %.3g > %g + %g*|primary|)", b, a, abs, r.AbsTol, r.RelTol))
		}
	}
	return d
}

// rowLen is the length of the last dimension (the class or item axis).
func rowLen(shape []int64, n int) int {
	if len(shape) == 0 || shape[len(shape)-1] <= 0 {
		return n
	}
	return int(shape[len(shape)-1])
}

func compareRows(d OutputDiff, pv, sv []float64, shape []int64, r Rule) OutputDiff {
	c := rowLen(shape, len(pv))
	if c == 0 || len(pv) == 0 {
		d.Agree = true
		return d
	}
	rows := len(pv) / c
	d.Rows = rows
	k := 1
	if d.Mode == TopK {
		k = min(r.K, c)
		d.K = k
	}
	var bufA, bufB [16]int
	ta, tb := bufA[:0], bufB[:0]
	if k > len(bufA) {
		ta, tb = make([]int, 0, k), make([]int, 0, k)
	}
	d.MinTopKOverlap = 1
	var overlapSum, rankSum float64
	agreeRows := 0
	worst := -1
	for row := 0; row < rows; row++ {
		ta = topK(ta[:0], pv[row*c:(row+1)*c], k)
		tb = topK(tb[:0], sv[row*c:(row+1)*c], k)
		same, pos := 0, 0
		for i, x := range ta {
			if slices.Contains(tb, x) {
				same++
			}
			if tb[i] == x {
				pos++
			}
		}
		ov := float64(same) / float64(k)
		overlapSum += ov
		rankSum += float64(pos) / float64(k)
		if ov < d.MinTopKOverlap {
			d.MinTopKOverlap = ov
			worst = row
		}
		if ta[0] == tb[0] {
			agreeRows++
		}
	}
	if d.Mode == Argmax {
		d.MinTopKOverlap = 0
		d.ArgmaxAgreement = float64(agreeRows) / float64(rows)
		d.Agree = agreeRows == rows
		if !d.Agree {
			d.Reason = fmt.Sprintf("labels differ in %d of %d rows", rows-agreeRows, rows)
		}
		return d
	}
	d.TopKOverlap = overlapSum / float64(rows)
	d.RankAgreement = rankSum / float64(rows)
	d.Agree = d.MinTopKOverlap >= r.MinOverlap
	if !d.Agree {
		d.Reason = fmt.Sprintf("top-%d overlap %.2f in row %d < %.2f", k, d.MinTopKOverlap, worst, r.MinOverlap)
	}
	return d
}

// topK appends to dst the indices of the k largest values of v, largest
// first; ties go to the lower index; NaN ranks below everything.
func topK(dst []int, v []float64, k int) []int {
	less := func(i, j int) bool { // v[i] ranks below v[j]
		a, b := v[i], v[j]
		if math.IsNaN(a) {
			return !math.IsNaN(b) || i > j
		}
		if math.IsNaN(b) {
			return false
		}
		return a < b || (a == b && i > j)
	}
	for i, x := range v {
		if len(dst) < k {
			dst = append(dst, i)
		} else if last := v[dst[k-1]]; !math.IsNaN(last) && !(x > last) {
			// Fast path: not above the current k-th (NaN, equal values
			// at a higher index and smaller ones all rank below it).
			continue
		} else if less(dst[k-1], i) {
			dst[k-1] = i
		} else {
			continue
		}
		for j := len(dst) - 1; j > 0 && less(dst[j-1], dst[j]); j-- {
			dst[j], dst[j-1] = dst[j-1], dst[j]
		}
	}
	return dst
}

func compareExact(d OutputDiff, p, s *oip.Tensor) OutputDiff {
	if p.Datatype != s.Datatype {
		d.Reason = fmt.Sprintf("datatype %s vs %s", p.Datatype, s.Datatype)
		return d
	}
	if p.Datatype == oip.BYTES {
		pe, err1 := p.BytesElements()
		se, err2 := s.BytesElements()
		if err1 != nil || err2 != nil || len(pe) != len(se) {
			d.Reason = "cannot read BYTES elements"
			return d
		}
		d.Elements = len(pe)
		for i := range pe {
			if !bytes.Equal(pe[i], se[i]) {
				d.Mismatches++
			}
		}
	} else {
		sz := p.Datatype.Size()
		if sz == 0 || len(p.Raw) != len(s.Raw) {
			d.Reason = "data sizes differ"
			return d
		}
		d.Elements = len(p.Raw) / sz
		for i := 0; i+sz <= len(p.Raw); i += sz {
			if !bytes.Equal(p.Raw[i:i+sz], s.Raw[i:i+sz]) {
				d.Mismatches++
			}
		}
	}
	d.Agree = d.Mismatches == 0
	if !d.Agree {
		d.Reason = fmt.Sprintf("%d of %d elements differ", d.Mismatches, d.Elements)
	}
	return d
}
