#!/usr/bin/env bash
# Before/after comparison of the proxy in one sitting: bench/proxy/run.sh of
# two commits (BASE, default HEAD~; HEAD: the working tree), ROUNDS rounds
# each (default 5), interleaved (base, head, base, head, ...), then the
# medians of switchyard's figures per mode (fixed rate: added p50 and p99 vs
# direct, proxy CPU per request; closed loop: requests per proxy
# CPU-second, and the same ratio vs nginx).
#
#   BASE=cbf7b25 ROUNDS=5 DURATION=5s MAXDUR=5s bench/proxy/ab.sh
#   MODE=cache BASE=... bench/proxy/ab.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BASE=${BASE:-HEAD~}
ROUNDS=${ROUNDS:-5}
OUT=$(mktemp -d /tmp/switchyard-ab.XXXXXX)
WT="$OUT/base"
git -C "$ROOT" worktree add -q --detach "$WT" "$BASE"
trap 'git -C "$ROOT" worktree remove --force "$WT" >/dev/null 2>&1 || true' EXIT
mkdir -p "$WT/third_party"
ln -s "$ROOT/third_party/onnxruntime" "$WT/third_party/onnxruntime"
cp "$ROOT/bench/proxy/run.sh" "$ROOT/bench/proxy/stack.sh" "$WT/bench/proxy/" # the same harness for both
for i in $(seq "$ROUNDS"); do
  for side in base head; do
    dir=$ROOT; [ "$side" = base ] && dir=$WT
    echo "# round $i: $side" >&2
    (cd "$dir" && bench/proxy/run.sh) >"$OUT/$side-$i.txt" 2>"$OUT/$side-$i.err"
  done
done
python3 - "$OUT" "$ROUNDS" <<'PY'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
def rows(side, i):
    rs = []
    for l in open(f"{out}/{side}-{i}.txt"):
        l = l.strip()
        if l.startswith("{"):
            rs.append(json.loads(l))
    return rs
def figures(side, i):
    rs = rows(side, i)
    g = lambda t, m: next(r for r in rs if r["target"] == t and r["mode"].startswith(m))
    f = {}
    for m in ("fixed", "closed"):
        d, n, s = g("direct", m), g("nginx", m), g("switchyard", m)
        f[m] = {"added p50 ms": s["p50_ms"] - d["p50_ms"], "added p99 ms": s["p99_ms"] - d["p99_ms"],
                "proxy CPU us/req": 1e6 / s["requests_per_cpu_second"], "req/CPU-s": s["requests_per_cpu_second"],
                "vs nginx per CPU-s": s["requests_per_cpu_second"] / n["requests_per_cpu_second"], "errors": s["errors"]}
    return f
data = {side: [figures(side, i) for i in range(1, rounds + 1)] for side in ("base", "head")}
print(f"| mode | figure | base (median of {rounds}) | head (median of {rounds}) | head vs base |")
print("|---|---|---|---|---|")
for m in ("fixed", "closed"):
    for k in data["base"][0][m]:
        b = statistics.median(r[m][k] for r in data["base"])
        h = statistics.median(r[m][k] for r in data["head"])
        rel = f"{100 * (h / b - 1):+.1f} %" if b else "–"
        print(f"| {m} | {k} | {b:.3f} | {h:.3f} | {rel} |")
print(f"\nraw outputs: {out}")
PY
