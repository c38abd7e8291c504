#!/usr/bin/env bash
# How close can a cache hit get to nothing? Per round: `MODE=cache
# bench/proxy/run.sh` (nginx passing through to the backend vs Switchyard
# answering from its prediction cache, proxy GOMAXPROCS=1), then floor.c —
# a do-nothing epoll server answering a canned 1.3 KB response — under the
# same closed-loop load. Prints requests per CPU-second of each and the
# ratios: floor/nginx is the most any server could reach against nginx on
# this machine with these clients; switchyard/floor is how much of that a
# hit keeps.
#
#   bench/floor/run.sh                  # ROUNDS=2 CONC=32 MAXDUR=5s
set -euo pipefail
ROUNDS=${ROUNDS:-2}
CONC=${CONC:-32}
MAXDUR=${MAXDUR:-5s}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TMP=$(mktemp -d /tmp/switchyard-floor.XXXXXX)
FPID=
cleanup() { [ -n "$FPID" ] && kill "$FPID" 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT
cd "$ROOT"
gcc -O2 -o "$TMP/floor" bench/floor/floor.c
go build -o "$TMP/loadgen" ./bench/proxy/loadgen
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
for r in $(seq "$ROUNDS"); do
  PROXY_GOMAXPROCS=1 MODE=cache DURATION=5s MAXDUR=$MAXDUR CONC=$CONC bench/proxy/run.sh >"$TMP/cache-$r.txt" 2>&1 || { tail -20 "$TMP/cache-$r.txt" >&2; exit 1; }
  port=$(freeport)
  "$TMP/floor" "$port" 1300 & FPID=$!
  sleep 0.2
  "$TMP/loadgen" -url "http://127.0.0.1:$port/v2/models/recommender/infer" -name floor -concurrency "$CONC" -duration "$MAXDUR" -pid "$FPID" >"$TMP/floor-$r.txt" 2>&1
  kill "$FPID"; wait "$FPID" 2>/dev/null || true; FPID=
done
python3 - "$TMP" "$ROUNDS" <<'PY'
import json, sys
tmp, rounds = sys.argv[1], int(sys.argv[2])
def closed(path):
    out = {}
    for line in open(path):
        if line.startswith("{") and '"closed-loop' in line:
            j = json.loads(line)
            out[j["target"]] = j.get("requests_per_cpu_second", 0)
    return out
print("| round | nginx req/CPU-s | switchyard hits req/CPU-s | floor req/CPU-s | switchyard/nginx | floor/nginx | switchyard/floor |")
print("|---|---|---|---|---|---|---|")
for r in range(1, rounds + 1):
    c = closed(f"{tmp}/cache-{r}.txt"); f = closed(f"{tmp}/floor-{r}.txt")
    n, s, fl = c.get("nginx", 0), c.get("switchyard", 0), f.get("floor", 0)
    if not (n and s and fl):
        print(f"| {r} | round incomplete: {c} {f} |"); continue
    print(f"| {r} | {n:,.0f} | {s:,.0f} | {fl:,.0f} | {s/n:.2f}x | {fl/n:.2f}x | {s/fl:.2f} |")
PY
