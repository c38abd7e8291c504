package api

import (
	"fmt"
	"math"
	"net"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/switchyard-dev/switchyard/oip"
)

// FieldError is one problem with one field of a Model document.
type FieldError struct {
	// Field is the path of the field, e.g. "spec.traffic.weights.v9".
	Field string `json:"field"`
	// Message says what is wrong and what is allowed.
	Message string `json:"message"`
}

func (e FieldError) Error() string { return e.Field + ": " + e.Message }

// ValidationError lists every problem found in a document, in field order.
type ValidationError []FieldError

func (e ValidationError) Error() string {
	parts := make([]string, len(e))
	for i, f := range e {
		parts[i] = f.Error()
	}
	return strings.Join(parts, "; ")
}

// Limits on names and sizes.
const (
	MaxVersions         = 64
	MaxEndpoints        = 1024
	MaxTimeout          = Duration(10 * time.Minute)
	MaxRetryAttempts    = 10
	MaxShadowQueueSize  = 1 << 20
	MaxShadowWorkers    = 1024
	MaxShadowBatchRows  = 4096
	MaxStaticElements   = 1 << 20
	MaxCanarySteps      = 100
	maxBackendNameChars = 256
)

var (
	// modelNameRE is a DNS label.
	modelNameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	// versionNameRE: lowercase letters, digits, '.', '_', '-'; 1..63 chars.
	versionNameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$`)
	// headerNameRE is a lowercase HTTP/2 header name (RFC 9110 token).
	headerNameRE = regexp.MustCompile("^[a-z0-9!#$%&'*+.^_`|~-]{1,128}$")
	labelKeyRE   = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._/-]{0,251}[A-Za-z0-9])?$`)
)

type validator struct{ errs ValidationError }

func (v *validator) add(field, format string, args ...any) {
	v.errs = append(v.errs, FieldError{Field: field, Message: fmt.Sprintf(format, args...)})
}

// Validate checks a Model whose defaults have been applied (see Defaults).
// It returns nil or a ValidationError naming every bad field and saying what
// is allowed.
func (m *Model) Validate() error {
	v := &validator{}
	if m.APIVersion != APIVersion {
		v.add("apiVersion", "must be %q, got %q", APIVersion, m.APIVersion)
	}
	if m.Kind != KindModel {
		v.add("kind", "must be %q, got %q", KindModel, m.Kind)
	}
	if !modelNameRE.MatchString(m.Metadata.Name) {
		v.add("metadata.name", "%q is not a valid model name: use 1-63 lowercase letters, digits and '-', starting and ending with a letter or digit", m.Metadata.Name)
	}
	for _, k := range sortedKeys(m.Metadata.Labels) {
		if !labelKeyRE.MatchString(k) {
			v.add("metadata.labels."+k, "invalid label key: letters, digits, '.', '_', '/', '-', at most 253 characters")
		}
		if len(m.Metadata.Labels[k]) > 256 {
			v.add("metadata.labels."+k, "value longer than 256 characters")
		}
	}
	m.validateSpec(v)
	if len(v.errs) == 0 {
		return nil
	}
	return v.errs
}

func (m *Model) validateSpec(v *validator) {
	s := &m.Spec
	names := map[string]bool{}
	if len(s.Versions) == 0 {
		v.add("spec.versions", "at least one version is required")
	}
	if len(s.Versions) > MaxVersions {
		v.add("spec.versions", "at most %d versions, got %d", MaxVersions, len(s.Versions))
	}
	for i, ver := range s.Versions {
		p := fmt.Sprintf("spec.versions[%d]", i)
		switch {
		case !versionNameRE.MatchString(ver.Name):
			v.add(p+".name", "%q is not a valid version name: use 1-63 lowercase letters, digits, '.', '_' and '-', starting and ending with a letter or digit", ver.Name)
		case names[ver.Name]:
			v.add(p+".name", "duplicate version name %q", ver.Name)
		}
		names[ver.Name] = true
		if len(ver.Endpoints) == 0 {
			v.add(p+".endpoints", "at least one host:port endpoint is required")
		}
		if len(ver.Endpoints) > MaxEndpoints {
			v.add(p+".endpoints", "at most %d endpoints, got %d", MaxEndpoints, len(ver.Endpoints))
		}
		seen := map[string]bool{}
		for j, ep := range ver.Endpoints {
			ep_ := fmt.Sprintf("%s.endpoints[%d]", p, j)
			if err := checkEndpoint(ep); err != nil {
				v.add(ep_, "%v", err)
			} else if seen[ep] {
				v.add(ep_, "duplicate endpoint %q", ep)
			}
			seen[ep] = true
		}
		if ver.Protocol != ProtocolHTTP && ver.Protocol != ProtocolGRPC {
			v.add(p+".protocol", "must be %q or %q, got %q", ProtocolHTTP, ProtocolGRPC, ver.Protocol)
		}
		if ver.BackendModel == "" || len(ver.BackendModel) > maxBackendNameChars || strings.ContainsAny(ver.BackendModel, "/ \t\r\n?#%") {
			v.add(p+".backendModel", "%q is not a valid backend model name: 1-%d characters, no '/', '?', '#', '%%' or whitespace", ver.BackendModel, maxBackendNameChars)
		}
		if len(ver.BackendVersion) > maxBackendNameChars || strings.ContainsAny(ver.BackendVersion, "/ \t\r\n?#%") {
			v.add(p+".backendVersion", "%q is not a valid backend version: at most %d characters, no '/', '?', '#', '%%' or whitespace", ver.BackendVersion, maxBackendNameChars)
		}
		if t := ver.TLS; t != nil {
			checkUpstreamTLS(v, p+".tls", t)
		}
	}
	known := strings.Join(m.VersionNames(), ", ")
	version := func(field, name string) bool {
		if name == "" {
			v.add(field, "required: name a version (versions: %s)", known)
			return false
		}
		if !names[name] {
			v.add(field, "no such version %q (versions: %s)", name, known)
			return false
		}
		return true
	}

	// Traffic.
	t := &s.Traffic
	total := 0
	if len(t.Weights) == 0 {
		v.add("spec.traffic.weights", "required: give each version a weight 0..%d, total > 0 (versions: %s)", MaxWeight, known)
	}
	for _, k := range sortedKeys(t.Weights) {
		w := t.Weights[k]
		f := "spec.traffic.weights." + k
		if !names[k] {
			v.add(f, "no such version (versions: %s)", known)
		}
		if w < 0 || w > MaxWeight {
			v.add(f, "weight %d out of range: each weight is an integer 0..%d", w, MaxWeight)
			continue
		}
		total += w
	}
	if len(t.Weights) > 0 && total == 0 {
		v.add("spec.traffic.weights", "weights total 0: at least one version needs a weight > 0")
	}
	if t.StickyHeader != "" && !headerNameRE.MatchString(t.StickyHeader) {
		v.add("spec.traffic.stickyHeader", "%q is not a valid header name: lowercase token characters, at most 128", t.StickyHeader)
	}
	if !headerNameRE.MatchString(t.OverrideHeader) {
		v.add("spec.traffic.overrideHeader", "%q is not a valid header name: lowercase token characters, at most 128", t.OverrideHeader)
	}

	checkDuration(v, "spec.timeout", s.Timeout, true)

	if r := s.Retries; r != nil {
		if r.Attempts < 0 || r.Attempts > MaxRetryAttempts {
			v.add("spec.retries.attempts", "must be 0..%d, got %d", MaxRetryAttempts, r.Attempts)
		}
		if !(r.BudgetPercent > 0 && r.BudgetPercent <= 100) {
			v.add("spec.retries.budgetPercent", "must be in (0, 100], got %v", r.BudgetPercent)
		}
	}

	if sh := s.Shadow; sh != nil {
		version("spec.shadow.version", sh.Version)
		if !(sh.Percent > 0 && sh.Percent <= 100) {
			v.add("spec.shadow.percent", "must be in (0, 100], got %v", sh.Percent)
		}
		switch sh.Sampling {
		case SamplingRandom:
		case SamplingSticky:
			if t.StickyHeader == "" {
				v.add("spec.shadow.sampling", "sticky sampling needs spec.traffic.stickyHeader")
			}
		default:
			v.add("spec.shadow.sampling", "must be %q or %q, got %q", SamplingRandom, SamplingSticky, sh.Sampling)
		}
		if sh.QueueSize < 1 || sh.QueueSize > MaxShadowQueueSize {
			v.add("spec.shadow.queueSize", "must be 1..%d, got %d", MaxShadowQueueSize, sh.QueueSize)
		}
		if sh.Workers < 1 || sh.Workers > MaxShadowWorkers {
			v.add("spec.shadow.workers", "must be 1..%d, got %d", MaxShadowWorkers, sh.Workers)
		}
		checkDuration(v, "spec.shadow.timeout", sh.Timeout, true)
		c := sh.Compare
		switch c.Mode {
		case CompareNumeric, CompareArgmax, CompareExact:
			if c.K != 0 {
				v.add("spec.shadow.compare.k", "only used with mode %q", CompareTopK)
			}
		case CompareTopK:
			if c.K < 1 || c.K > 100000 {
				v.add("spec.shadow.compare.k", "must be 1..100000, got %d", c.K)
			}
		default:
			v.add("spec.shadow.compare.mode", "must be one of numeric, topk, argmax, exact; got %q", c.Mode)
		}
		checkNonNegative(v, "spec.shadow.compare.absTol", c.AbsTol)
		checkNonNegative(v, "spec.shadow.compare.relTol", c.RelTol)
		for i, o := range c.Outputs {
			if o == "" {
				v.add(fmt.Sprintf("spec.shadow.compare.outputs[%d]", i), "empty output name")
			}
		}
		if !(sh.NoiseFloorPercent >= 0 && sh.NoiseFloorPercent <= 100) {
			v.add("spec.shadow.noiseFloorPercent", "must be 0..100, got %v", sh.NoiseFloorPercent)
		}
		if b := sh.Batch; b != nil {
			if b.MaxRows < 2 || b.MaxRows > MaxShadowBatchRows {
				v.add("spec.shadow.batch.maxRows", "must be 2..%d, got %d", MaxShadowBatchRows, b.MaxRows)
			}
			if b.MaxDelay < 0 || b.MaxDelay > Duration(time.Second) {
				v.add("spec.shadow.batch.maxDelay", "must be 0..1s, got %s", b.MaxDelay)
			}
		}
	}

	if c := s.Canary; c != nil {
		if version("spec.canary.version", c.Version) && len(s.Versions) < 2 {
			v.add("spec.canary.version", "a canary needs another version as its baseline")
		}
		if len(c.Steps) > MaxCanarySteps {
			v.add("spec.canary.steps", "at most %d steps", MaxCanarySteps)
		}
		for i, st := range c.Steps {
			if st < 1 || st > 100 || (i > 0 && st <= c.Steps[i-1]) {
				v.add(fmt.Sprintf("spec.canary.steps[%d]", i), "steps are percentages 1..100, strictly increasing; got %d", st)
			}
		}
		if n := len(c.Steps); n > 0 && c.Steps[n-1] != 100 {
			v.add("spec.canary.steps", "the last step must be 100, got %d", c.Steps[n-1])
		}
		checkDuration(v, "spec.canary.stepDuration", c.StepDuration, false)
		if c.StepDuration <= 0 {
			v.add("spec.canary.stepDuration", "must be > 0")
		}
		if c.MinRequests < 0 {
			v.add("spec.canary.minRequests", "must be >= 0, got %d", c.MinRequests)
		}
		checkRate(v, "spec.canary.maxErrorRate", c.MaxErrorRate)
		checkRate(v, "spec.canary.maxNaNRate", c.MaxNaNRate)
		checkRate(v, "spec.canary.maxClientErrorExcess", c.MaxClientErrorExcess)
		if !(c.MaxP99Ratio >= 1) || math.IsInf(c.MaxP99Ratio, 0) {
			v.add("spec.canary.maxP99Ratio", "must be a finite ratio >= 1, got %v", c.MaxP99Ratio)
		}
		if c.ConsecutiveFailures < 1 || c.ConsecutiveFailures > 1000 {
			v.add("spec.canary.consecutiveFailures", "must be 1..1000, got %d", c.ConsecutiveFailures)
		}
	}

	if f := s.Fallback; f != nil {
		m.validateFallback(v, f, version)
	}

	if c := s.Concurrency; c != nil {
		if f := s.Fallback; f != nil && f.MaxConcurrency > 0 {
			v.add("spec.fallback.maxConcurrency", "is the older spelling of spec.concurrency.limit: set one of them, not both")
		}
		switch {
		case c.Limit < 0 || c.MinLimit < 0 || c.MaxLimit < 0:
			v.add("spec.concurrency", "limit, minLimit and maxLimit must be >= 0, got %d, %d, %d", c.Limit, c.MinLimit, c.MaxLimit)
		case !c.Adaptive && c.Limit == 0:
			v.add("spec.concurrency.limit", "required (> 0) for a fixed cap; or set adaptive: true")
		case !c.Adaptive && (c.MinLimit != 0 || c.MaxLimit != 0 || c.Tolerance != 0):
			v.add("spec.concurrency", "minLimit, maxLimit and tolerance are for adaptive: true")
		case c.Adaptive && c.MinLimit > 0 && c.MaxLimit > 0 && c.MinLimit > c.MaxLimit:
			v.add("spec.concurrency.minLimit", "must be <= maxLimit (%d), got %d", c.MaxLimit, c.MinLimit)
		case c.Adaptive && c.Limit > 0 && ((c.MinLimit > 0 && c.Limit < c.MinLimit) || (c.MaxLimit > 0 && c.Limit > c.MaxLimit)):
			v.add("spec.concurrency.limit", "the adaptive cap's start must be within minLimit..maxLimit, got %d", c.Limit)
		case c.Tolerance != 0 && (!(c.Tolerance >= 1) || math.IsInf(c.Tolerance, 0)):
			v.add("spec.concurrency.tolerance", "must be a finite ratio >= 1 (default 1.5), got %v", c.Tolerance)
		}
	}

	if c := s.Cache; c != nil {
		checkDuration(v, "spec.cache.ttl", c.TTL, true)
		if c.MaxEntries < 1 {
			v.add("spec.cache.maxEntries", "must be >= 1, got %d", c.MaxEntries)
		}
		if c.MaxBytes < 1 {
			v.add("spec.cache.maxBytes", "must be >= 1, got %d", c.MaxBytes)
		}
	}
}

func (m *Model) validateFallback(v *validator, f *Fallback, version func(field, name string) bool) {
	if len(f.Chain) == 0 {
		v.add("spec.fallback.chain", "at least one step: cache, backup, static or empty")
	}
	seen := map[string]bool{}
	for i, st := range f.Chain {
		p := fmt.Sprintf("spec.fallback.chain[%d]", i)
		switch st {
		case FallbackCache, FallbackBackup, FallbackStatic, FallbackEmpty:
			if seen[st] {
				v.add(p, "step %q appears twice", st)
			}
			seen[st] = true
		default:
			v.add(p, "unknown step %q (allowed: cache, backup, static, empty)", st)
		}
	}
	if seen[FallbackBackup] {
		version("spec.fallback.backup", f.Backup)
	} else if f.Backup != "" {
		v.add("spec.fallback.backup", "set, but the chain has no \"backup\" step")
	}
	if f.BackupTimeout != 0 {
		checkDuration(v, "spec.fallback.backupTimeout", f.BackupTimeout, true)
	}
	if seen[FallbackCache] && !m.Spec.Cache.On() {
		v.add("spec.fallback.chain", "the \"cache\" step needs spec.cache enabled")
	}
	if seen[FallbackStatic] {
		if f.Static == nil || len(f.Static.Outputs) == 0 {
			v.add("spec.fallback.static", "required by the \"static\" step: at least one output tensor")
		}
	} else if f.Static != nil {
		v.add("spec.fallback.static", "set, but the chain has no \"static\" step")
	}
	if f.Static != nil {
		names := map[string]bool{}
		for i, o := range f.Static.Outputs {
			p := fmt.Sprintf("spec.fallback.static.outputs[%d]", i)
			if o.Name == "" {
				v.add(p+".name", "required")
			} else if names[o.Name] {
				v.add(p+".name", "duplicate output %q", o.Name)
			}
			names[o.Name] = true
			checkStaticTensor(v, p, o)
		}
	}
	b := f.Breaker
	if b.ConsecutiveFailures < 1 || b.ConsecutiveFailures > 100000 {
		v.add("spec.fallback.breaker.consecutiveFailures", "must be 1..100000, got %d", b.ConsecutiveFailures)
	}
	checkRate(v, "spec.fallback.breaker.failureRatio", b.FailureRatio)
	if b.MinRequests < 0 {
		v.add("spec.fallback.breaker.minRequests", "must be >= 0, got %d", b.MinRequests)
	}
	checkDuration(v, "spec.fallback.breaker.openFor", b.OpenFor, false)
	if b.OpenFor <= 0 {
		v.add("spec.fallback.breaker.openFor", "must be > 0")
	}
	if b.FirstOpenFor < 0 {
		v.add("spec.fallback.breaker.firstOpenFor", "must be >= 0 (0: min(1s, openFor)), got %s", b.FirstOpenFor)
	} else if b.FirstOpenFor > b.OpenFor && b.OpenFor > 0 {
		v.add("spec.fallback.breaker.firstOpenFor", "must be <= openFor (%s), got %s", b.OpenFor, b.FirstOpenFor)
	}
	if f.MaxConcurrency < 0 {
		v.add("spec.fallback.maxConcurrency", "must be >= 0 (0: unlimited), got %d", f.MaxConcurrency)
	}
}

func checkStaticTensor(v *validator, p string, o StaticTensor) {
	dt, err := oip.ParseDatatype(o.Datatype)
	if err != nil {
		v.add(p+".datatype", "%v", err)
		return
	}
	n, err := oip.NumElements(o.Shape)
	if err != nil {
		v.add(p+".shape", "%v", err)
		return
	}
	if n > MaxStaticElements {
		v.add(p+".shape", "at most %d elements, got %d", MaxStaticElements, n)
		return
	}
	if dt == oip.BYTES {
		if len(o.Data) != 0 {
			v.add(p+".data", "a BYTES tensor carries strings, not data")
		}
		if int64(len(o.Strings)) != n {
			v.add(p+".strings", "shape %v needs %d elements, got %d", o.Shape, n, len(o.Strings))
		}
		return
	}
	if len(o.Strings) != 0 {
		v.add(p+".strings", "only a BYTES tensor carries strings; use data")
	}
	if int64(len(o.Data)) != n {
		v.add(p+".data", "shape %v needs %d elements, got %d", o.Shape, n, len(o.Data))
		return
	}
	lo, hi, integral := datatypeRange(dt)
	for i, x := range o.Data {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			v.add(fmt.Sprintf("%s.data[%d]", p, i), "NaN and Inf are not allowed in a static answer")
			return
		}
		if integral && (x != math.Trunc(x) || x < lo || x > hi) {
			v.add(fmt.Sprintf("%s.data[%d]", p, i), "%v is not a %s value (whole numbers %v..%v)", x, dt, lo, hi)
			return
		}
	}
}

func datatypeRange(dt oip.Datatype) (lo, hi float64, integral bool) {
	switch dt {
	case oip.BOOL:
		return 0, 1, true
	case oip.UINT8:
		return 0, math.MaxUint8, true
	case oip.UINT16:
		return 0, math.MaxUint16, true
	case oip.UINT32:
		return 0, math.MaxUint32, true
	case oip.UINT64:
		return 0, math.MaxUint64, true
	case oip.INT8:
		return math.MinInt8, math.MaxInt8, true
	case oip.INT16:
		return math.MinInt16, math.MaxInt16, true
	case oip.INT32:
		return math.MinInt32, math.MaxInt32, true
	case oip.INT64:
		return math.MinInt64, math.MaxInt64, true
	case oip.FP16:
		return -65504, 65504, false
	case oip.FP32:
		return -math.MaxFloat32, math.MaxFloat32, false
	}
	return -math.MaxFloat64, math.MaxFloat64, false
}

func checkDuration(v *validator, field string, d Duration, positive bool) {
	if !positive {
		return
	}
	if d <= 0 {
		v.add(field, "must be a positive duration such as \"50ms\", got %s", d)
		return
	}
	if d > MaxTimeout {
		v.add(field, "must be at most %s, got %s", MaxTimeout, d)
	}
}

func checkRate(v *validator, field string, x float64) {
	if !(x >= 0 && x <= 1) {
		v.add(field, "must be a fraction 0..1, got %v", x)
	}
}

func checkNonNegative(v *validator, field string, x float64) {
	if !(x >= 0) || math.IsInf(x, 0) {
		v.add(field, "must be a finite number >= 0, got %v", x)
	}
}

// checkEndpoint accepts host:port with a numeric port 1..65535 and a
// non-empty host (IP address or DNS name).
func checkEndpoint(ep string) error {
	host, port, err := net.SplitHostPort(ep)
	if err != nil {
		return fmt.Errorf("%q is not host:port: %v", ep, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("%q: port must be a number 1..65535", ep)
	}
	if host == "" {
		return fmt.Errorf("%q: host is empty", ep)
	}
	if net.ParseIP(host) == nil && !dnsNameRE.MatchString(host) {
		return fmt.Errorf("%q: host must be an IP address or a DNS name", ep)
	}
	return nil
}

var dnsNameRE = regexp.MustCompile(`^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$`)

// IsIPEndpoint reports whether ep is an IP:port (as opposed to a DNS name).
func IsIPEndpoint(ep string) bool {
	host, _, err := net.SplitHostPort(ep)
	return err == nil && net.ParseIP(host) != nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// checkUpstreamTLS checks a version's tls section.
func checkUpstreamTLS(v *validator, p string, t *UpstreamTLS) {
	if t.Disabled {
		if t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" || t.ServerName != "" {
			v.add(p, "disabled: true takes no files or serverName")
		}
		return
	}
	if t.CAFile == "" {
		v.add(p+".caFile", "required: the CA file (on the proxy's host) that the backends' certificates must chain to")
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		v.add(p, "certFile and keyFile go together (the client certificate for mTLS)")
	}
	for _, f := range []struct{ name, path string }{{"caFile", t.CAFile}, {"certFile", t.CertFile}, {"keyFile", t.KeyFile}} {
		if f.path != "" && (!strings.HasPrefix(f.path, "/") || strings.ContainsAny(f.path, "\x00\r\n")) {
			v.add(p+"."+f.name, "%q: want an absolute path on the proxy's host", f.path)
		}
	}
	if len(t.ServerName) > 253 || strings.ContainsAny(t.ServerName, "/ \t\r\n") {
		v.add(p+".serverName", "%q is not a host name", t.ServerName)
	}
}
