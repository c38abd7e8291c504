# Shared by bench/proxy/{bodies,shed,grpc}.sh (sourced): a temporary
# folder cleaned up at exit with every process started, free ports,
# readiness waits, and a control plane on loopback. (run.sh keeps its own
# copy: bench/proxy/ab.sh runs it against older commits.)
#
#   source "$(dirname "$0")/stack.sh"   # sets ROOT, TMP; cd "$ROOT"
#   start_controlplane                  # sets CP_API, CP_XDS
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
start_controlplane() {
  CP_API=$(freeport); CP_XDS=$(freeport)
  "$TMP/switchyard" controlplane --state "$TMP/cp.db" --api 127.0.0.1:$CP_API --xds 127.0.0.1:$CP_XDS --insecure-loopback-no-auth --log-level warn 2>"$TMP/cp.log" &
  PIDS+=($!)
  waitok http://127.0.0.1:$CP_API/v1/models
}
cd "$ROOT"
