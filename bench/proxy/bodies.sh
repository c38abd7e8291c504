#!/usr/bin/env bash
# Peak memory of the proxy under large request bodies: N (default 12)
# concurrent POSTs of SIZE_MB (default 60) MB each to the proxy's REST port,
# while small inference requests are sent beside them (one every 50 ms).
# Reports the proxy's peak RSS (VmHWM), the big requests' status codes and
# the small requests' answers. The budget is the proxy's default
# --max-buffered-bytes unless BUFFERED is set (bytes).
#
#   bench/proxy/bodies.sh
#   N=12 SIZE_MB=60 BUFFERED=$((1<<40)) bench/proxy/bodies.sh   # budget off, for comparison
#
# Everything listens on 127.0.0.1; every loop is bounded in count and time.
set -euo pipefail
N=${N:-12}
SIZE_MB=${SIZE_MB:-60}
source "$(dirname "$0")/stack.sh"
build_stack
start_backend
start_controlplane
put_model recommender <<JSON
{"apiVersion":"switchyard.dev/v1","kind":"Model","metadata":{"name":"recommender"},
 "spec":{"versions":[{"name":"v1","endpoints":["127.0.0.1:$BE_HTTP"],"backendModel":"recommender-v1"}],
         "traffic":{"weights":{"v1":100}},"timeout":"10s"}}
JSON
PX_HTTP=$(freeport); PX_GRPC=$(freeport); PX_ADMIN=$(freeport)
EXTRA=()
[ -n "${BUFFERED:-}" ] && EXTRA=(--max-buffered-bytes "$BUFFERED")
"$TMP/switchyard" proxy --xds 127.0.0.1:$CP_XDS --http 127.0.0.1:$PX_HTTP --grpc 127.0.0.1:$PX_GRPC --admin 127.0.0.1:$PX_ADMIN \
  --node-id bodies --shadow-process inline --log-level error "${EXTRA[@]}" 2>"$TMP/proxy.log" &
PX_PID=$!
PIDS+=($PX_PID)
waitok http://127.0.0.1:$PX_HTTP/v2/models/recommender/ready
rss() { awk '/VmRSS/{print $2}' /proc/$PX_PID/status; }
echo "proxy RSS before: $(( $(rss) / 1024 )) MiB"

# One large JSON body: a valid request followed by blanks up to SIZE_MB.
python3 - "$TMP/big.json" "$SIZE_MB" <<'PY'
import sys
path, mb = sys.argv[1], int(sys.argv[2])
head = '{"inputs":[{"name":"features","datatype":"FP32","shape":[1,32],"data":[' + ",".join(["0.5"] * 32) + ']}]}'
with open(path, "w") as f:
    f.write(head)
    f.write(" " * (mb * 1024 * 1024 - len(head)))
PY
small='{"inputs":[{"name":"features","datatype":"FP32","shape":[1,32],"data":['$(python3 -c 'print(",".join(["0.1"]*32))')']}]}'

BIG=()
for i in $(seq "$N"); do
  curl -s -o /dev/null -w '%{http_code}\n' --max-time 60 -H 'Content-Type: application/json' \
    --data-binary @"$TMP/big.json" http://127.0.0.1:$PX_HTTP/v2/models/recommender/infer >"$TMP/big-$i.code" &
  BIG+=($!)
done
ok=0; bad=0
for _ in $(seq 100); do # 5 s of small requests beside them
  c=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -H 'Content-Type: application/json' -d "$small" \
    http://127.0.0.1:$PX_HTTP/v2/models/recommender/infer || true)
  if [ "$c" = 200 ]; then ok=$((ok+1)); else bad=$((bad+1)); fi
  sleep 0.05
done
wait "${BIG[@]}" || true # each bounded by its own --max-time
echo "big requests ($N x $SIZE_MB MB): $(sort "$TMP"/big-*.code | uniq -c | awk '{printf "%s x %s  ", $1, $2}')"
echo "small requests meanwhile: $ok answered 200, $bad not"
echo "proxy peak RSS (VmHWM): $(( $(awk '/VmHWM/{print $2}' /proc/$PX_PID/status) / 1024 )) MiB"
echo "shed: $(curl -s http://127.0.0.1:$PX_ADMIN/metrics | awk '/^switchyard_proxy_shed_total/{print $0}')"
