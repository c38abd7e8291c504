#!/usr/bin/env bash
# The cost of TLS on the proxy's REST listener, side by side in one
# sitting: the Switchyard proxy plaintext, with TLS (--tls-cert/--tls-key)
# and with mTLS (--tls-client-ca: the load generator presents a client
# certificate), and nginx the same three ways (ssl, ssl_verify_client), all
# in front of the same demo backend (plaintext upstream, keep-alive). The
# load generator keeps its connections alive (the handshakes fall in the
# warm-up), so the figures are the steady-state cost of encrypting and
# decrypting: fixed rate RATE (default 2000 rps) for DURATION (default
# 10s), ROUNDS rounds (default 3) in alternating order. Reports per
# target: p50 / p99 and CPU per request (utime+stime from /proc of the
# proxy's process; nginx: its one worker). Certificates: `switchyard certs
# dev` (ECDSA P-256). TLS 1.3 both sides (Go's and OpenSSL's defaults).
#
#   bench/proxy/tls.sh
#   RATE=2000 DURATION=10s ROUNDS=3 bench/proxy/tls.sh
#   BASE=18e4700 bench/proxy/tls.sh   # also TLS and mTLS proxies built from
#                                     # commit BASE (git archive), same rounds
#
# Everything listens on 127.0.0.1; every run is bounded in time and count.
set -euo pipefail
RATE=${RATE:-2000}
DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
CONC=${CONC:-64}
source "$(dirname "$0")/stack.sh"
build_stack ./bench/proxy/loadgen
"$TMP/switchyard" certs dev --dir "$TMP/certs" 2>/dev/null
C=$TMP/certs
start_backend
start_controlplane
put_model recommender <<JSON
{"apiVersion":"switchyard.dev/v1","kind":"Model","metadata":{"name":"recommender"},
 "spec":{"versions":[{"name":"v1","endpoints":["127.0.0.1:$BE_HTTP"],"backendModel":"recommender-v1"}],
         "traffic":{"weights":{"v1":100}},"timeout":"2s"}}
JSON

modes=(plain tls mtls)
if [ -n "${BASE:-}" ]; then
  mkdir -p "$TMP/base"
  git -C "$ROOT" archive "$BASE" | tar -x -C "$TMP/base"
  (cd "$TMP/base" && go build -o "$TMP/switchyard-base" ./cmd/switchyard)
  modes+=(tls-base mtls-base)
fi
declare -A PX_PID PX_PORT
for mode in "${modes[@]}"; do
  extra=()
  bin=$TMP/switchyard
  case $mode in
    tls|tls-base) extra=(--tls-cert "$C/proxy.crt" --tls-key "$C/proxy.key") ;;
    mtls|mtls-base) extra=(--tls-cert "$C/proxy.crt" --tls-key "$C/proxy.key" --tls-client-ca "$C/ca.crt") ;;
  esac
  case $mode in *-base) bin=$TMP/switchyard-base ;; esac
  port=$(freeport)
  "$bin" proxy --xds 127.0.0.1:$CP_XDS --http 127.0.0.1:$port --grpc "" --admin "" --node-id "tls-bench-$mode" \
    --shadow-process inline --log-level error "${extra[@]}" 2>"$TMP/proxy-$mode.log" &
  PX_PID[$mode]=$!; PIDS+=($!); PX_PORT[$mode]=$port
done
for mode in "${modes[@]}"; do
  case $mode in
    plain) waitok http://127.0.0.1:${PX_PORT[plain]}/v2/models/recommender/ready ;;
    *) for _ in $(seq 200); do
         curl -fsS -o /dev/null --cacert "$C/ca.crt" --cert "$C/syctl.crt" --key "$C/syctl.key" https://127.0.0.1:${PX_PORT[$mode]}/v2/models/recommender/ready 2>/dev/null && break
         sleep 0.05
       done ;;
  esac
done

