package fallback

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/golang-lru/v2/expirable"
	"github.com/prometheus/client_golang/prometheus"
)

// Entry is one cached answer: the encoded response exactly as the client
// got it, so a hit returns the same bytes. The cache keeps the slice; the
// caller must not modify it after Add, nor modify what Get returns.
type Entry struct {
	Body        []byte
	ContentType string
	// HeaderLen is the Inference-Header-Content-Length of a binary-extension
	// REST answer (0: plain JSON).
	HeaderLen int
	// Value holds a decoded form for transports that do not send bytes
	// (e.g. a *inferencepb.ModelInferResponse for gRPC answers); shared by
	// every hit, never modified. ValueSize is what it costs, counted against
	// MaxBytes.
	Value     any
	ValueSize int
}

// entryOverhead approximates the bytes a cache entry costs besides its body
// (key strings, list element, map slot).
const entryOverhead = 160

func (e Entry) size(k Key) int64 {
	return int64(len(e.Body)+len(e.ContentType)+e.ValueSize+len(k.Model)+len(k.Version)+len(k.Format)) + entryOverhead
}

// CacheConfig bounds a cache (plain values; Defaults / LastGoodDefaults
// fill zero fields).
type CacheConfig struct {
	MaxEntries int           // most entries held
	MaxBytes   int64         // most bytes held (bodies plus a fixed overhead per entry)
	TTL        time.Duration // entry lifetime
}

// Defaults fills zero fields for the serving prediction cache: 10000
// entries, 64 MiB, 30 s.
func (c CacheConfig) Defaults() CacheConfig {
	if c.MaxEntries == 0 {
		c.MaxEntries = 10000
	}
	if c.MaxBytes == 0 {
		c.MaxBytes = 64 << 20
	}
	if c.TTL == 0 {
		c.TTL = 30 * time.Second
	}
	return c
}

// LastGoodDefaults fills zero fields for the LastGood store of the fallback
// chain's cache step: 100000 entries, 256 MiB, 1 h.
func (c CacheConfig) LastGoodDefaults() CacheConfig {
	if c.MaxEntries == 0 {
		c.MaxEntries = 100000
	}
	if c.MaxBytes == 0 {
		c.MaxBytes = 256 << 20
	}
	if c.TTL == 0 {
		c.TTL = time.Hour
	}
	return c
}

// Validate names the first bad field.
func (c CacheConfig) Validate() error {
	switch {
	case c.MaxEntries < 0:
		return fmt.Errorf("cache.maxEntries must be >= 0, got %d", c.MaxEntries)
	case c.MaxBytes < 0:
		return fmt.Errorf("cache.maxBytes must be >= 0, got %d", c.MaxBytes)
	case c.TTL < 0:
		return fmt.Errorf("cache.ttl must be >= 0, got %s", c.TTL)
	}
	return nil
}

type cached struct {
	Entry
	size     int64
	expires  time.Time
	replaced atomic.Bool
}

// Cache is a prediction cache bounded by entries and bytes, with a TTL,
// built on golang-lru/v2's expirable LRU. Safe for concurrent use.
//
// Expiry is checked when an entry is read (Get, Contains) and on Add for
// the least recently used entries, rather than by golang-lru's cleaner
// goroutine: that goroutine is never stopped (upstream, v2.0.7) and would
// leak one goroutine, and the cache it holds, per cache ever built. An
// expired entry nobody reads again still counts against the bounds until
// it is evicted or swept. Close frees every entry.
type Cache struct {
	cfg     CacheConfig
	lru     *expirable.LRU[Key, *cached]
	addMu   sync.Mutex
	bytes   atomic.Int64
	entries atomic.Int64

	hits, misses, evictions, expired prometheus.Counter
	bytesG, entriesG                 prometheus.Gauge
}

