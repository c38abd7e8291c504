package compare

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// The peers forward the virtual path /v2/models/recommender/infer to the
// backend's recommender-v1, as the Switchyard route does, over keep-alive
// upstream connections, with access logging off.

// NginxConfig is nginx.conf for a reverse proxy on 127.0.0.1:port to the
// backend at backendAddr (pure).
func NginxConfig(dir string, port int, backendAddr string, workers int) string {
	return fmt.Sprintf(`worker_processes %d;
error_log %[2]s/error.log warn;
pid %[2]s/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path %[2]s/body;
  proxy_temp_path %[2]s/proxy;
  upstream backend { server %[3]s; keepalive 128; }
  server {
    listen 127.0.0.1:%[4]d;
    location = /v2/models/recommender/infer {
      proxy_pass http://backend/v2/models/recommender-v1/infer;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
    location = /ready { return 200 "ok\n"; }
  }
}
`, workers, dir, backendAddr, port)
}

// HAProxyConfig is haproxy.cfg for the same forwarding (pure).
func HAProxyConfig(port int, backendAddr string, threads int) string {
	return fmt.Sprintf(`global
  nbthread %d
  maxconn 8192
defaults
  mode http
  option http-keep-alive
  http-reuse always
  timeout connect 2s
  timeout client 30s
  timeout server 30s
frontend fe
  bind 127.0.0.1:%d
  monitor-uri /ready
  default_backend be
backend be
  http-request set-path /v2/models/recommender-v1/infer if { path /v2/models/recommender/infer }
  server b1 %s maxconn 512
`, threads, port, backendAddr)
}

func startNginx(bin, work string, port int, backendAddr string, workers int) (*child, error) {
	dir := filepath.Join(work, "nginx")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, []byte(NginxConfig(dir, port, backendAddr, workers)), 0o644); err != nil {
		return nil, err
	}
	return startChild(work, "nginx", bin, "-p", dir, "-c", conf, "-e", filepath.Join(dir, "error.log"), "-g", "daemon off;")
}

func startHAProxy(bin, work string, port int, backendAddr string, threads int) (*child, error) {
	conf := filepath.Join(work, "haproxy.cfg")
	if err := os.WriteFile(conf, []byte(HAProxyConfig(port, backendAddr, threads)), 0o644); err != nil {
		return nil, err
	}
	return startChild(work, "haproxy", bin, "-db", "-f", conf)
}

// PeerVersion is the first line of `bin -v` (nginx writes it on stderr).
func PeerVersion(bin string) string {
	out, _ := exec.Command(bin, "-v").CombinedOutput()
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return line
}
