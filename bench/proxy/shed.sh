#!/usr/bin/env bash
# Load shedding under 3x overload, in one sitting:
#   1. capacity: `syctl loadtest --ramp` straight at a backend serving the
#      ranker model (bench/backend/ranker: [N,32] -> [N,100], 33 MB of
#      weights, one instance, no batching), the highest rate whose p99
#      stays within P99_BUDGET (default 50ms); and its unloaded p99 (at a
#      tenth of capacity);
#   2. FACTOR (default 3) x capacity through the proxy, for DURATION
#      (default 10s), with spec.concurrency adaptive, fixed (LIMIT, default
#      8) and off; each: goodput (2xx per second) as a share of capacity
#      and the accepted requests' p99 against the unloaded p99.
#
#   bench/proxy/shed.sh
#   FACTOR=3 DURATION=10s P99_BUDGET=50ms bench/proxy/shed.sh
#
# Everything listens on 127.0.0.1; every run is bounded in time and count.
set -euo pipefail
FACTOR=${FACTOR:-3}
DURATION=${DURATION:-10s}
P99_BUDGET=${P99_BUDGET:-50ms}
LIMIT=${LIMIT:-8}
source "$(dirname "$0")/stack.sh"
build_stack ./cmd/syctl ./bench/backend/ranker
"$TMP/ranker" write -repo "$TMP/repo" -config "{max_batch_size: 64, intra_op_threads: 1}"
start_backend "$TMP/repo" ranker

load() { # target rate duration -> JSON report
  "$TMP/syctl" loadtest --target "$1" --model "$2" --rate "$3" --duration "$4" --workers 512 --timeout 2s --quiet -o json
}
field() { python3 -c 'import json,sys; r=json.load(sys.stdin); print(eval(sys.argv[1]))' "$1"; }

echo "# $(date -u +%FT%TZ) $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
cap=$("$TMP/syctl" loadtest --target 127.0.0.1:$BE_HTTP --model ranker --ramp --ramp-start 50 --ramp-factor 1.25 --ramp-step 3s --duration 120s \
  --p99-budget "$P99_BUDGET" --workers 512 --timeout 2s --quiet -o json >"$TMP/ramp.json"; field 'r["ramp"]["capacity_rps"]' <"$TMP/ramp.json")
echo "ramp: $(field 'r["ramp"]["stop_reason"]' <"$TMP/ramp.json")"
[ "${cap%.*}" -gt 0 ] || { echo "no capacity found (p99 budget $P99_BUDGET)" >&2; exit 1; }
unloaded=$(load 127.0.0.1:$BE_HTTP ranker "$(python3 -c "print(max(1, $cap/10))")" 5s | field 'r["run"]["ok_latency"]["p99_ns"]/1e6')
echo "backend capacity (p99 <= $P99_BUDGET): $cap rps; unloaded p99 (at a tenth): $unloaded ms"

start_controlplane
PX_HTTP=$(freeport); PX_GRPC=$(freeport); PX_ADMIN=$(freeport)
"$TMP/switchyard" proxy --xds 127.0.0.1:$CP_XDS --http 127.0.0.1:$PX_HTTP --grpc 127.0.0.1:$PX_GRPC --admin 127.0.0.1:$PX_ADMIN \
  --node-id shed --shadow-process inline --log-level error 2>"$TMP/proxy.log" &
PIDS+=($!)
waitok http://127.0.0.1:$PX_ADMIN/ready

rate=$(python3 -c "print($cap*$FACTOR)")
echo
echo "| spec.concurrency | offered rps | goodput rps | goodput / capacity | shed 503 | other errors | accepted p99 ms | p99 / unloaded |"
echo "|---|---|---|---|---|---|---|---|"
for mode in adaptive fixed off; do
  case $mode in
    adaptive) conc=',"concurrency":{"adaptive":true}' ;;
    fixed) conc=',"concurrency":{"limit":'$LIMIT'}' ;;
    off) conc='' ;;
  esac
  put_model ranker <<JSON
{"apiVersion":"switchyard.dev/v1","kind":"Model","metadata":{"name":"ranker"},
 "spec":{"versions":[{"name":"v1","endpoints":["127.0.0.1:$BE_HTTP"],"backendModel":"ranker"}],
         "traffic":{"weights":{"v1":100}},"timeout":"2s"$conc}}
JSON
  for _ in $(seq 100); do # the proxy has the document
    curl -fsS http://127.0.0.1:$PX_ADMIN/config_dump 2>/dev/null | grep -q "\"$mode\"\|concurrency" && break
    [ "$mode" = off ] && break
    sleep 0.05
  done
  sleep 1
  load 127.0.0.1:$PX_HTTP ranker "$(python3 -c "print(max(1, $cap/10))")" 3s >/dev/null || true # warm, and let an adaptive limit settle
  load 127.0.0.1:$PX_HTTP ranker "$rate" "$DURATION" >"$TMP/$mode.json" || true # errors are what is measured
  python3 - "$TMP/$mode.json" "$cap" "$unloaded" "$mode" "$rate" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["run"]
cap, unloaded, mode, rate = float(sys.argv[2]), float(sys.argv[3]), sys.argv[4], float(sys.argv[5])
good = r["ok"] / r["seconds"]
errs = r.get("errors") or {}
shed = sum(v for k, v in errs.items() if "503" in k)
other = sum(errs.values()) - shed
p99 = r["ok_latency"]["p99_ns"] / 1e6
print(f"| {mode} | {rate:.0f} | {good:.0f} | {good/cap:.0%} | {shed} | {other} | {p99:.1f} | {p99/unloaded:.1f}x |")
PY
done
