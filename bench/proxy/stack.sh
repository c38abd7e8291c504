# Shared by the bench/proxy scripts (sourced): a temporary folder cleaned
# up at exit with every process started, free ports, readiness waits, and
# the stack's parts on loopback. (bench/proxy/ab.sh copies this file and
# run.sh into the older commit it measures.)
#
#   source "$(dirname "$0")/stack.sh"   # sets ROOT, TMP; cd "$ROOT"
#   build_stack [./pkg ...]             # $TMP/switchyard (+ $TMP/<pkg base>), demo models in $TMP/models
#   start_backend [REPO [MODEL]]        # sets BE_HTTP, BE_GRPC, BE_PID (ON_REST: a command prefix, e.g. taskset)
#   start_controlplane                  # sets CP_API, CP_XDS
#   put_model NAME <<JSON ... JSON      # PUT a Model document to the control plane
#   nginx_head WORKERS >"$TMP/nginx/nginx.conf"  # nginx.conf up to inside "http {"
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TMP=$(mktemp -d "/tmp/switchyard-$(basename "$0" .sh).XXXXXX")
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ -f "$TMP/nginx/nginx.pid" ]; then kill "$(cat "$TMP/nginx/nginx.pid")" 2>/dev/null || true; fi
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT
export SWITCHYARD_ORT_LIB=${SWITCHYARD_ORT_LIB:-$ROOT/third_party/onnxruntime/libonnxruntime.so.1}
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
waitok() { for _ in $(seq 400); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.05; done; echo "not ready: $1" >&2; return 1; }
declare -p ON_REST >/dev/null 2>&1 || ON_REST=()
build_stack() {
  go build -o "$TMP/switchyard" ./cmd/switchyard
  local pkg
  for pkg in "$@"; do go build -o "$TMP/$(basename "$pkg")" "$pkg"; done
  "$TMP/switchyard" demo-models --out "$TMP/models" >/dev/null
}
start_backend() {
  BE_HTTP=$(freeport); BE_GRPC=$(freeport)
  "${ON_REST[@]}" "$TMP/switchyard" backend --model-repository "${1:-$TMP/models}" --http 127.0.0.1:$BE_HTTP --grpc 127.0.0.1:$BE_GRPC --log-level warn 2>"$TMP/backend.log" &
  BE_PID=$!; PIDS+=($BE_PID)
  waitok "http://127.0.0.1:$BE_HTTP/v2/models/${2:-recommender-v1}/ready"
}
put_model() { curl -fsS -X PUT -H 'Content-Type: application/json' "http://127.0.0.1:$CP_API/v1/models/$1" -d @- >/dev/null; }
mkdir -p "$TMP/nginx/logs" # for nginx_head's configuration
nginx_head() {
  cat <<CONF
worker_processes ${1:-1};
error_log $TMP/nginx/logs/error.log warn;
pid $TMP/nginx/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $TMP/nginx/body;
  proxy_temp_path $TMP/nginx/proxy;
CONF
}
start_controlplane() {
  CP_API=$(freeport); CP_XDS=$(freeport)
  "${ON_REST[@]}" "$TMP/switchyard" controlplane --state "$TMP/cp.db" --api 127.0.0.1:$CP_API --xds 127.0.0.1:$CP_XDS --insecure-loopback-no-auth --log-level warn 2>"$TMP/cp.log" &
  PIDS+=($!)
  waitok http://127.0.0.1:$CP_API/v1/models
}
cd "$ROOT"
