// Package tlsutil is Switchyard's TLS: server configurations from
// certificate files that are reloaded when the files change (no restart),
// optional client-certificate verification against a CA (mTLS), the peer's
// identity from its certificate (a SPIFFE-style URI SAN, else the subject's
// common name), client configurations for dialers, and a small development
// CA (devca.go) behind `switchyard certs`.
//
// Reloading is checked at handshake time, not by a file watcher: each
// handshake (at most once per CheckInterval, default 1 s) stats the
// certificate, key and CA files and reloads them when one's inode, size or
// modification time changed. There is no goroutine to start or stop, no
// dependency on inotify (which misses Kubernetes' atomic symlink swap of a
// mounted secret unless the watch is on the folder), and a listener that
// takes no connections does no work. A rewrite that cannot be loaded (a
// half-written file, a key that does not match the certificate) keeps the
// pair already served, is logged and counted, and is retried at the next
// check: a bad rotation never takes a listener down.
package tlsutil

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// DefaultCheckInterval is how often, at most, a handshake stats the files.
const DefaultCheckInterval = time.Second

// Files names a certificate, its key, and optionally a CA bundle: for a
// server, the CA that client certificates must chain to (mTLS); for a
// client, the CA that the server's certificate must chain to.
type Files struct {
	Cert, Key string
	CA        string
}

// ServerOptions configure NewServer.
type ServerOptions struct {
	// Name labels the listener in logs and metrics ("backend-http").
	Name string
	// CheckInterval bounds how often the files are checked for changes
	// (0: DefaultCheckInterval; negative: at every handshake).
	CheckInterval time.Duration
	// Logger receives reload events; nil discards them.
	Logger *slog.Logger
	// Metrics, if set, get the serving certificate's notAfter and the
	// reload counts.
	Metrics *Metrics
}

// Metrics are the TLS metrics of a process, labelled by listener.
type Metrics struct {
	// switchyard_tls_certificate_not_after_timestamp_seconds{listener}:
	// the notAfter of the certificate served now (alert on its distance
	// from time()).
	NotAfter *prometheus.GaugeVec
	// switchyard_tls_certificate_reloads_total{listener,result}: result
	// ok or error (the old pair kept).
	Reloads *prometheus.CounterVec
}

// NewMetrics creates the TLS metrics and registers them with reg (nil: not
// registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		NotAfter: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "switchyard_tls_certificate_not_after_timestamp_seconds",
			Help: "Expiry (notAfter, Unix seconds) of the certificate a TLS listener serves now.",
		}, []string{"listener"}),
		Reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchyard_tls_certificate_reloads_total",
			Help: "Reloads of a TLS listener's certificate files after they changed, by result (error: the files could not be loaded and the previous certificate is still served).",
		}, []string{"listener", "result"}),
	}
	if reg != nil {
		reg.MustRegister(m.NotAfter, m.Reloads)
	}
	return m
}

// loaded is one load of the files.
type loaded struct {
	cert *tls.Certificate
	leaf *x509.Certificate
	pool *x509.CertPool // nil without a CA file
}

// source holds the files' current contents and reloads them when they
// change (at most once per interval). Safe for concurrent use.
type source struct {
	files    Files
	interval time.Duration
	log      *slog.Logger
	onLoad   func(*loaded)
	onError  func(error)

	mu        sync.Mutex
	cur       *loaded
	stats     [3]os.FileInfo // cert, key, CA as last loaded
	lastCheck time.Time
}

