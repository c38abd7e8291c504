# Switchyard — build, test and run.
SHELL := /bin/bash
GO ?= go
export CGO_ENABLED := 1
export SWITCHYARD_ORT_LIB ?= $(CURDIR)/third_party/onnxruntime/libonnxruntime.so.1

SETUP_STAMP := third_party/.setup-done
BIN := bin

.PHONY: setup build test test-short bench bench-compare up gen vet clean

# setup installs what a fresh machine lacks (idempotent; see scripts/setup.sh).
setup:
	@scripts/setup.sh

$(SETUP_STAMP):
	@scripts/setup.sh

build: $(SETUP_STAMP)
	$(GO) build -o $(BIN)/ ./cmd/...

vet:
	$(GO) vet ./...

# test runs the whole suite (race detector on), setting up first if needed.
test: $(SETUP_STAMP)
	$(GO) vet ./...
	$(GO) test -race -count=1 -p 1 -timeout 30m ./...

test-short: $(SETUP_STAMP)
	$(GO) test -short -count=1 ./...

# bench runs the Go benchmarks (figures go to docs/benchmarks.md by hand).
bench: $(SETUP_STAMP)
	$(GO) test -run '^$$' -bench . -benchmem -timeout 30m ./...

# bench-compare runs the side-by-side suite: direct, nginx, haproxy and the
# Switchyard proxy (plain, cache hit, shadow 100 %), batching on/off vs
# in-process ONNX Runtime (about 6 minutes; docs/benchmarks-suite.md).
bench-compare: $(SETUP_STAMP)
	bench/compare.sh

# up runs the whole stack locally on the embedded defaults.
up: build
	$(BIN)/switchyard up

# gen regenerates the committed gRPC code (needs protoc; see oip/README).
gen:
	$(GO) generate ./oip/...

clean:
	rm -rf $(BIN) .state
