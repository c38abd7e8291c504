#!/usr/bin/env bash
# The CUDA execution provider check, run on a GPU machine (the device tool)
# after bench/gpu/prepare.sh filled .gpu/ here:
#
#   device run: command "bash bench/gpu/check.sh", carry [".gpu"], timeout_s 360
#
# 1. TestCUDAExecutionProvider: every demo model version on CUDA, answers
#    over gRPC and REST equal to the reference MLPs, dynamic batching on
#    the GPU;
# 2. BenchmarkExecutionProvider: the ranker model on CPU and CUDA at batch
#    1, 32, 256; BenchmarkBatchingCUDA: the ranker on the GPU over gRPC to
#    32 and 128 clients, dynamic batching off and on, and in-process CUDA
#    at the batch sizes formed;
# 3. the binary: `switchyard backend --execution-provider cuda` serving the
#    demo models, one REST inference, its provider metric, nvidia-smi.
# Logs go to $OUT (the device tool brings them back).
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
OUT=${OUT:-/tmp/gpu-out}
W=/tmp/sygpu
mkdir -p "$OUT" $W/ort
unxz() { xz -dc "$1" 2>/dev/null || python3 -c 'import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), sys.stdout.buffer)' "$1"; }
unxz .gpu/ort.tar.xz | tar xf - -C $W/ort
unxz .gpu/backend.test.xz > $W/backend.test
unxz .gpu/switchyard.xz > $W/switchyard
chmod +x $W/backend.test $W/switchyard

echo "== GPU"
nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv | tee "$OUT/gpu.txt"

# CUDA 13 runtime, cuBLAS and cuRAND from the machine's Python nvidia-* packages.
NV=$(python3 -c 'import nvidia; print(" ".join(nvidia.__path__))' 2>/dev/null)
LIBDIRS=$(find $NV /usr/local/cuda/lib64 -name 'lib*.so*' -printf '%h\n' 2>/dev/null | sort -u | paste -sd:)
export LD_LIBRARY_PATH=$LIBDIRS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export SWITCHYARD_ORT_LIB=$W/ort/libonnxruntime.so SWITCHYARD_TEST_CUDA=1
echo "== provider libraries"
ldd $W/ort/libonnxruntime_providers_cuda.so | grep -E 'not found|cudart|cublas|curand' | tee "$OUT/ldd.txt"

echo "== test"
(cd inference-backend/backend && timeout 180 $W/backend.test -test.run 'CUDA' -test.v -test.count=1) 2>&1 | tee "$OUT/test.txt"
echo "== benchmark"
(cd inference-backend/backend && timeout 150 $W/backend.test -test.run '^$' -test.bench ExecutionProvider -test.benchtime 2s) 2>&1 | tee "$OUT/bench.txt"
(cd inference-backend/backend && timeout 150 $W/backend.test -test.run '^$' -test.bench BatchingCUDA -test.benchtime 20000x) 2>&1 | tee "$OUT/batching.txt"

echo "== switchyard backend --execution-provider cuda"
$W/switchyard demo-models --out $W/repo
$W/switchyard backend --model-repository $W/repo --execution-provider cuda \
  --http 127.0.0.1:18001 --grpc 127.0.0.1:19001 2>"$OUT/backend.log" &
BPID=$!
python3 - <<'PY' 2>&1 | tee "$OUT/binary.txt"
import json, time, urllib.request
base = "http://127.0.0.1:18001"
for _ in range(240):
    try:
        if urllib.request.urlopen(base + "/v2/health/ready", timeout=1).status == 200:
            break
    except Exception:
        time.sleep(0.25)
else:
    raise SystemExit("backend not ready in 60 s")
row = [((i * 37) % 64) / 32.0 - 1.0 for i in range(32)]
body = json.dumps({"inputs": [{"name": "features", "shape": [1, 32], "datatype": "FP32", "data": row}]}).encode()
t0 = time.perf_counter()
resp = json.load(urllib.request.urlopen(urllib.request.Request(base + "/v2/models/recommender-v1/infer", body, {"Content-Type": "application/json"})))
print("infer:", resp["model_name"], resp["model_version"], resp["outputs"][0]["shape"], "first scores", [round(x, 4) for x in resp["outputs"][0]["data"][:5]], "in %.1f ms" % ((time.perf_counter() - t0) * 1e3))
metrics = urllib.request.urlopen(base + "/metrics").read().decode()
print("\n".join(l for l in metrics.splitlines() if l.startswith("switchyard_backend_model_execution_provider")))
PY
nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv | tee -a "$OUT/binary.txt"
kill $BPID; wait $BPID
grep -E 'provider|CUDA|error' "$OUT/backend.log" | head -20
