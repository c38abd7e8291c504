#!/usr/bin/env bash
# The gRPC path, side by side in one sitting: the demo backend's gRPC port
# straight (direct), through nginx grpc_pass (keepalive_requests raised: its
# default of 1000 drains the connection and fails requests in flight), and
# through the Switchyard proxy (a plain route to a gRPC version; and,
# HTTP_VERSION=1, to an http-protocol version: the gRPC → binary REST
# path). Fixed rate RATE (default 1000 rps) for DURATION (default 10s),
# ROUNDS rounds (default 3) in alternating order; syctl loadtest's gRPC
# client over one HTTP/2 connection pool, 64 workers. Reports per target:
# p50 / p99 (service time), the proxy's CPU per request (utime+stime of
# its process from /proc; nginx: its one worker) and its read and write
# system calls per request (/proc/PID/io syscr + syscw).
#
#   bench/proxy/grpc.sh
#   RATE=1000 DURATION=10s ROUNDS=3 bench/proxy/grpc.sh
#
# Options: HTTP_VERSION=1 adds the gRPC → http-protocol version target;
# GZIP=1 adds nginx and the proxy with the client's gRPC gzip compression
# (nginx-gzip, proxy-gzip); BASE_BIN=path/to/switchyard adds a second proxy
# built from another commit (proxy-base, same routes and backend: a
# before/after in one sitting), and EXTRA_BINS="name=path ..." more of them
# (proxy-NAME, and proxy-NAME-to-http, proxy-NAME-gzip in TARGETS);
# TARGETS="nginx proxy ..." picks the targets; PROFILE=file writes a CPU
# profile of the proxy (its admin /debug/pprof/profile) taken during its
# first round. The last lines are each target's medians over the rounds.
#
# Everything listens on 127.0.0.1; every run is bounded in time and count.
set -euo pipefail
RATE=${RATE:-1000}
DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
source "$(dirname "$0")/stack.sh"
build_stack ./cmd/syctl
start_backend
start_controlplane
put_model recommender <<JSON
{"apiVersion":"switchyard.dev/v1","kind":"Model","metadata":{"name":"recommender"},
 "spec":{"versions":[{"name":"v1","endpoints":["127.0.0.1:$BE_GRPC"],"protocol":"grpc","backendModel":"recommender-v1"},
                     {"name":"h1","endpoints":["127.0.0.1:$BE_HTTP"],"backendModel":"recommender-v1"}],
         "traffic":{"weights":{"v1":100}},"timeout":"2s"}}
JSON
PX_HTTP=$(freeport); PX_GRPC=$(freeport); PX_ADMIN=$(freeport)
"$TMP/switchyard" proxy --xds 127.0.0.1:$CP_XDS --http 127.0.0.1:$PX_HTTP --grpc 127.0.0.1:$PX_GRPC --admin 127.0.0.1:$PX_ADMIN \
  --node-id grpc-bench --shadow-process inline --log-level error 2>"$TMP/proxy.log" &
