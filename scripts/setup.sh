#!/usr/bin/env bash
# Installs what a fresh machine lacks for building, running and testing
# Switchyard. Idempotent: a second run checks and does nothing.
#
#   - Go modules (go mod download)
#   - ONNX Runtime 1.30.0 shared library for linux-x64, taken from the npm
#     package onnxruntime-node@1.30.0 (npm pack, no install scripts), verified
#     by SHA-256, into third_party/onnxruntime/ (git-ignored)
#   - Debian packages: libonnx-testdata (ONNX backend test models, for
#     conformance) and prometheus (the canary's PromQL source is tested
#     against a real server), nginx-light and haproxy (peers in the
#     benchmark suite, whose smoke test runs in make test)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ORT_VERSION=1.30.0
ORT_SHA256=ffb75a925ba05e47b235bb66e3e3911714a80b328a9c9425539feb204aa32a23
ORT_DIR="$ROOT/third_party/onnxruntime"
ORT_LIB="$ORT_DIR/libonnxruntime.so.1"

log() { printf 'setup: %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    log "need root to run: $*"; return 1; fi
}

apt_install() {
  # apt_install PACKAGE... : installs the Debian packages that are missing.
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing Debian packages: ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 || {
    as_root apt-get update -q >/dev/null
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
  }
}

# 1. Go modules.
command -v go >/dev/null || { log "go is not on PATH (need Go 1.26+)"; exit 1; }
(cd "$ROOT" && go mod download)

# 2. ONNX Runtime shared library.
if [ -f "$ORT_LIB" ] && echo "$ORT_SHA256  $ORT_LIB" | sha256sum -c --status; then
  :
else
  command -v npm >/dev/null || apt_install npm
  log "fetching onnxruntime-node@$ORT_VERSION (about 110 MB) for libonnxruntime.so.1"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --silent "onnxruntime-node@$ORT_VERSION" >/dev/null)
  tar -xzf "$tmp/onnxruntime-node-$ORT_VERSION.tgz" -C "$tmp" package/bin/napi-v6/linux/x64/libonnxruntime.so.1
  echo "$ORT_SHA256  $tmp/package/bin/napi-v6/linux/x64/libonnxruntime.so.1" | sha256sum -c --status || {
    log "checksum mismatch for libonnxruntime.so.1 from onnxruntime-node@$ORT_VERSION"; exit 1; }
  mkdir -p "$ORT_DIR"
  mv "$tmp/package/bin/napi-v6/linux/x64/libonnxruntime.so.1" "$ORT_LIB.tmp"
  mv "$ORT_LIB.tmp" "$ORT_LIB"
  echo "$ORT_VERSION" > "$ORT_DIR/VERSION"
  log "ONNX Runtime $ORT_VERSION at $ORT_LIB"
fi

# 3. Debian packages the tests use.
apt_install libonnx-testdata prometheus nginx-light haproxy

touch "$ROOT/third_party/.setup-done"
