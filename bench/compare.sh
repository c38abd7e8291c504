#!/usr/bin/env bash
# Side-by-side benchmark suite (package bench/compare; docs/benchmarks-suite.md).
# On this machine, in one run, with the same backend and the same open-loop
# load: direct to the backend; nginx and haproxy reverse proxies; the
# Switchyard proxy on a plain route, with the prediction cache hit, and with
# shadow at 100 %; the backend with dynamic batching off and in-process ONNX
# Runtime; the cold start with and without warm-up. Fixed rates, repeated;
# medians, ranges and ratios against nginx pair by pair.
#
#   bench/compare.sh                                 # defaults below
#   RATES=1000,2000 DURATION=5s REPEATS=3 bench/compare.sh
#   PIECES=direct,nginx,switchyard bench/compare.sh  # a subset
#   OUT=/tmp/suite.md JSON=/tmp/suite.json bench/compare.sh
#
# The markdown table goes to stdout and, with every sample as JSON, to
# bench/results/suite-<UTC time>.{md,json} (git-ignored) unless OUT/JSON say
# otherwise.
#
# nginx and haproxy are installed with apt-get when missing and allowed
# (INSTALL_PEERS=0 skips them instead). Every process runs in the foreground
# as a child on 127.0.0.1, configured in a temporary folder, stopped at the
# end. Load is bounded: REPEATS x pieces x rates x (WARMUP + DURATION).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RATES=${RATES:-1000,2000}
DURATION=${DURATION:-5s}
WARMUP=${WARMUP:-1s}
REPEATS=${REPEATS:-3}
WORKERS=${WORKERS:-64}
PEER_WORKERS=${PEER_WORKERS:-1}
PIECES=${PIECES:-}
INSTALL_PEERS=${INSTALL_PEERS:-1}
export CGO_ENABLED=1
export SWITCHYARD_ORT_LIB=${SWITCHYARD_ORT_LIB:-$ROOT/third_party/onnxruntime/libonnxruntime.so.1}

find_bin() { command -v "$1" 2>/dev/null || { [ -x "/usr/sbin/$1" ] && echo "/usr/sbin/$1"; } || true; }
NGINX=$(find_bin nginx); HAPROXY=$(find_bin haproxy)
if [ "$INSTALL_PEERS" = 1 ] && { [ -z "$NGINX" ] || [ -z "$HAPROXY" ]; }; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    pkgs=(); [ -z "$NGINX" ] && pkgs+=(nginx); [ -z "$HAPROXY" ] && pkgs+=(haproxy)
    echo "# installing ${pkgs[*]} (apt-get)" >&2
    # The packages' own services are not started here (no init system in
    # containers; the suite runs its own instances in the foreground).
    DEBIAN_FRONTEND=noninteractive apt-get install -y "${pkgs[@]}" >&2 || echo "# apt-get install failed; the missing peers are skipped" >&2
    NGINX=$(find_bin nginx); HAPROXY=$(find_bin haproxy)
  else
    echo "# nginx/haproxy missing and not root with apt-get: those pieces are skipped" >&2
  fi
fi

BIN=$(mktemp -d /tmp/switchyard-bench-bin.XXXXXX)
SUITE_PID=
# benchcompare stops its children (backends, control plane, proxy, nginx,
# haproxy) on SIGTERM/SIGINT; it also kills them if it dies.
cleanup() {
  if [ -n "$SUITE_PID" ] && kill -0 "$SUITE_PID" 2>/dev/null; then
    kill -TERM "$SUITE_PID" 2>/dev/null || true
    wait "$SUITE_PID" 2>/dev/null || true
  fi
  rm -rf "$BIN"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
cd "$ROOT"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p bench/results
OUT=${OUT:-bench/results/suite-$STAMP.md}
JSON=${JSON:-bench/results/suite-$STAMP.json}
go build -o "$BIN/switchyard" ./cmd/switchyard
go build -o "$BIN/benchcompare" ./bench/compare/cmd/benchcompare
args=(--switchyard "$BIN/switchyard" --rates "$RATES" --duration "$DURATION" --warmup "$WARMUP"
      --repeats "$REPEATS" --workers "$WORKERS" --peer-workers "$PEER_WORKERS" --ort-lib "$SWITCHYARD_ORT_LIB")
[ -n "$NGINX" ] && args+=(--nginx "$NGINX")
[ -n "$HAPROXY" ] && args+=(--haproxy "$HAPROXY")
[ -n "$PIECES" ] && args+=(--pieces "$PIECES")
args+=(--md "$OUT" --json "$JSON")
echo "# command: RATES=$RATES DURATION=$DURATION WARMUP=$WARMUP REPEATS=$REPEATS WORKERS=$WORKERS PEER_WORKERS=$PEER_WORKERS${PIECES:+ PIECES=$PIECES} bench/compare.sh" >&2
exec "$BIN/benchcompare" "${args[@]}" &  # exec: SUITE_PID is benchcompare itself
SUITE_PID=$!
rc=0; wait "$SUITE_PID" || rc=$?
SUITE_PID=
echo "# written: $OUT $JSON" >&2
exit "$rc"
