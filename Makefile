# Quarry: one binary, `quarry`. See README.md.
GO      ?= go
BIN     ?= bin/quarry
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/quarry-project/quarry/internal/cli.Version=$(VERSION)
# An execution count, not a duration: with -fuzztime as a duration, Go 1.26's
# fuzz coordinator can report "context deadline exceeded" at the deadline on a
# loaded machine without any failing input (golang/go#75804, fixed in 1.27).
FUZZTIME ?= 50000x

.PHONY: all build run test check fuzz web web-test bench-discovery bench-download bench-upload bench-copy bench-scale generate tools lint clean

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/quarry

# Everything on this machine: control plane, an agent, a local pool.
# More server flags go in ARGS: make run ARGS='--allow-loopback-urls'.
ARGS ?=
run:
	$(GO) run -ldflags "$(LDFLAGS)" ./cmd/quarry server --dev $(ARGS)

# Every test: formatting and vet, all unit and end-to-end tests with the race
# detector, each fuzz target briefly, then the dashboard (type check, unit
# tests, browser tests in Chromium) and a check that the committed bundle
# is the one its sources build.
test: check
	$(GO) test -race -count=1 -timeout 20m ./...
	$(MAKE) fuzz
	$(MAKE) web-test
	@git diff --quiet -- web/dist && test -z "$$(git status --porcelain -- web/dist)" || \
	  { echo "web/dist is stale: run make web and commit it"; exit 1; }

# The dashboard bundle (web/dist, committed and embedded), from the lockfile.
web:
	cd web && npm ci --no-audit --no-fund && npm run build

# The dashboard's tests: installs what is missing (npm packages from the
# lockfile, Chromium with apt), builds, type checks, runs vitest, then
# Playwright in Chromium against a freshly built quarry server --dev.
web-test:
	web/scripts/test.sh

check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzNormalize$$' -fuzztime $(FUZZTIME) ./internal/nodeaddr
	$(GO) test -run '^$$' -fuzz '^FuzzCheck$$' -fuzztime $(FUZZTIME) ./internal/names
	$(GO) test -run '^$$' -fuzz '^FuzzRead$$' -fuzztime $(FUZZTIME) ./internal/isofs
	$(GO) test -run '^$$' -fuzz '^FuzzSniff$$' -fuzztime $(FUZZTIME) ./internal/ingest
	$(GO) test -run '^$$' -fuzz '^FuzzCheckURL$$' -fuzztime $(FUZZTIME) ./internal/urlpolicy
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./internal/auth
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./internal/checksum

# ISO discovery figures: latency p50/p95, full rescan vs find | xargs stat.
bench-discovery:
	QUARRY_BENCH=1 $(GO) test -count=1 -run '^TestBenchmarkDiscovery$$' -v -timeout 30m ./internal/e2e

# Download figures: a 2 GiB verified download vs curl -o and curl + sha256sum;
# then 1 GiB from an origin throttling each connection to 40 MiB/s, over 4
# connections, vs one-stream curl -o and aria2c -x4 (installed with apt-get
# when missing and root).
bench-download:
	QUARRY_BENCH=1 $(GO) test -count=1 -run '^TestBenchmark(Segmented)?Download$$' -v -timeout 20m ./internal/e2e

# Upload figures: 2 GiB from the CLI vs curl -T to a file sink with fsync,
# peak RSS, bytes sent twice after an interrupt.
bench-upload:
	QUARRY_BENCH=1 $(GO) test -count=1 -run '^TestBenchmarkUpload$$' -v -timeout 20m ./internal/e2e

# Cluster-scale figures: one quarry server process (SQLite, then PostgreSQL)
# against 5,000 simulated agents (cmd/quarry-simscale, not shipped) with
# 1,000 pools and 100,000 ISOs. More flags in SCALE_ARGS, e.g.
# make bench-scale SCALE_ARGS='--stores sqlite --nodes 1000', or
# SCALE_ARGS='--clients-process=false --agents-nice 0' for the list clients
# in the simulator's process, at the agents' priority (as before 1 December 2026).
SCALE_ARGS ?=
bench-scale: build
	$(GO) build -o bin/quarry-simscale ./cmd/quarry-simscale
	bin/quarry-simscale --quarry $(BIN) $(SCALE_ARGS)

# Regenerate Go code from proto/ with local plugins only (`make tools` once).
generate:
	buf lint
	buf generate
	cd web && buf generate

tools:
	$(GO) install github.com/bufbuild/buf/cmd/buf@v1.75.0
	$(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
	$(GO) install connectrpc.com/connect/cmd/protoc-gen-connect-go@v1.21.1

lint:
	buf lint

clean:
	rm -rf bin

# Copy figures: a 512 MiB local copy vs cp + sha256sum, and agent to agent
# over mutual TLS vs curl -o + sha256sum from a local origin.
bench-copy:
	QUARRY_BENCH=1 $(GO) test -count=1 -run '^TestBenchmarkCopy$$' -v -timeout 10m ./internal/e2e
