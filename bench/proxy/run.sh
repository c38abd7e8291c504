#!/usr/bin/env bash
# Side-by-side proxy benchmark on this machine: the same ONNX backend and the
# same load, (1) direct, (2) nginx reverse proxy with a keep-alive upstream,
# (3) the Switchyard proxy on a plain weighted route (v1 80 / v2 20, both on
# the same backend) configured by the real control plane over xDS.
#
# For each target: fixed rate (RATE rps, DURATION) for added p50/p99, then
# closed loop (CONC connections, MAXDUR) for max throughput. CPU per proxy is
# utime+stime from /proc/PID/stat over the measured window (nginx: master +
# workers). Everything listens on 127.0.0.1; all load is bounded in time.
#
#   bench/proxy/run.sh                 # defaults below
#   RATE=2000 DURATION=10s CONC=32 MAXDUR=5s PROFILE=1 bench/proxy/run.sh
#   PROXY_GOMAXPROCS=1 PROXY_GOGC=400 bench/proxy/run.sh   # the proxy's Go runtime settings
#
# Modes (MODE=...):
#   base    the above (default)
#   cache   the same, but the model has the prediction cache on (spec.cache):
#           the load generator repeats one input, so after the first request
#           every switchyard answer is a cache hit; compare with nginx's
#           pass-through in the same run
#   shadow  fixed rate RATE for DURATION through switchyard (v1 serves every
#           request) with shadow off, mirroring 10 % and 100 % to v2,
#           REPEATS rounds in rotated order: primary p50/p99 and proxy CPU
#           for each, p99 against "off" of the same round. SHADOW_HOST=
#           separate (default: v2 on a second backend process at SCHED_IDLE
#           priority, the stand-in for its own host) | same (v2 on the
#           primary's backend); SHADOW_WORKERS (16), SHADOW_BATCH (e.g.
#           '{"maxRows":16,"maxDelay":"2ms"}'), SHADOW_PCTS ("10 100"),
#           SHADOW_PROCESS: agent (default: the mirror work runs in the
#           proxy's low-priority shadow agent process) | inline (in the
#           proxy's process) | "agent inline" (one proxy each, on the same
#           backends and control plane; their rounds interleaved, so the two
#           are compared in the same sitting). Agent CPU is reported apart.
#           PIN=1 gives the proxy a core of its own: the proxy on CPU 0,
#           everything else (backends, control plane, load generator, nginx,
#           the shadow agent, moved there after it starts) on CPU 1 — the
#           deployment docs/operations.md recommends, on this 2-core VM.
set -euo pipefail
MODE=${MODE:-base}
RATE=${RATE:-2000}
DURATION=${DURATION:-10s}
CONC=${CONC:-32}
MAXDUR=${MAXDUR:-5s}
PROFILE=${PROFILE:-0}   # 1: CPU profile of the proxy's closed-loop run into $PROFILE_DIR
PERF=${PERF:-0}         # 1: perf record (kernel included) of the proxy's closed-loop run into $PROFILE_DIR/perf.data
PROFILE_DIR=${PROFILE_DIR:-/tmp/switchyard-proxy-profile}
PIN=${PIN:-0}           # 1: the proxy alone on CPU 0, the rest on CPU 1
ON_REST=(); ON_PROXY=()
if [ "$PIN" = 1 ]; then ON_REST=(taskset -c 1); ON_PROXY=(taskset -c 0); PROXY_GOMAXPROCS=${PROXY_GOMAXPROCS:-1}; fi
NGINX_WORKERS=${NGINX_WORKERS:-1}
source "$(dirname "$0")/stack.sh"
build_stack ./bench/proxy/loadgen
start_backend
start_controlplane
case $MODE in
  base|shadow) MODEL_EXTRA="" ;;
  cache) MODEL_EXTRA=',"cache":{"ttl":"10m","maxEntries":10000}' ;;
  *) echo "unknown MODE=$MODE (base, cache, shadow)" >&2; exit 2 ;;
esac
put_model recommender <<JSON
{"apiVersion":"switchyard.dev/v1","kind":"Model","metadata":{"name":"recommender"},
 "spec":{"versions":[{"name":"v1","endpoints":["127.0.0.1:$BE_HTTP"],"backendModel":"recommender-v1"},
                     {"name":"v2","endpoints":["127.0.0.1:$BE_HTTP"],"backendModel":"recommender-v2"}],
         "traffic":{"weights":{"v1":80,"v2":20}},"timeout":"2s","retries":{"attempts":1,"budgetPercent":20}$MODEL_EXTRA}}
