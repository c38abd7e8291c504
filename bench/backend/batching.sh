#!/usr/bin/env bash
# Dynamic batching on vs off at 32 concurrent clients, against in-process
# ONNX Runtime at the same batch sizes (issue 2's batching benchmark; figures
# in docs/benchmarks-backend.md).
#
# Model: "ranker" (bench/backend/ranker), the demo signature [N,32] → [N,100]
# with hidden widths 2048-2048-2048 — a model whose weights, not the
# protocol, dominate a request. For each server configuration in CONFIGS a
# fresh `switchyard backend` process serves it; the load generator
# (bench/proxy/loadgen, another process, REST/JSON, closed loop, CONC
# connections) measures throughput and latency, and the backend's own CPU
# (utime+stime from /proc) gives requests per backend CPU-second. The
# backend's /metrics gives the mean rows per ONNX Runtime run. Then
# `ranker inprocess` runs the same model in-process at that batch size with
# the same thread layout: rows/s and rows per CPU-second, the ceiling.
#
#   bench/backend/batching.sh                     # defaults below
#   DURATION=10s CONC=32 bench/backend/batching.sh
#   PIN=1 bench/backend/batching.sh               # backend and in-process runs on CPU 0, the load generator on CPU 1
#   BINARY=1 bench/backend/batching.sh            # binary tensor data in and out (OIP binary extension) instead of JSON numbers
#
# PIN=1 gives the server and the in-process reference the same CPU budget
# (one core) and keeps the load generator's work off it: on a 2-core
# machine, the closest stand-in for a client on another host. (Its default
# layouts use one intra-op thread.)
#
# Everything listens on 127.0.0.1; every run is bounded in time.
set -euo pipefail
DURATION=${DURATION:-10s}
CONC=${CONC:-32}
PIN=${PIN:-0}
BINARY=${BINARY:-0}
LGFLAGS=(); [ "$BINARY" = 1 ] && LGFLAGS=(-binary)
SRV=(); CLI=()
if [ "$PIN" = 1 ]; then SRV=(taskset -c 0); CLI=(taskset -c 1); fi
BACKEND_GOMAXPROCS=${BACKEND_GOMAXPROCS:-$([ "$PIN" = 1 ] && echo 1 || nproc)}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TMP=$(mktemp -d /tmp/switchyard-batching.XXXXXX)
PID=""
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
export SWITCHYARD_ORT_LIB=${SWITCHYARD_ORT_LIB:-$ROOT/third_party/onnxruntime/libonnxruntime.so.1}
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

cd "$ROOT"
go build -o "$TMP/switchyard" ./cmd/switchyard
go build -o "$TMP/loadgen" ./bench/proxy/loadgen
go build -o "$TMP/ranker" ./bench/backend/ranker

# name | config.yaml (flow style) | in-process layout: goroutines intra nospin
DEFAULT_CONFIGS="
off|{max_batch_size: 64, intra_op_threads: 1}|32 1 0
on-inst1-intra2|{max_batch_size: 64, intra_op_threads: 2, allow_spinning: false, dynamic_batching: {max_queue_delay: 2ms}}|1 2 1
on-inst2-intra1|{max_batch_size: 64, instance_count: 2, intra_op_threads: 1, allow_spinning: false, dynamic_batching: {max_queue_delay: 4ms, preferred_batch_sizes: [16]}}|2 1 1
"
[ "$PIN" = 1 ] && DEFAULT_CONFIGS="
off|{max_batch_size: 64, intra_op_threads: 1}|32 1 0
on-inst1-intra1|{max_batch_size: 64, intra_op_threads: 1, allow_spinning: false, dynamic_batching: {max_queue_delay: 2ms}}|1 1 1
on-inst2-intra1|{max_batch_size: 64, instance_count: 2, intra_op_threads: 1, allow_spinning: false, dynamic_batching: {max_queue_delay: 4ms, preferred_batch_sizes: [16]}}|1 1 1
"
CONFIGS=${CONFIGS:-$DEFAULT_CONFIGS}

echo "# $(date -u +%FT%TZ) $(nproc) CPUs, load average: $(cut -d' ' -f1-3 /proc/loadavg); DURATION=$DURATION CONC=$CONC BACKEND_GOMAXPROCS=$BACKEND_GOMAXPROCS PIN=$PIN BINARY=$BINARY"
echo
echo "| server | req/s | p50 ms | p99 ms | backend CPU-s | req / backend CPU-s | rows/run | in-process rows/s at that batch | in-process rows / CPU-s | throughput vs in-process | per CPU-s vs in-process | errors |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
while IFS='|' read -r name cfg layout; do
  [ -z "$name" ] && continue
  rm -rf "$TMP/repo"
  "$TMP/ranker" write -repo "$TMP/repo" -config "$cfg"
  HTTP=$(freeport); GRPC=$(freeport)
  GOMAXPROCS=$BACKEND_GOMAXPROCS "${SRV[@]}" "$TMP/switchyard" backend --model-repository "$TMP/repo" --http 127.0.0.1:$HTTP --grpc 127.0.0.1:$GRPC --log-level warn 2>"$TMP/backend-$name.log" &
  PID=$!
  for _ in $(seq 400); do curl -fsS -o /dev/null http://127.0.0.1:$HTTP/v2/models/ranker/ready 2>/dev/null && break; sleep 0.05; done
  batch() { curl -fsS http://127.0.0.1:$HTTP/metrics | awk '/^switchyard_backend_batch_size_(sum|count)\{/ {v[$1 ~ /_sum/ ? "s" : "c"]=$2} END {printf "%s %s\n", v["s"], v["c"]}'; }
  read -r s0 c0 < <(batch)
  out=$("${CLI[@]}" "$TMP/loadgen" -name "$name" -url http://127.0.0.1:$HTTP/v2/models/ranker/infer -concurrency "$CONC" -duration "$DURATION" -pid "$PID" "${LGFLAGS[@]}" 2>"$TMP/loadgen-$name.err" || true)
  read -r s1 c1 < <(batch)
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""
  rows=$(python3 -c "print(round(($s1-$s0)/max($c1-$c0,1),1))")
  read -r g intra nospin <<<"$layout"
  r=$(python3 -c "print(max(1,round($rows)))")
  flags=""; [ "$nospin" = 1 ] && flags="-nospin"
  ip=$("${SRV[@]}" "$TMP/ranker" inprocess -model "$TMP/repo/ranker/1/model.onnx" -rows "$r" -goroutines "$g" -intra "$intra" $flags -duration 5s)
  python3 - "$name" "$out" "$rows" "$ip" <<'PY'
import json, sys
name, out, rows, ip = sys.argv[1], json.loads(sys.argv[2]), float(sys.argv[3]), json.loads(sys.argv[4])
rps, cpu = out["rps"], out.get("cpu_seconds", 0)
per = out["requests"] / cpu if cpu else 0
print(f"| {name} | {rps:.0f} | {out['p50_ms']:.1f} | {out['p99_ms']:.1f} | {cpu:.2f} | {per:.0f} | {rows} | {ip['rows_per_second']:.0f} (batch {ip['rows']}, {ip['goroutines']}×intra {ip['intra']}) | {ip['rows_per_cpu_second']:.0f} | {rps/ip['rows_per_second']:.0%} | {per/ip['rows_per_cpu_second']:.0%} | {out['errors']} |")
PY
done <<<"$CONFIGS"