PX_PID=$!; PIDS+=($PX_PID)
waitok http://127.0.0.1:$PX_HTTP/v2/models/recommender/ready
declare -A XGRPC XPID
extras=()
[ -n "${BASE_BIN:-}" ] && extras+=("base=$BASE_BIN")
for nb in ${EXTRA_BINS:-}; do extras+=("$nb"); done
for nb in "${extras[@]}"; do
  name=${nb%%=*}; bin=${nb#*=}
  xh=$(freeport); XGRPC[$name]=$(freeport); xa=$(freeport)
  "$bin" proxy --xds 127.0.0.1:$CP_XDS --http 127.0.0.1:$xh --grpc 127.0.0.1:${XGRPC[$name]} --admin 127.0.0.1:$xa \
    --node-id "grpc-bench-$name" --shadow-process inline --log-level error 2>"$TMP/proxy-$name.log" &
  XPID[$name]=$!; PIDS+=($!)
  waitok http://127.0.0.1:$xh/v2/models/recommender/ready
done

NG_PORT=$(freeport)
{ nginx_head 1; cat <<CONF
  upstream backend { server 127.0.0.1:$BE_GRPC; keepalive 64; keepalive_requests 100000000; }
  server {
    listen 127.0.0.1:$NG_PORT http2;
    keepalive_requests 100000000;
    location / { grpc_pass grpc://backend; }
  }
}
CONF
} >"$TMP/nginx/nginx.conf"
nginx -c "$TMP/nginx/nginx.conf" -p "$TMP/nginx"
for _ in $(seq 100); do [ -s "$TMP/nginx/nginx.pid" ] && break; sleep 0.05; done
NG_WORKER=$(pgrep -P "$(cat "$TMP/nginx/nginx.pid")" | head -1)

run() { # name target model version pid [loadtest flags...]
  local extra=()
  [ -n "$4" ] && extra=(--model-version "$4")
  extra+=("${@:6}")
  local prof=""
  if [ -n "${PROFILE:-}" ] && [ "$5" = "$PX_PID" ] && [ ! -e "$PROFILE" ]; then
    local secs=${DURATION%s}; secs=$((secs > 3 ? secs - 2 : 1))
    curl -fsS -o "$PROFILE" "http://127.0.0.1:$PX_ADMIN/debug/pprof/profile?seconds=$secs" & prof=$!
  fi
  local io0; io0=$(syscalls "$5")
  "$TMP/syctl" loadtest --target "$2" --protocol grpc --model "$3" "${extra[@]}" --rate "$RATE" --duration "$DURATION" \
    --workers 64 --timeout 2s --backend-pid "$5" --quiet -o json >"$TMP/$1.json" || true
  local io1; io1=$(syscalls "$5")
  [ -n "$prof" ] && wait "$prof"
  echo "$((io1 - io0))" >"$TMP/$1.sys"
  python3 - "$TMP/$1.json" "$1" "$((io1 - io0))" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); run = r["run"]
cpu = (r.get("process") or {}).get("cpu_seconds", 0)
ok = run["ok"]
print(f'{sys.argv[2]} ok={ok} errors={sum((run.get("errors") or {}).values())} p50_ms={run["service"]["p50_ns"]/1e6:.3f} p99_ms={run["service"]["p99_ns"]/1e6:.3f} cpu_us_per_req={cpu/max(ok,1)*1e6:.1f} rw_syscalls_per_req={int(sys.argv[3])/max(ok,1):.2f}')
PY
}
# syscalls PID: the process's read and write system calls so far (/proc/PID/io).
syscalls() { awk '/^sysc[rw]:/ {n += $2} END {print n + 0}' "/proc/$1/io" 2>/dev/null || echo 0; }
targets=(direct nginx proxy)
for nb in "${extras[@]}"; do targets+=("proxy-${nb%%=*}"); done
[ "${HTTP_VERSION:-0}" = 1 ] && targets+=(proxy-to-http)
[ "${GZIP:-0}" = 1 ] && targets+=(nginx-gzip proxy-gzip)
[ -n "${TARGETS:-}" ] && read -r -a targets <<<"$TARGETS" # e.g. TARGETS="nginx proxy proxy-base"
echo "# $(date -u +%FT%TZ) $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg); RATE=$RATE DURATION=$DURATION"
for i in $(seq "$ROUNDS"); do
  order=("${targets[@]}")
  [ $((i % 2)) = 0 ] && order=($(printf '%s\n' "${targets[@]}" | tac))
  for t in "${order[@]}"; do
    case $t in
      direct) run "direct-$i" 127.0.0.1:$BE_GRPC recommender-v1 "" "$BE_PID" ;;
      nginx) run "nginx-$i" 127.0.0.1:$NG_PORT recommender-v1 "" "$NG_WORKER" ;;
      proxy) run "proxy-$i" 127.0.0.1:$PX_GRPC recommender "" "$PX_PID" ;;
      proxy-to-http) run "proxy-to-http-$i" 127.0.0.1:$PX_GRPC recommender h1 "$PX_PID" ;;
      nginx-gzip) run "nginx-gzip-$i" 127.0.0.1:$NG_PORT recommender-v1 "" "$NG_WORKER" --grpc-compression gzip ;;
      proxy-gzip) run "proxy-gzip-$i" 127.0.0.1:$PX_GRPC recommender "" "$PX_PID" --grpc-compression gzip ;;
      proxy-*) # proxy-NAME, proxy-NAME-to-http, proxy-NAME-gzip: an EXTRA_BINS proxy
        x=${t#proxy-}; x=${x%-to-http}; x=${x%-gzip}; ver=""; more=()
        [ -n "${XPID[$x]:-}" ] || { echo "unknown target $t" >&2; exit 2; }
        case $t in *-to-http) ver=h1 ;; *-gzip) more=(--grpc-compression gzip) ;; esac
        run "$t-$i" 127.0.0.1:${XGRPC[$x]} recommender "$ver" "${XPID[$x]}" "${more[@]}" ;;
    esac
  done
done
python3 - "$TMP" "${targets[@]}" <<'PY'
import json, statistics, sys
tmp, targets = sys.argv[1], sys.argv[2:]
print("# medians over rounds: target p50_ms p99_ms cpu_us_per_req (range) rw_syscalls_per_req")
for t in targets:
    rows = []
    i = 1
    while True:
        try:
            r = json.load(open(f"{tmp}/{t}-{i}.json"))
        except (OSError, ValueError):
            break
        run = r["run"]; ok = max(run["ok"], 1)
        try:
            sc = int(open(f"{tmp}/{t}-{i}.sys").read()) / ok
        except (OSError, ValueError):
            sc = 0
        rows.append((run["service"]["p50_ns"] / 1e6, run["service"]["p99_ns"] / 1e6, (r.get("process") or {}).get("cpu_seconds", 0) / ok * 1e6, sc))
        i += 1
    if rows:
        cpu = [r[2] for r in rows]
        print(f"{t} p50_ms={statistics.median(r[0] for r in rows):.3f} p99_ms={statistics.median(r[1] for r in rows):.3f} cpu_us_per_req={statistics.median(cpu):.1f} ({min(cpu):.0f}-{max(cpu):.0f}) rw_syscalls_per_req={statistics.median(r[3] for r in rows):.2f}")
PY
