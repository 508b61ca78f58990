# regate — make targets. `make demo` runs regate on its embedded default;
# `make test` installs what the tests need (when missing) and runs them all.
GO      ?= go
BIN     ?= bin/regate
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
export GOFLAGS ?= -mod=mod

.PHONY: build test test-deps demo bench bench-micro lint clean

build:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/regate

# Everything: unit tests, the Rego tests through OPA's Go tester (in
# ./policies), and the end-to-end tests against a real PostgreSQL with real
# psql and pgx clients (in ./test); then all of it again under the race
# detector, with the end-to-end tests' gateway built with -race too (it runs
# as a process of its own) and stopping at its first data race.
test: test-deps
	$(GO) test -count=1 -timeout 15m ./...
	$(GO) build -race -o bin/regate-race ./cmd/regate
	GORACE=halt_on_error=1 REGATE_BIN=$(CURDIR)/bin/regate-race $(GO) test -count=1 -race -timeout 15m ./...

# Installs the PostgreSQL server and client when the machine lacks them.
test-deps:
	@bash test/install-deps.sh

demo: build
	@bash test/demo.sh $(BIN) $(DEMO_FLAGS)

# pgbench -S (simple and extended, 1 and 8 clients): direct vs regate vs
# pgbouncer in one run, with ratios and added latency (test/bench/run.sh).
bench:
	@bash test/bench/run.sh

# Go micro-benchmarks of the data path (parse, decide, record).
bench-micro:
	$(GO) test -run '^$$' -bench . -benchmem ./parse/sql/ ./policies/ ./recorder/ ./proxy/...

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo 'gofmt: files above need formatting'; exit 1; }
	$(GO) vet ./...

clean:
	rm -rf bin
