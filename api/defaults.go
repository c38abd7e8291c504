package api

import "time"

// Default values filled by Defaults.
const (
	DefaultTimeout             = Duration(time.Second)
	DefaultRetryBudgetPercent  = 20
	DefaultShadowQueueSize     = 1024
	DefaultShadowWorkers       = 4
	DefaultTopK                = 10
	DefaultAbsTol              = 1e-5
	DefaultRelTol              = 1e-3
	DefaultCanaryStepDuration  = Duration(5 * time.Minute)
	DefaultCanaryMinRequests   = 500
	DefaultCanaryMaxErrorRate  = 0.01
	DefaultCanaryMaxP99Ratio   = 1.25
	DefaultCanaryMaxNaNRate    = 0.001
	DefaultBreakerFailures     = 5
	DefaultBreakerOpenFor      = Duration(10 * time.Second)
	DefaultCacheTTL            = Duration(30 * time.Second)
	DefaultCacheMaxEntries     = 10000
	DefaultCacheMaxBytes       = 64 << 20
	DefaultCanaryConsecutive   = 3
	defaultSingleVersionWeight = 100
)

// DefaultCanarySteps is the default ramp.
func DefaultCanarySteps() []int { return []int{20, 50, 80, 100} }

// Defaults fills unset fields in place with their defaults. It does not
// validate; call Validate afterwards. Applying Defaults twice changes nothing.
func (m *Model) Defaults() {
	if m.APIVersion == "" {
		m.APIVersion = APIVersion
	}
	if m.Kind == "" {
		m.Kind = KindModel
	}
	s := &m.Spec
	for i := range s.Versions {
		v := &s.Versions[i]
		if v.Protocol == "" {
			v.Protocol = ProtocolHTTP
		}
		if v.BackendModel == "" {
			v.BackendModel = m.Metadata.Name
		}
	}
	if len(s.Traffic.Weights) == 0 && len(s.Versions) == 1 {
		s.Traffic.Weights = map[string]int{s.Versions[0].Name: defaultSingleVersionWeight}
	}
	if s.Traffic.OverrideHeader == "" {
		s.Traffic.OverrideHeader = DefaultOverrideHeader
	}
	if s.Timeout == 0 {
		s.Timeout = DefaultTimeout
	}
	if r := s.Retries; r != nil && r.BudgetPercent == 0 {
		r.BudgetPercent = DefaultRetryBudgetPercent
	}
	if sh := s.Shadow; sh != nil {
		if sh.Sampling == "" {
			sh.Sampling = SamplingRandom
		}
		if sh.QueueSize == 0 {
			sh.QueueSize = DefaultShadowQueueSize
		}
		if sh.Workers == 0 {
			sh.Workers = DefaultShadowWorkers
		}
		if sh.Timeout == 0 {
			sh.Timeout = s.Timeout
		}
		c := &sh.Compare
		if c.Mode == "" {
			c.Mode = CompareNumeric
		}
		if c.Mode == CompareTopK && c.K == 0 {
			c.K = DefaultTopK
		}
		if c.Mode == CompareNumeric {
			if c.AbsTol == 0 {
				c.AbsTol = DefaultAbsTol
			}
			if c.RelTol == 0 {
				c.RelTol = DefaultRelTol
			}
		}
	}
	if c := s.Canary; c != nil {
		if len(c.Steps) == 0 {
			c.Steps = DefaultCanarySteps()
		}
		if c.StepDuration == 0 {
			c.StepDuration = DefaultCanaryStepDuration
		}
		if c.MinRequests == 0 {
			c.MinRequests = DefaultCanaryMinRequests
		}
		if c.MaxErrorRate == 0 {
			c.MaxErrorRate = DefaultCanaryMaxErrorRate
		}
		if c.MaxP99Ratio == 0 {
			c.MaxP99Ratio = DefaultCanaryMaxP99Ratio
		}
		if c.MaxNaNRate == 0 {
			c.MaxNaNRate = DefaultCanaryMaxNaNRate
		}
		if c.ConsecutiveFailures == 0 {
			c.ConsecutiveFailures = DefaultCanaryConsecutive
		}
	}
	if f := s.Fallback; f != nil {
		if f.BackupTimeout == 0 && f.Backup != "" {
			f.BackupTimeout = s.Timeout
		}
		if f.Breaker.ConsecutiveFailures == 0 {
			f.Breaker.ConsecutiveFailures = DefaultBreakerFailures
		}
		if f.Breaker.OpenFor == 0 {
			f.Breaker.OpenFor = DefaultBreakerOpenFor
		}
	}
	if c := s.Cache; c != nil {
		if c.Enabled == nil {
			t := true
			c.Enabled = &t
		}
		if c.Coalesce == nil {
			t := true
			c.Coalesce = &t
		}
		if c.TTL == 0 {
			c.TTL = DefaultCacheTTL
		}
		if c.MaxEntries == 0 {
			c.MaxEntries = DefaultCacheMaxEntries
		}
		if c.MaxBytes == 0 {
			c.MaxBytes = DefaultCacheMaxBytes
		}
	}
}
