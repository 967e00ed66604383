# Everything needs only Go; tools the targets use are installed into ./bin.
GO        ?= go
FUZZTIME  ?= 60s
# make test fuzzes each target for a number of executions (about 5 s each
# here), not a duration: with a -fuzztime duration, go1.26's fuzz coordinator
# can fail a healthy target with a bare "context deadline exceeded" when the
# time runs out mid-execution (golang/go#75804, fixed in go1.27). A count has
# no deadline to race. SHORTFUZZ=10s (or =50000x) overrides every target.
SHORTFUZZ ?=
FUZZN_FuzzSessions   ?= 70000x
FUZZN_FuzzDecode     ?= 200000x
FUZZN_FuzzParseReply ?= 500000x
FUZZN_DEFAULT        ?= 100000x
BIN       := $(CURDIR)/bin
PKGS      := ./...

# Every fuzz target as package:Target pairs, found from the sources.
FUZZ_TARGETS = $(shell grep -rl --include='*_test.go' '^func Fuzz' . | while read f; do \
	d=$$(dirname $$f); for t in $$(grep -o '^func Fuzz[A-Za-z0-9_]*' $$f | cut -d' ' -f2); do echo "$$d:$$t"; done; done)

.PHONY: all build test test-unit fuzz-short fuzz lint bench bench-smoke run clean tools

all: build test

build:
	$(GO) build ./...

## test: the full suite: race detector, shuffled order, plus a short run of every fuzz target.
test: test-unit fuzz-short

test-unit:
	$(GO) test -race -shuffle=on -timeout 15m $(PKGS)
	cd third_party/gnet && $(GO) test -race -shuffle=on -timeout 5m . ./pkg/buffer/elastic

fuzz-short:
	@for ft in $(FUZZ_TARGETS); do \
		pkg=$${ft%%:*}; target=$${ft##*:}; \
		budget="$(SHORTFUZZ)"; \
		if [ -z "$$budget" ]; then case $$target in \
			FuzzSessions) budget=$(FUZZN_FuzzSessions);; \
			FuzzDecode) budget=$(FUZZN_FuzzDecode);; \
			FuzzParseReply) budget=$(FUZZN_FuzzParseReply);; \
			*) budget=$(FUZZN_DEFAULT);; \
		esac; fi; \
		echo "fuzz $$pkg $$target ($$budget)"; \
		$(GO) test -run='^$$' -fuzz="^$$target\$$" -fuzztime=$$budget $$pkg || exit 1; \
	done

## fuzz: every fuzz target for FUZZTIME each (default 60s). A duration can
## end in a spurious "context deadline exceeded" on go1.26 (see SHORTFUZZ
## above); a real finding always says "Failing input written to ...".
fuzz:
	@$(MAKE) --no-print-directory fuzz-short SHORTFUZZ=$(FUZZTIME)

## lint: gofmt, go vet (also for macOS and FreeBSD), and golangci-lint when
## it can be installed.
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	GOOS=darwin $(GO) vet $(PKGS)
	GOOS=freebsd $(GO) vet $(PKGS)
	@if GOBIN=$(BIN) $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@v2.6.2 2>/dev/null; then \
		$(BIN)/golangci-lint run $(PKGS); \
	else echo "golangci-lint could not be installed; skipped"; fi

## bench: every Go benchmark with allocation counts.
bench:
	$(GO) test -run='^$$' -bench=. -benchmem $(PKGS)

## bench-smoke: every benchmark briefly, so they keep compiling and running.
bench-smoke:
	$(GO) test -run='^$$' -bench=. -benchmem -benchtime=100ms $(PKGS)

run:
	$(GO) run ./cmd/dflockd

clean:
	rm -rf $(BIN)

## bench-compare: A/B of dflockd against the ceiling server (a no-logic
## responder) for every loadtest scenario, then one table of ratios; a few
## minutes. Knobs: BENCH_RUNS, BENCH_DURATION, BENCH_CONNS, BENCH_WAITERS,
## BENCH_B_BIN (see loadtest/bench-compare.sh).
.PHONY: bench-compare
bench-compare:
	GO=$(GO) bash loadtest/bench-compare.sh

## metrics-cost: A/B of request metrics on (and scraped every second) vs
## off, with dflockd-loadtest ab; about a minute. Knobs: RUNS, DURATION,
## WORKERS, SCENARIO, SWAP=1 (see loadtest/metrics-cost.sh).
.PHONY: metrics-cost
metrics-cost:
	GO=$(GO) bash loadtest/metrics-cost.sh

## chaos: the reliability suite at length (loadtest/chaos): CHAOS_OPS
## (default 1,000,000) chaos requests against the in-process server,
## checked for mutual exclusion, semaphore limits, FIFO, exactly-once
## replies and leaks, plus CHAOS_HISTORIES (default 3000) porcupine
## linearizability histories. Knobs: CHAOS_SEED, CHAOS_CLIENTS. A short
## version of both runs inside make test.
CHAOS_OPS       ?= 1000000
CHAOS_HISTORIES ?= 3000
CHAOS_SEED      ?= 0
CHAOS_CLIENTS   ?= 64
.PHONY: chaos soak
chaos:
	$(GO) test -count=1 -v -timeout 2h -run '^(TestChaos|TestLinearizability)$$' ./loadtest/chaos \
		-chaos.ops=$(CHAOS_OPS) -chaos.histories=$(CHAOS_HISTORIES) -chaos.seed=$(CHAOS_SEED) -chaos.clients=$(CHAOS_CLIENTS)

## soak: the chaos workload against a server subprocess for DURATION
## (default 10m) while 10,000 idle connections stay open; prints ops,
## violations, server RSS, threads, goroutines and fds each minute and a
## verdict (0 violations, flat memory). Knob: SOAK_IDLE.
SOAK_IDLE ?= 10000
soak:
	$(GO) test -count=1 -v -timeout 0 -run '^TestSoak$$' ./loadtest/chaos \
		-soak.duration=$(or $(DURATION),10m) -soak.idle=$(SOAK_IDLE) -chaos.seed=$(CHAOS_SEED)