JSON

SHADOW_PROCESS=${SHADOW_PROCESS:-agent}
PROCS=($SHADOW_PROCESS)
declare -A P_HTTP P_ADMIN P_PID
start_proxy() { # shadow-process
  local http grpc admin
  http=$(freeport); grpc=$(freeport); admin=$(freeport)
  GOGC=${PROXY_GOGC:-100} GOMAXPROCS=${PROXY_GOMAXPROCS:-$(nproc)} "${ON_PROXY[@]}" "$TMP/switchyard" proxy --xds 127.0.0.1:$CP_XDS --http 127.0.0.1:$http --grpc 127.0.0.1:$grpc --admin 127.0.0.1:$admin --node-id "bench-$1" --shadow-process "$1" --log-level warn 2>"$TMP/proxy-$1.log" &
  P_PID[$1]=$!; P_HTTP[$1]=$http; P_ADMIN[$1]=$admin
  PIDS+=(${P_PID[$1]})
  waitok http://127.0.0.1:$admin/ready
  waitok http://127.0.0.1:$http/v2/models/recommender/ready
  if [ "$PIN" = 1 ]; then # the shadow agent (a child) inherited CPU 0
    local a; for a in $(pgrep -P "${P_PID[$1]}"); do taskset -a -p -c 1 "$a" >/dev/null; done
  fi
}
start_proxy "${PROCS[0]}"
PX_HTTP=${P_HTTP[${PROCS[0]}]}; PX_ADMIN=${P_ADMIN[${PROCS[0]}]}; PX_PID=${P_PID[${PROCS[0]}]}

NG_PORT=$(freeport)
{ nginx_head "$NGINX_WORKERS"; cat <<CONF
  upstream backend { server 127.0.0.1:$BE_HTTP; keepalive 128; }
  server {
    listen 127.0.0.1:$NG_PORT;
    location /v2/models/recommender/infer {
      proxy_pass http://backend/v2/models/recommender-v1/infer;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering on;
    }
  }
}
CONF
} >"$TMP/nginx/nginx.conf"
"${ON_REST[@]}" nginx -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -g 'daemon off;' &
NG_PID=$!
PIDS+=($NG_PID)
sleep 0.3
NG_PIDS=$(echo $NG_PID $(pgrep -P $NG_PID) | tr ' ' ',')
curl -fsS -o /dev/null -X POST -H 'Content-Type: application/json' http://127.0.0.1:$NG_PORT/v2/models/recommender/infer \
  -d '{"inputs":[{"name":"features","datatype":"FP32","shape":[1,32],"data":[0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0]}]}'

OUT="$TMP/results.jsonl"
run() { # name url pids mode-args...
  local name=$1 url=$2 pids=$3; shift 3
  "${ON_REST[@]}" "$TMP/loadgen" -name "$name" -url "$url" -pid "$pids" "$@" | tee -a "$OUT"
}