// NewCache builds a cache for model; name labels its metrics ("serving" or
// "last_good"). m may be nil. cfg zero fields take Defaults.
func NewCache(model, name string, cfg CacheConfig, m *Metrics) *Cache {
	cfg = cfg.Defaults()
	c := &Cache{cfg: cfg}
	if m != nil {
		c.hits = m.cacheHits.WithLabelValues(model, name)
		c.misses = m.cacheMisses.WithLabelValues(model, name)
		c.evictions = m.cacheEvictions.WithLabelValues(model, name)
		c.expired = m.cacheExpired.WithLabelValues(model, name)
		c.bytesG = m.cacheBytes.WithLabelValues(model, name)
		c.entriesG = m.cacheEntries.WithLabelValues(model, name)
	}
	// TTL 0: no cleaner goroutine; expiry is ours (cached.expires).
	c.lru = expirable.NewLRU[Key, *cached](cfg.MaxEntries, c.onEvict, 0)
	return c
}

// NewLastGood builds the longer-lived store the fallback chain's cache step
// reads: cfg zero fields take LastGoodDefaults. It is a Cache labelled
// "last_good".
func NewLastGood(model string, cfg CacheConfig, m *Metrics) *Cache {
	return NewCache(model, "last_good", cfg.LastGoodDefaults(), m)
}

// onEvict runs under the LRU's lock for every entry leaving the cache.
func (c *Cache) onEvict(_ Key, v *cached) {
	c.setSize(c.bytes.Add(-v.size), c.entries.Add(-1))
	switch {
	case v.replaced.Load():
	case !time.Now().Before(v.expires):
		inc(c.expired)
	default:
		inc(c.evictions)
	}
}

func (c *Cache) setSize(b, n int64) {
	if c.bytesG != nil {
		c.bytesG.Set(float64(b))
		c.entriesG.Set(float64(n))
	}
}

func inc(c prometheus.Counter) {
	if c != nil {
		c.Inc()
	}
}

// Get returns the live entry for k.
func (c *Cache) Get(k Key) (Entry, bool) {
	v, ok := c.lru.Get(k)
	if ok && !time.Now().Before(v.expires) {
		c.lru.Remove(k) // counted as expired by onEvict
		ok = false
	}
	if !ok {
		inc(c.misses)
		return Entry{}, false
	}
	inc(c.hits)
	return v.Entry, true
}

// Contains reports whether a live entry for k is held, without counting a
// hit or miss or refreshing its recency (for fallback planning).
func (c *Cache) Contains(k Key) bool {
	v, ok := c.lru.Peek(k)
	return ok && time.Now().Before(v.expires)
}

// Add stores e under k, replacing an older entry (and restarting its TTL),
// then evicts least recently used entries until the byte bound holds. An
// entry larger than MaxBytes is not stored; Add reports whether e was.
func (c *Cache) Add(k Key, e Entry) bool {
	v := &cached{Entry: e, size: e.size(k), expires: time.Now().Add(c.cfg.TTL)}
	if v.size > c.cfg.MaxBytes {
		return false
	}
	c.addMu.Lock()
	defer c.addMu.Unlock()
	if old, ok := c.lru.Peek(k); ok {
		old.replaced.Store(true)
	}
	c.lru.Remove(k)
	c.setSize(c.bytes.Add(v.size), c.entries.Add(1))
	c.lru.Add(k, v)
	// Sweep a few expired entries from the cold end.
	now := time.Now()
	for range 2 {
		oldKey, old, found := c.lru.GetOldest()
		if !found || now.Before(old.expires) {
			break
		}
		c.lru.Remove(oldKey)
	}
	for c.bytes.Load() > c.cfg.MaxBytes {
		if _, _, ok := c.lru.RemoveOldest(); !ok {
			break
		}
	}
	return true
}

// Len is the number of entries held (expired ones not yet removed included).
func (c *Cache) Len() int { return int(c.entries.Load()) }

// Bytes is the bytes held, as counted against MaxBytes.
func (c *Cache) Bytes() int64 { return c.bytes.Load() }

// Config is the cache's configuration (defaults applied).
func (c *Cache) Config() CacheConfig { return c.cfg }

// Close drops every entry (without counting evictions). The cache stays
// usable but should be discarded.
func (c *Cache) Close() {
	c.addMu.Lock()
	defer c.addMu.Unlock()
	for _, k := range c.lru.Keys() {
		if v, ok := c.lru.Peek(k); ok {
			v.replaced.Store(true)
		}
	}
	c.lru.Purge()
}
