#!/usr/bin/env bash
# Runs the inference backend's Go benchmarks whose figures are in
# docs/benchmarks-backend.md (batch 1: in-process vs REST/gRPC; batching in
# one process). The batching comparison with separate processes and
# per-CPU-second figures is bench/backend/batching.sh.
# Usage: bench/backend/run.sh [extra go test flags]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export CGO_ENABLED=1
export SWITCHYARD_ORT_LIB="${SWITCHYARD_ORT_LIB:-$PWD/third_party/onnxruntime/libonnxruntime.so.1}"
echo "# $(date -u +%FT%TZ) $(nproc) CPUs, load average: $(cut -d' ' -f1-3 /proc/loadavg)"
go test -run '^$' -bench 'BenchmarkRecommender|BenchmarkBatching' -benchtime 3000x "$@" ./inference-backend/backend/
