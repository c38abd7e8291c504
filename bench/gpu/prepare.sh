#!/usr/bin/env bash
# Prepares, on this (CPU) machine, what bench/gpu/check.sh needs on a GPU
# machine that cannot fetch anything, in .gpu/ (git-ignored; carried by the
# device tool, 64 MiB at most):
#   ort.tar.xz      ONNX Runtime ORT_VERSION with its CUDA 13 execution
#                   provider, from the npm registry: the core library of
#                   onnxruntime-node (built with CUDA support; the package
#                   fetches its providers from NuGet at install time, which
#                   no machine here reaches) and the provider libraries of
#                   the Unity package com.github.asus4.onnxruntime.linux-x64-gpu
#                   (the official release's, CUDA 13), with the provider's
#                   machine code for GPUs other than GPU_ARCH zero-filled so
#                   that it compresses below the carry limit (fatbin.py).
#                   Core and provider must be the same ORT version.
#   backend.test    the backend's test binary (TestCUDAExecutionProvider,
#                   BenchmarkExecutionProvider)
#   switchyard      the binary, for `switchyard backend --execution-provider cuda`
# The CUDA libraries themselves (cudart, cuBLAS, cuRAND 13) are the GPU
# machine's own (its Python nvidia-* packages).
#
#   bench/gpu/prepare.sh            # GPU_ARCH=90 (H100/H200)
set -euo pipefail
cd "$(dirname "$0")/../.."
PKG_VERSION=${PKG_VERSION:-0.4.9}   # com.github.asus4.onnxruntime.linux-x64-gpu: ORT 1.29.0, CUDA 13
ORT_VERSION=${ORT_VERSION:-1.29.0}
GPU_ARCH=${GPU_ARCH:-90}
G=.gpu
mkdir -p $G/dl $G/ort
if [ ! -f $G/ort.tar.xz ]; then
  (cd $G/dl && npm pack --silent onnxruntime-node@$ORT_VERSION com.github.asus4.onnxruntime.linux-x64-gpu@$PKG_VERSION >/dev/null)
  tar xzf $G/dl/onnxruntime-node-$ORT_VERSION.tgz -C $G/dl package/bin/napi-v6/linux/x64/libonnxruntime.so.1
  tar xzf $G/dl/com.github.asus4.onnxruntime.linux-x64-gpu-$PKG_VERSION.tgz -C $G/dl --wildcards 'package/Plugins/Linux/x64/*.so'
  X=$G/dl/package/Plugins/Linux/x64
  cp $G/dl/package/bin/napi-v6/linux/x64/libonnxruntime.so.1 $G/ort/libonnxruntime.so
  cp $X/libonnxruntime_providers_shared.so $G/ort/
  grep -qx "$ORT_VERSION" <(strings $X/libonnxruntime_providers_cuda.so) || { echo "the CUDA provider is not ONNX Runtime $ORT_VERSION" >&2; exit 1; }
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
