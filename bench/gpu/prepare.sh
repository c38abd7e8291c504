#!/usr/bin/env bash
# Prepares, on this (CPU) machine, what bench/gpu/check.sh needs on a GPU
# machine that cannot fetch anything, in .gpu/ (git-ignored; carried by the
# device tool, 64 MiB at most):
#   ort.tar.xz      a CUDA 13 build of ONNX Runtime for linux-x64 from the npm
#                   registry (the Unity packages com.github.asus4.onnxruntime
#                   and ...linux-x64-gpu, which ship the official release's
#                   libonnxruntime.so and CUDA provider), with the provider's
#                   machine code for GPUs other than GPU_ARCH zero-filled so
#                   that it compresses below the carry limit (fatbin.py)
#   backend.test    the backend's test binary (TestCUDAExecutionProvider,
#                   BenchmarkExecutionProvider)
#   switchyard      the binary, for `switchyard backend --execution-provider cuda`
# The CUDA libraries themselves (cudart, cuBLAS, cuRAND 13) are the GPU
# machine's own (its Python nvidia-* packages).
#
#   bench/gpu/prepare.sh            # GPU_ARCH=90 (H100/H200)
set -euo pipefail
cd "$(dirname "$0")/../.."
PKG_VERSION=${PKG_VERSION:-0.4.9}
GPU_ARCH=${GPU_ARCH:-90}
G=.gpu
mkdir -p $G/dl $G/ort
if [ ! -f $G/ort.tar.xz ]; then
  (cd $G/dl && npm pack --silent com.github.asus4.onnxruntime@$PKG_VERSION com.github.asus4.onnxruntime.linux-x64-gpu@$PKG_VERSION >/dev/null)
  for f in $G/dl/*.tgz; do tar xzf "$f" -C $G/dl --wildcards 'package/Plugins/Linux/x64/*.so'; done
  X=$G/dl/package/Plugins/Linux/x64
  cp $X/libonnxruntime.so $X/libonnxruntime_providers_shared.so $G/ort/
  strings $X/libonnxruntime.so | grep -qx 'CUDAExecutionProvider' || { echo "libonnxruntime.so is not a CUDA build" >&2; exit 1; }
  readelf -d $X/libonnxruntime_providers_cuda.so | grep NEEDED
  python3 bench/gpu/fatbin.py $X/libonnxruntime_providers_cuda.so $G/ort/libonnxruntime_providers_cuda.so "$GPU_ARCH"
  tar cf - -C $G/ort . | xz -9 -T2 > $G/ort.tar.xz
  rm -rf $G/dl $G/ort
fi
go test -c -ldflags='-s -w' -o $G/backend.test ./inference-backend/backend
go build -ldflags='-s -w' -o $G/switchyard ./cmd/switchyard
xz -f -T2 $G/backend.test $G/switchyard
ls -la $G
du -sh $G