if [ "$MODE" = shadow ]; then
  # Shadow off / SHADOW_PCTS, REPEATS rounds in rotated order; v1 serves every
  # request; v2 is the shadow (topk compare). SHADOW_HOST=separate (default)
  # serves v2 from a second backend process at SCHED_IDLE priority: the
  # stand-in for the shadow version's own host, so its inference does not
  # take CPU from the primary path on these shared cores (what is measured
  # is the proxy's mirroring: in its own process with SHADOW_PROCESS=inline,
  # in its shadow agent, also at SCHED_IDLE, with agent; agent CPU apart).
  # SHADOW_HOST=same serves v2 from the primary's backend process.
  SHADOW_HOST=${SHADOW_HOST:-separate}
  SHADOW_PCTS=${SHADOW_PCTS:-10 100}
  SHADOW_WORKERS=${SHADOW_WORKERS:-16}
  SHADOW_BATCH=${SHADOW_BATCH:-}   # e.g. '{"maxRows":16,"maxDelay":"2ms"}'
  BATCH_FIELD=""; [ -n "$SHADOW_BATCH" ] && BATCH_FIELD=',"batch":'$SHADOW_BATCH
  REPEATS=${REPEATS:-3}
  SH_HTTP=$BE_HTTP
  if [ "$SHADOW_HOST" = separate ]; then
    SH_HTTP=$(freeport); SH_GRPC=$(freeport)
    "${ON_REST[@]}" chrt -i 0 "$TMP/switchyard" backend --model-repository "$TMP/models" --http 127.0.0.1:$SH_HTTP --grpc 127.0.0.1:$SH_GRPC --log-level warn 2>"$TMP/backend-shadow.log" &
    PIDS+=($!)
    waitok http://127.0.0.1:$SH_HTTP/v2/models/recommender-v2/ready
  fi
  for pr in "${PROCS[@]:1}"; do start_proxy "$pr"; done
  put_shadow() {
    local pct=$1 SH="" got
    [ "$pct" != 0 ] && SH=',"shadow":{"version":"v2","percent":'$pct',"workers":'$SHADOW_WORKERS$BATCH_FIELD',"compare":{"mode":"topk","k":10}}'
    put_model recommender <<JSON
{"apiVersion":"switchyard.dev/v1","kind":"Model","metadata":{"name":"recommender"},
 "spec":{"versions":[{"name":"v1","endpoints":["127.0.0.1:$BE_HTTP"],"backendModel":"recommender-v1"},
                     {"name":"v2","endpoints":["127.0.0.1:$SH_HTTP"],"backendModel":"recommender-v2"}],
         "traffic":{"weights":{"v1":100}},"timeout":"2s"$SH}}
JSON
    local px
    for px in "${PROCS[@]}"; do
      for _ in $(seq 100); do
        got=$(curl -fsS http://127.0.0.1:${P_ADMIN[$px]}/config_dump | python3 -c 'import json,sys; m=json.load(sys.stdin)["models"][0]["spec"]; print(int(m.get("shadow",{}).get("percent",0)))')
        [ "$got" = "$pct" ] && break; sleep 0.05
      done
    done
  }
  mirror_counts() { curl -fsS http://127.0.0.1:${P_ADMIN[$1]}/metrics | awk '/^switchyard_shadow_mirrored_total/ {m+=$2} /^switchyard_shadow_dropped_total/ {d+=$2} END {printf "%d %d\n", m, d}'; }
  # CPU ticks (utime+stime) of the proxy's shadow agent, 0 without one.
  agent_ticks() { local a; a=$(pgrep -P "${P_PID[$1]}" | head -1); [ -n "$a" ] && awk '{print $14+$15}' /proc/$a/stat 2>/dev/null || echo 0; }
  CLK=$(getconf CLK_TCK)
  settings=()
  for pr in "${PROCS[@]}"; do for pct in 0 $SHADOW_PCTS; do settings+=("$pr:$pct"); done; done
  cur=""
  for rep in $(seq "$REPEATS"); do
    for i in $(seq 0 $((${#settings[@]}-1))); do
      st=${settings[$(( (i + rep - 1) % ${#settings[@]} ))]}
      pr=${st%%:*}; pct=${st##*:}
      [ "$pct" != "$cur" ] && put_shadow "$pct" && cur=$pct
      read -r m0 d0 < <(mirror_counts "$pr")
      a0=$(agent_ticks "$pr")
      if [ "$PROFILE" = 1 ] && [ "$pct" != 0 ]; then mkdir -p "$PROFILE_DIR"; (sleep 2; curl -fsS -o "$PROFILE_DIR/shadow-$pr-$pct.pb.gz" "http://127.0.0.1:${P_ADMIN[$pr]}/debug/pprof/profile?seconds=4") & fi
      line=$("${ON_REST[@]}" "$TMP/loadgen" -name "shadow-$pr-$pct%" -url http://127.0.0.1:${P_HTTP[$pr]}/v2/models/recommender/infer -pid "${P_PID[$pr]}" -rate $RATE -duration $DURATION -concurrency 64 -samples "$TMP/lat-$rep-$pr-$pct.txt")
      sleep 0.2 # the agent finishes the last mirrors
      a1=$(agent_ticks "$pr")
      read -r m1 d1 < <(mirror_counts "$pr")
      echo "$line" | python3 -c "import json,sys; r=json.load(sys.stdin); r.update(rep=$rep, proc='$pr', pct=$pct, mirrored=$m1-$m0, dropped=$d1-$d0, agent_cpu_seconds=($a1-$a0)/$CLK); print(json.dumps(r))" | tee -a "$OUT"
    done
  done
  # Each proxy's report covers its current mirror (none if the last round ran with shadow off).
  for pr in "${PROCS[@]}"; do
    rep=$(curl -fsS "http://127.0.0.1:${P_ADMIN[$pr]}/shadow/report?model=recommender&window=10m" 2>/dev/null || true)
    [ -n "$rep" ] && echo "$rep" | python3 -c 'import json,sys; r=json.load(sys.stdin)["report"]["shadow"]; print("# '"$pr"': shadow compared", r["compared"], "agreement", round(r["agreement_rate"],4), "shadow p50/p99 ms", r["shadow_p50_ms"], r["shadow_p99_ms"])'
  done
  python3 - "$OUT" "$SHADOW_HOST" "$RATE" "$DURATION" "$TMP" <<'PY'
import glob, json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f"\nshadow host: {sys.argv[2]}; fixed {sys.argv[3]} rps, {sys.argv[4]} per run; median [min–max] over {max(r['rep'] for r in rows)} rounds")
print("\n| shadow | rps | p50 ms | p99 ms | proxy CPU ms / 1000 req | agent CPU ms / 1000 mirrors | mirrored | dropped | p99 vs off (same proxy, same round) | errors |")
print("|---|---|---|---|---|---|---|---|---|---|")
base = {(r['proc'], r['rep']): r for r in rows if r['pct'] == 0}
def med(xs): return f"{statistics.median(xs):.2f} [{min(xs):.2f}–{max(xs):.2f}]"
keys = sorted({(r['proc'], r['pct']) for r in rows})
for proc, pct in keys:
    rs = [r for r in rows if r['proc'] == proc and r['pct'] == pct]
    cpu = [1e6 * r.get('cpu_seconds', 0) / max(r['requests'], 1) for r in rs]
    acpu = [1e6 * r['agent_cpu_seconds'] / r['mirrored'] for r in rs if r['mirrored'] > 0]
    ratio = [100 * (r['p99_ms'] / base[(proc, r['rep'])]['p99_ms'] - 1) for r in rs] if pct else []
    rt = f"{statistics.median(ratio):+.1f} % [{min(ratio):+.1f}…{max(ratio):+.1f}]" if ratio else "–"
    print(f"| {proc} {pct} % | {statistics.median([r['rps'] for r in rs]):.0f} | {med([r['p50_ms'] for r in rs])} | {med([r['p99_ms'] for r in rs])} | {med(cpu)} | {med(acpu) if acpu else '–'} | {sum(r['mirrored'] for r in rs)} | {sum(r['dropped'] for r in rs)} | {rt} | {sum(r['errors'] for r in rs)} |")
# Every request's latency, pooled over the rounds of each setting: with
# many short rounds in rotated order, slow drifts of the machine fall on
# every setting alike.
# "trimmed": the same without each setting's noisiest tenth of rounds (by
# round p99), so that one stall of the shared machine does not decide it.
print("\n| shadow | requests pooled | p50 ms | p90 ms | p99 ms | p99.9 ms | p99 vs off (same proxy) | p99 trimmed ms | trimmed vs off |")
print("|---|---|---|---|---|---|---|---|---|")
pooled, trimmed = {}, {}
for proc, pct in keys:
    xs, kept = [], []
    rs = sorted((r for r in rows if r['proc'] == proc and r['pct'] == pct), key=lambda r: r['p99_ms'])
    keep = {r['rep'] for r in rs[:len(rs) - len(rs) // 10]}
    for f in glob.glob(f"{sys.argv[5]}/lat-*-{proc}-{pct}.txt"):
        ls = [int(l) for l in open(f) if l.strip()]
        xs += ls
        if int(f.rsplit("/", 1)[1].split("-")[1]) in keep:
            kept += ls
    xs.sort()
    kept.sort()
    if not xs:
        continue
    q = lambda p, v=xs: v[min(len(v) - 1, int(p * len(v)))] / 1000
    pooled[(proc, pct)], trimmed[(proc, pct)] = q(0.99), q(0.99, kept)
    vs = f"{100 * (pooled[(proc, pct)] / pooled[(proc, 0)] - 1):+.1f} %" if pct and (proc, 0) in pooled else "–"
    tvs = f"{100 * (trimmed[(proc, pct)] / trimmed[(proc, 0)] - 1):+.1f} %" if pct and (proc, 0) in trimmed else "–"
    print(f"| {proc} {pct} % | {len(xs)} | {q(0.5):.2f} | {q(0.9):.2f} | {q(0.99):.2f} | {q(0.999):.2f} | {vs} | {trimmed[(proc, pct)]:.2f} | {tvs} |")
PY
  exit 0
fi
if [ "$MODE" = cache ]; then
  curl -fsS -o /dev/null -X POST -H 'Content-Type: application/json' http://127.0.0.1:$PX_HTTP/v2/models/recommender/infer \
    -d '{"inputs":[{"name":"features","datatype":"FP32","shape":[1,32],"data":[0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0]}]}'
  echo "# switchyard answers from its prediction cache (x-switchyard-cache: hit); nginx and direct pass through"
fi
echo "# fixed rate $RATE rps for $DURATION"
run direct     http://127.0.0.1:$BE_HTTP/v2/models/recommender-v1/infer "" -rate $RATE -duration $DURATION -concurrency 64
run nginx      http://127.0.0.1:$NG_PORT/v2/models/recommender/infer "$NG_PIDS" -rate $RATE -duration $DURATION -concurrency 64
run switchyard http://127.0.0.1:$PX_HTTP/v2/models/recommender/infer "$PX_PID" -rate $RATE -duration $DURATION -concurrency 64
echo "# closed loop, $CONC connections, $MAXDUR"
run direct     http://127.0.0.1:$BE_HTTP/v2/models/recommender-v1/infer "" -concurrency $CONC -duration $MAXDUR
run nginx      http://127.0.0.1:$NG_PORT/v2/models/recommender/infer "$NG_PIDS" -concurrency $CONC -duration $MAXDUR
if [ "$PROFILE" = 1 ]; then
  secs=${MAXDUR%s}
  mkdir -p "$PROFILE_DIR"
  curl -fsS -o "$PROFILE_DIR/cpu.pprof" "http://127.0.0.1:$PX_ADMIN/debug/pprof/profile?seconds=$((secs>1 ? secs-1 : 1))" &
  PROF=$!
fi
if [ "$PERF" = 1 ]; then
  secs=${MAXDUR%s}
  mkdir -p "$PROFILE_DIR"
  (sleep 1; perf record -F 2999 -g -p "$PX_PID" -o "$PROFILE_DIR/perf.data" -- sleep $((secs>2 ? secs-2 : 1)) >/dev/null 2>&1) &
  PERFJOB=$!
fi
run switchyard http://127.0.0.1:$PX_HTTP/v2/models/recommender/infer "$PX_PID" -concurrency $CONC -duration $MAXDUR
if [ "$PERF" = 1 ]; then
  wait $PERFJOB
  echo "# perf: perf report -i $PROFILE_DIR/perf.data --no-children --sort dso,sym -g none"
fi
if [ "$PROFILE" = 1 ]; then
  wait $PROF
  cp "$TMP/switchyard" "$PROFILE_DIR/switchyard"
  echo "# profile: go tool pprof -top $PROFILE_DIR/switchyard $PROFILE_DIR/cpu.pprof"
fi

python3 - "$OUT" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def get(name, mode): return next(r for r in rows if r["target"] == name and r["mode"].startswith(mode))
print("\n| target | mode | rps | p50 ms | p99 ms | proxy CPU s | req / proxy CPU-s | errors |")
print("|---|---|---|---|---|---|---|---|")
for r in rows:
    print(f"| {r['target']} | {r['mode']} | {r['rps']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r.get('cpu_seconds',0):.2f} | {r.get('requests_per_cpu_second',0):.0f} | {r['errors']} |")
for mode in ("fixed", "closed"):
    d, n, s = get("direct", mode), get("nginx", mode), get("switchyard", mode)
    print(f"\n{mode}: added p50/p99 nginx {n['p50_ms']-d['p50_ms']:+.2f}/{n['p99_ms']-d['p99_ms']:+.2f} ms, switchyard {s['p50_ms']-d['p50_ms']:+.2f}/{s['p99_ms']-d['p99_ms']:+.2f} ms; "
          f"switchyard/nginx requests per CPU-second = {s['requests_per_cpu_second']/n['requests_per_cpu_second']:.2f}x")
PY
