#!/usr/bin/env bash
# Runs the inference backend benchmarks whose figures are in
# docs/benchmarks-backend.md. Usage: bench/backend/run.sh [extra go test flags]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export CGO_ENABLED=1
export SWITCHYARD_ORT_LIB="${SWITCHYARD_ORT_LIB:-$PWD/third_party/onnxruntime/libonnxruntime.so.1}"
echo "# $(date -u +%FT%TZ) $(nproc) CPUs, load average: $(cut -d' ' -f1-3 /proc/loadavg)"
go test -run '^$' -bench 'BenchmarkRecommender|BenchmarkBatching' -benchtime 3000x "$@" ./inference-backend/backend/
