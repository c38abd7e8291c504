#!/usr/bin/env bash
# traffic.sh: send requests from many users to a Switchyard proxy and count
# who answered — the product service's view, with curl only.
#
#   e2e/traffic.sh [-n N] [-u PREFIX] [-c PARALLEL] [-s SEED] [-d SECONDS] PROXY_URL
#
# Sends N requests (default 1000) to PROXY_URL/v2/models/recommender/infer,
# one per user PREFIX-0 .. PREFIX-(N-1) (header x-user-id), each with one
# [1,32] FP32 feature row uniform in [-1, 1) from SEED (so about one row in
# eight has features[0] < -0.75, where recommender-v3 answers NaN), PARALLEL
# at a time (default 8). With -d it repeats rounds for about SECONDS (new
# users each round) instead: background traffic for a canary.
#
# Prints one line per (HTTP status, x-switchyard-variant,
# x-switchyard-fallback, x-switchyard-fallback-reason) with its count.
# Exit status 1 when any request failed (status 000 = no answer, or >= 400).
# Traffic goes only to 127.0.0.1.
set -euo pipefail

n=1000 prefix=user parallel=8 seed=1 duration=0
while getopts "n:u:c:s:d:h" opt; do
  case $opt in
    n) n=$OPTARG ;;
    u) prefix=$OPTARG ;;
    c) parallel=$OPTARG ;;
    s) seed=$OPTARG ;;
    d) duration=$OPTARG ;;
    *) sed -n '2,17p' "$0" >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
if [[ $# -ne 1 ]]; then
  sed -n '2,17p' "$0" >&2
  exit 2
fi
proxy=${1%/}
case $proxy in
  http://127.0.0.1:*) ;;
  *) echo "traffic.sh: the proxy must be http://127.0.0.1:PORT, got $proxy" >&2; exit 2 ;;
esac
[[ $n =~ ^[0-9]+$ && $n -ge 1 && $n -le 100000 ]] || { echo "traffic.sh: -n wants 1..100000" >&2; exit 2; }
[[ $duration =~ ^[0-9]+$ && $duration -le 600 ]] || { echo "traffic.sh: -d wants 0..600 seconds" >&2; exit 2; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# round SEED PREFIX: one curl config with n requests, run in parallel.
round() {
  awk -v n="$n" -v seed="$1" -v prefix="$2" -v url="$proxy/v2/models/recommender/infer" 'BEGIN {
    srand(seed)
    for (i = 0; i < n; i++) {
      data = ""
      for (j = 0; j < 32; j++) data = data (j ? "," : "") sprintf("%.4f", 2 * rand() - 1)
      if (i) print "next"
      print "url = \"" url "\""
      print "header = \"content-type: application/json\""
      print "header = \"x-user-id: " prefix "-" i "\""
      print "data = \"{\\\"inputs\\\":[{\\\"name\\\":\\\"features\\\",\\\"datatype\\\":\\\"FP32\\\",\\\"shape\\\":[1,32],\\\"data\\\":[" data "]}]}\""
      print "output = \"/dev/null\""
      print "write-out = \"%{http_code} %header{x-switchyard-variant} %header{x-switchyard-fallback} %header{x-switchyard-fallback-reason}\\n\""
    }
  }' > "$tmp/config"
  curl -s --no-progress-meter --parallel --parallel-max "$parallel" --max-time 10 -K "$tmp/config" || true
}

if [[ $duration -gt 0 ]]; then
  end=$((SECONDS + duration))
  r=0
  while [[ $SECONDS -lt $end ]]; do
    round $((seed + r)) "$prefix-r$r"
    r=$((r + 1))
  done > "$tmp/answers"
else
  round "$seed" "$prefix" > "$tmp/answers"
fi

sort "$tmp/answers" | uniq -c | sort -rn | awk '{ printf "%7d  HTTP %s", $1, $2; if ($3 != "") printf "  variant %s", $3; if ($4 != "") printf "  fallback %s", $4; if ($5 != "") printf " (%s)", $5; print "" }'
! awk '$1 == "000" || $1 >= 400 { bad = 1 } END { exit !bad }' "$tmp/answers"