func newSource(f Files, interval time.Duration, log *slog.Logger) (*source, error) {
	if f.Cert == "" || f.Key == "" {
		if f.Cert != "" || f.Key != "" {
			return nil, fmt.Errorf("tls: a certificate needs both files (cert %q, key %q)", f.Cert, f.Key)
		}
	}
	if interval == 0 {
		interval = DefaultCheckInterval
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &source{files: f, interval: interval, log: log}
	l, st, err := s.load()
	if err != nil {
		return nil, err
	}
	s.cur, s.stats, s.lastCheck = l, st, time.Now()
	return s, nil
}

func (s *source) paths() [3]string { return [3]string{s.files.Cert, s.files.Key, s.files.CA} }

// statAll stats the files that are set.
func (s *source) statAll() ([3]os.FileInfo, error) {
	var st [3]os.FileInfo
	for i, p := range s.paths() {
		if p == "" {
			continue
		}
		fi, err := os.Stat(p)
		if err != nil {
			return st, fmt.Errorf("tls: %w", err)
		}
		st[i] = fi
	}
	return st, nil
}

// load reads the files (stats first, so a change during the read is seen
// again at the next check).
func (s *source) load() (*loaded, [3]os.FileInfo, error) {
	st, err := s.statAll()
	if err != nil {
		return nil, st, err
	}
	l := &loaded{}
	if s.files.Cert != "" {
		c, err := tls.LoadX509KeyPair(s.files.Cert, s.files.Key)
		if err != nil {
			return nil, st, fmt.Errorf("tls: load certificate %s and key %s: %w", s.files.Cert, s.files.Key, err)
		}
		l.cert, l.leaf = &c, c.Leaf
	}
	if s.files.CA != "" {
		pem, err := os.ReadFile(s.files.CA)
		if err != nil {
			return nil, st, fmt.Errorf("tls: %w", err)
		}
		l.pool = x509.NewCertPool()
		if !l.pool.AppendCertsFromPEM(pem) {
			return nil, st, fmt.Errorf("tls: CA file %s holds no PEM certificate", s.files.CA)
		}
	}
	return l, st, nil
}

// changed reports whether any file differs from the one last loaded.
func changed(old, now [3]os.FileInfo) bool {
	for i := range old {
		a, b := old[i], now[i]
		if (a == nil) != (b == nil) {
			return true
		}
		if a != nil && (!os.SameFile(a, b) || !a.ModTime().Equal(b.ModTime()) || a.Size() != b.Size()) {
			return true
		}
	}
	return false
}

// get returns the current contents, reloading them first if the files
// changed and the interval since the last check has passed.
func (s *source) get(now time.Time) *loaded {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.interval > 0 && now.Sub(s.lastCheck) < s.interval {
		return s.cur
	}
	s.lastCheck = now
	st, err := s.statAll()
	if err == nil && !changed(s.stats, st) {
		return s.cur
	}
	l, st, err := s.load()
	if err != nil {
		s.log.Warn("tls: certificate files changed but cannot be loaded; still serving the previous ones", "err", err.Error())
		if s.onError != nil {
			s.onError(err)
		}
		return s.cur
	}
	s.cur, s.stats = l, st
	s.log.Info("tls: certificate files reloaded", "cert", s.files.Cert, "not_after", notAfter(l))
	if s.onLoad != nil {
		s.onLoad(l)
	}
	return l
}

func notAfter(l *loaded) time.Time {
	if l.leaf == nil {
		return time.Time{}
	}
	return l.leaf.NotAfter
}

// Server is a listener's TLS: its configurations (Config) serve the
// certificate files' current contents.
type Server struct {
	src  *source
	name string
	mtls bool
}

// NewServer loads the files (Cert and Key required; CA, if set, turns on
// client-certificate verification: a client without a certificate chaining
// to it is refused in the handshake). Errors name the file.
func NewServer(f Files, opts ServerOptions) (*Server, error) {
	if f.Cert == "" || f.Key == "" {
		return nil, fmt.Errorf("tls: a server needs a certificate and a key (cert %q, key %q)", f.Cert, f.Key)
	}
	src, err := newSource(f, opts.CheckInterval, opts.Logger)
	if err != nil {
		return nil, err
	}
	s := &Server{src: src, name: opts.Name, mtls: f.CA != ""}
	if m := opts.Metrics; m != nil {
		src.onLoad = func(l *loaded) {
			m.Reloads.WithLabelValues(s.name, "ok").Inc()
			m.NotAfter.WithLabelValues(s.name).Set(float64(notAfter(l).Unix()))
		}
		src.onError = func(error) { m.Reloads.WithLabelValues(s.name, "error").Inc() }
		m.NotAfter.WithLabelValues(s.name).Set(float64(notAfter(src.cur).Unix()))
		m.Reloads.WithLabelValues(s.name, "ok")
		m.Reloads.WithLabelValues(s.name, "error")
	}
	return s, nil
}

// MutualTLS reports whether client certificates are required.
func (s *Server) MutualTLS() bool { return s.mtls }

// NotAfter is the expiry of the certificate served now.
func (s *Server) NotAfter() time.Time { return notAfter(s.src.get(time.Now())) }

// Config is a listener's configuration: each handshake gets the files'
// current contents. nextProtos are the ALPN protocols offered ("h2" for
// gRPC, "http/1.1" for REST).
func (s *Server) Config(nextProtos ...string) *tls.Config {
	sc := &serverConfig{s: s, protos: nextProtos}
	return &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: nextProtos, GetConfigForClient: sc.forClient}
}

// serverConfig caches the configuration built from one load of the files.
type serverConfig struct {
	s      *Server
	protos []string
	mu     sync.Mutex
	from   *loaded
	cfg    *tls.Config
}

func (sc *serverConfig) forClient(*tls.ClientHelloInfo) (*tls.Config, error) {
	l := sc.s.src.get(time.Now())
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.from != l {
		c := &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: sc.protos, Certificates: []tls.Certificate{*l.cert}}
		if l.pool != nil {
			c.ClientCAs, c.ClientAuth = l.pool, tls.RequireAndVerifyClientCert
		}
		sc.cfg, sc.from = c, l
	}
	return sc.cfg, nil
}

// ClientOptions configure NewClientConfig.
type ClientOptions struct {
	// ServerName overrides the name the server's certificate is checked
	// against (default: the host dialled).
	ServerName string
	// CheckInterval as in ServerOptions, for the client certificate.
	CheckInterval time.Duration
	Logger        *slog.Logger
}

// NewClientConfig is a dialer's configuration: the server's certificate
// must chain to f.CA (the system roots when empty), and f.Cert/f.Key, when
// set, are presented as the client certificate (mTLS), reloaded when the
// files change. The CA is read once.
func NewClientConfig(f Files, opts ClientOptions) (*tls.Config, error) {
	src, err := newSource(f, opts.CheckInterval, opts.Logger)
	if err != nil {
		return nil, err
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: opts.ServerName, RootCAs: src.cur.pool}
	if f.Cert != "" {
		c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return src.get(time.Now()).cert, nil
		}
	}
	return c, nil
}