NG_PLAIN=$(freeport); NG_TLS=$(freeport); NG_MTLS=$(freeport)
loc='location /v2/models/recommender/infer { proxy_pass http://backend/v2/models/recommender-v1/infer; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_buffering on; }'
{ nginx_head 1; cat <<CONF
  keepalive_requests 100000000;
  upstream backend { server 127.0.0.1:$BE_HTTP; keepalive 128; }
  ssl_certificate $C/proxy.crt;
  ssl_certificate_key $C/proxy.key;
  ssl_protocols TLSv1.2 TLSv1.3;
  server { listen 127.0.0.1:$NG_PLAIN; $loc }
  server { listen 127.0.0.1:$NG_TLS ssl; $loc }
  server { listen 127.0.0.1:$NG_MTLS ssl; ssl_client_certificate $C/ca.crt; ssl_verify_client on; $loc }
}
CONF
} >"$TMP/nginx/nginx.conf"
nginx -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf"
for _ in $(seq 100); do [ -s "$TMP/nginx/nginx.pid" ] && break; sleep 0.05; done
NG_WORKER=$(pgrep -P "$(cat "$TMP/nginx/nginx.pid")" | head -1)

run() { # name url pid [loadgen flags]
  local name=$1 url=$2 pid=$3; shift 3
  "$TMP/loadgen" -name "$name" -url "$url" -pid "$pid" -rate "$RATE" -duration "$DURATION" -concurrency "$CONC" "$@" >"$TMP/$name.json"
  python3 - "$TMP/$name.json" <<'PY'
import json, sys
r = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
cpu = r.get("cpu_seconds", 0)
print(f'{r["target"]:<14} rps={r["rps"]:.0f} errors={r["errors"]} p50_ms={r["p50_ms"]:.3f} p99_ms={r["p99_ms"]:.3f} cpu_us_per_req={cpu/max(r["requests"],1)*1e6:.1f}')
PY
}
targets=(proxy-plain proxy-tls proxy-mtls nginx-plain nginx-tls nginx-mtls)
[ -n "${BASE:-}" ] && targets+=(proxy-tls-base proxy-mtls-base)
echo "# $(date -u +%FT%TZ) $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg); RATE=$RATE DURATION=$DURATION CONC=$CONC"
for i in $(seq "$ROUNDS"); do
  order=("${targets[@]}")
  [ $((i % 2)) = 0 ] && order=($(printf '%s\n' "${targets[@]}" | tac))
  for t in "${order[@]}"; do
    case $t in
      proxy-plain) run "$t-$i" http://127.0.0.1:${PX_PORT[plain]}/v2/models/recommender/infer "${PX_PID[plain]}" ;;
      proxy-tls) run "$t-$i" https://127.0.0.1:${PX_PORT[tls]}/v2/models/recommender/infer "${PX_PID[tls]}" -ca "$C/ca.crt" ;;
      proxy-mtls) run "$t-$i" https://127.0.0.1:${PX_PORT[mtls]}/v2/models/recommender/infer "${PX_PID[mtls]}" -ca "$C/ca.crt" -cert "$C/syctl.crt" -key "$C/syctl.key" ;;
      proxy-tls-base) run "$t-$i" https://127.0.0.1:${PX_PORT[tls-base]}/v2/models/recommender/infer "${PX_PID[tls-base]}" -ca "$C/ca.crt" ;;
      proxy-mtls-base) run "$t-$i" https://127.0.0.1:${PX_PORT[mtls-base]}/v2/models/recommender/infer "${PX_PID[mtls-base]}" -ca "$C/ca.crt" -cert "$C/syctl.crt" -key "$C/syctl.key" ;;
      nginx-plain) run "$t-$i" http://127.0.0.1:$NG_PLAIN/v2/models/recommender/infer "$NG_WORKER" ;;
      nginx-tls) run "$t-$i" https://127.0.0.1:$NG_TLS/v2/models/recommender/infer "$NG_WORKER" -ca "$C/ca.crt" ;;
      nginx-mtls) run "$t-$i" https://127.0.0.1:$NG_MTLS/v2/models/recommender/infer "$NG_WORKER" -ca "$C/ca.crt" -cert "$C/syctl.crt" -key "$C/syctl.key" ;;
    esac
  done
done
