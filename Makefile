# Tern: `make run` builds and starts the quick-start example; `make test` runs every test.
# Both install what the machine lacks (Debian packages via apt-get).
SWIFT ?= swift
# The L4 integration tests start real redis, PostgreSQL and mosquitto servers with their own clients;
# the interception tests build network namespaces and iptables rules (iproute2, iptables); the TLS
# tests make their certificates with the openssl command.
APT_PACKAGES = curl python3 libssl-dev pkg-config openssl \
	redis-server redis-tools postgresql postgresql-client mosquitto mosquitto-clients iptables iproute2
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: deps build release run test unit integration integration-release bench clean venv fuzz

deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; fi
	@command -v $(SWIFT) >/dev/null || { echo "swift toolchain not found (expected on PATH)"; exit 1; }

# Python test peers (anthunder, SOFA's bolt library) live in a venv of the project's own.
venv: .venv/.ready
.venv/.ready:
	python3 -m venv .venv || { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq python3-venv >/dev/null && python3 -m venv .venv; }
	.venv/bin/pip install -q anthunder==0.8.1
	touch .venv/.ready

build: deps
	$(SWIFT) build

release: deps
	$(SWIFT) build -c release

run: release
	@echo "Tern quick start: try  curl localhost:2045/  (Ctrl-C stops)"
	.build/release/tern start -c examples/quickstart/config.json

# Unit tests and integration tests (the latter start the real binary, built first). Every child a
# test starts (Tern, Python peers, the examples' helpers) is killed by its PID when the test
# process ends, by exit or by a signal (Tests/TernTestSupport): nothing is killed by name here.
test: build venv
	$(SWIFT) test

unit: build
	$(SWIFT) test --skip IntegrationTests

integration: build venv
	$(SWIFT) test --filter IntegrationTests

# The binary users run: `make test` also runs the integration suite against the release build.
test: integration-release
integration-release: release venv
	TERN_BIN=$(CURDIR)/.build/release/tern $(SWIFT) test --filter IntegrationTests

# Micro-benchmarks of the parser and router, then the side-by-side run against nginx and HAProxy.
bench: release
	$(SWIFT) build -c release --product tern-bench && .build/release/tern-bench
	../shared/bench/http.sh nginx haproxy tern
	../shared/bench/http.sh -b 16384 nginx haproxy tern
	../shared/bench/idle.sh nginx haproxy tern
	../shared/bench/bolt.sh direct haproxy-l4 tern tern-l4
	scripts/redis_bench.sh

# Fuzzing with libFuzzer and AddressSanitizer (Fuzz/README.md): every target with a seed folder
# Fuzz/corpus/<target> runs FUZZ_SECONDS. Inputs it finds go to .build-fuzz/corpus/<target>;
# an input that breaks a rule lands in Fuzz/crashes/<target>/ (commit it: `make test` replays it).
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= $(notdir $(wildcard Fuzz/corpus/*))
fuzz: deps
	TERN_FUZZ=1 $(SWIFT) build -c release --scratch-path .build-fuzz -Xswiftc -sanitize=fuzzer,address --product tern-fuzz
	@status=0; for t in $(FUZZ_TARGETS); do \
	  mkdir -p .build-fuzz/corpus/$$t .build-fuzz/logs Fuzz/crashes/$$t; \
	  echo "fuzz $$t: $(FUZZ_SECONDS) s, log in .build-fuzz/logs/$$t.log"; \
	  SWIFT_BACKTRACE=enable=no TERN_FUZZ_TARGET=$$t .build-fuzz/release/tern-fuzz -max_total_time=$(FUZZ_SECONDS) \
	    -timeout=10 -print_final_stats=1 -artifact_prefix=Fuzz/crashes/$$t/ .build-fuzz/corpus/$$t Fuzz/corpus/$$t \
	    >.build-fuzz/logs/$$t.log 2>&1 || { status=1; grep -E 'fuzz check failed|ERROR|Fatal|SUMMARY|Test unit written' .build-fuzz/logs/$$t.log; }; \
	  grep -E '^#[0-9]+ +DONE|stat::(number_of_executed_units|average_exec_per_sec)' .build-fuzz/logs/$$t.log; \
	done; exit $$status

clean:
	rm -rf .build .build-fuzz
